"""The registry of family specs. Adding a family = one module here + one runtime pipeline."""

from __future__ import annotations

from pathlib import Path

from mmedge.errors import UnknownFamilyError
from mmedge.exporter.families.audio_classification import AudioClassificationSpec
from mmedge.exporter.families.base import FamilySpec
from mmedge.exporter.families.blip_vqa import BlipVqaSpec
from mmedge.exporter.families.captioning import BlipCaptioningSpec, VisionEncoderDecoderSpec
from mmedge.exporter.families.causal_lm import CausalLmSpec
from mmedge.exporter.families.clip import ClipSpec
from mmedge.exporter.families.face_expression import FaceExpressionSpec
from mmedge.exporter.families.image_classification import ImageClassificationSpec
from mmedge.exporter.families.llava import LlavaSpec
from mmedge.exporter.families.seq2seq import Seq2SeqSpec
from mmedge.exporter.families.stable_diffusion import StableDiffusionSpec
from mmedge.exporter.families.super_resolution import SuperResolutionSpec
from mmedge.exporter.families.speecht5 import SpeechT5Spec
from mmedge.exporter.families.vits import VitsSpec
from mmedge.exporter.families.wav2vec2_ctc import Wav2Vec2CtcSpec
from mmedge.exporter.families.whisper import WhisperSpec

FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (ClipSpec(), CausalLmSpec(), WhisperSpec(),
                                                                  Wav2Vec2CtcSpec(), LlavaSpec(),
                                                                  VisionEncoderDecoderSpec(), BlipCaptioningSpec(),
                                                                  BlipVqaSpec(), Seq2SeqSpec(),
                                                                  FaceExpressionSpec(), AudioClassificationSpec(),
                                                                  StableDiffusionSpec(), VitsSpec(), SpeechT5Spec(),
                                                                  ImageClassificationSpec(), SuperResolutionSpec())}
#: ``mmedge tiny-model NAME``: a family name, or a named tiny variant of a family.
TINY_MODELS: dict[str, tuple[str, str | None]] = {"clip": ("clip", None), "gpt2": ("causal-lm", "gpt2"),
                                                  "llama": ("causal-lm", "llama"), "wav2vec2": ("wav2vec2-ctc", None),
                                                  "llava": ("llava", None), "vit-gpt2": ("vision-encoder-decoder", None),
                                                  "blip": ("blip-captioning", None), "t5": ("seq2seq", "t5"),
                                                  "marian": ("seq2seq", "marian"), "blip-vqa": ("blip-vqa", None),
                                                  "speech-emotion": ("audio-classification", None),
                                                  "stable-diffusion": ("text-to-image", None),
                                                  "vit": ("image-classification", None),
                                                  "swin2sr": ("super-resolution", None),
                                                  "vits": ("vits-tts", None), "speecht5": ("speecht5-tts", None)}


def write_tiny_model(name: str, out_dir: Path) -> Path:
    """Write the tiny random-weight model ``name`` (see ``TINY_MODELS``) into ``out_dir``."""
    if name not in TINY_MODELS:
        raise UnknownFamilyError(f"no tiny model '{name}'; choose one of: {', '.join(TINY_MODELS)}")
    family, variant = TINY_MODELS[name]
    spec = FAMILIES[family]
    return spec.write_tiny(out_dir) if variant is None else spec.write_tiny(out_dir, variant)


def get_family(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise UnknownFamilyError(f"unknown family '{name}'; known families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def detect_family(config: dict) -> FamilySpec:
    """The spec whose model types include the config's ``model_type``."""
    for spec in FAMILIES.values():
        if spec.matches(config):
            return spec
    raise UnknownFamilyError(f"cannot tell the family of model_type '{config.get('model_type')}'; pass --family "
                             f"(one of: {', '.join(sorted(FAMILIES))}) or use a supported model")
