"""wav2vec2-style CTC speech recognition (wav2vec2, HuBERT, WavLM loaded with ``AutoModelForCTC``).

One component, ``encoder``: raw normalised audio ``input_values`` [batch, samples] → CTC ``logits``
[batch, frames, vocab]. ``frames`` is an *output* dimension the conv feature encoder derives from ``samples``
(320 samples per frame, 400-sample receptive field for the standard 7-layer encoder); the runtime computes it
itself from the kernel/stride list recorded in the manifest (``preprocessing.frames``), checked here against
transformers' ``_get_feat_extract_output_lengths``.

No attention mask input: the feature extractors of group-norm models (wav2vec2-base) set
``return_attention_mask=False`` and HF runs them on single, unpadded utterances; the runtime does the same
(dynamic variant) or runs fixed windows that are padded exactly as ``processor(window, padding="max_length")``
pads them (static variant; see ``mmedge.runtime.pipelines.ctc_asr``).

Static variant: batch 1 and a fixed window (``DEFAULT_WINDOW_S``, or ``mmedge_static_window_s`` from the
model's ``config.json``, which the tiny test model uses to get a short window); the window is stated in the
signature shape and in ``preprocessing.audio.static_window_samples``.

Everything the runtime needs to reproduce ``Wav2Vec2FeatureExtractor`` and ``Wav2Vec2CTCTokenizer.decode``
(normalisation switches and epsilon, padding value, the id → token table, blank, word delimiter, special tokens,
lower-casing, clean-up) goes into the manifest, so the device never needs transformers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from mmedge.errors import ExportError
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl
from mmedge.runtime.preprocess.ctc import frames_for

#: Static window of real models: 10 s at 16 kHz. wav2vec2 attention is quadratic in frames; 10 s (499 frames)
#: keeps a window's attention small on edge CPUs/NPUs while leaving most words whole.
DEFAULT_WINDOW_S = 10.0
#: ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`` adds this to the variance (hard-coded in transformers).
NORMALIZE_EPSILON = 1e-7
#: Dynamic graphs are checked at 1 s × batch 1 (export shape) and 2.3 s × batch 2 (a length that is not a
#: multiple of the 320-sample hop): a dimension the exporter specialised fails the second check.
EXPORT_SECONDS, SECOND_SECONDS = 1.0, 2.3


class CtcEncoder(torch.nn.Module):
    """``input_values`` → ``logits``; a named-parameter forward returning a dict, as the converters need."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model(input_values=input_values).logits}


def length_layers(config: Any) -> list[list[int]]:
    """[kernel, stride] of every layer that shortens the time axis: the conv feature encoder, then the optional
    adapter (wav2vec2 ``add_adapter``: kernel 1 after padding, i.e. ``(L - 1) // stride + 1``)."""
    layers = [[int(k), int(s)] for k, s in zip(config.conv_kernel, config.conv_stride)]
    if getattr(config, "add_adapter", False):
        layers += [[1, int(config.adapter_stride)]] * int(config.num_adapter_layers)
    return layers


def window_samples(config: Any, sampling_rate: int, override_s: float | None = None) -> int:
    """The static window in samples: ``override_s``, else the model's ``mmedge_static_window_s``, else 10 s."""
    seconds = override_s or getattr(config, "mmedge_static_window_s", None) or DEFAULT_WINDOW_S
    return int(round(float(seconds) * sampling_rate))


def _audio_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    """Normalised-audio-like input: unit-variance noise (what the feature extractor's output looks like)."""
    g = torch.Generator().manual_seed(seed)
    return {"input_values": torch.randn(sizes["batch"], sizes["samples"], generator=g)}


def _ctc_vocabulary(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """The decode table and switches of a ``Wav2Vec2CTCTokenizer``, as JSON."""
    if getattr(tokenizer, "target_lang", None) is not None and not isinstance(tokenizer.encoder, dict):
        raise ExportError("the CTC tokenizer's target_lang vocabulary is not a dict; re-save the tokenizer")
    return {
        # convert_ids_to_tokens covers added tokens and maps ids past the vocabulary to unk, as decode does.
        "id_to_token": [tokenizer.convert_ids_to_tokens(i) for i in range(vocab_size)],
        "blank_id": int(tokenizer.pad_token_id),
        "pad_token": tokenizer.pad_token,
        "word_delimiter_token": tokenizer.word_delimiter_token,
        "replace_word_delimiter_char": tokenizer.replace_word_delimiter_char,
        "special_tokens": list(tokenizer.all_special_tokens),
        "special_ids": [int(i) for i in tokenizer.all_special_ids],
        "do_lower_case": bool(tokenizer.do_lower_case),
        "clean_up_tokenization_spaces": bool(tokenizer.clean_up_tokenization_spaces),
    }


def _audio_config(feature_extractor: Any, window: int) -> dict[str, Any]:
    if getattr(feature_extractor, "feature_size", 1) != 1 or not hasattr(feature_extractor, "do_normalize"):
        raise ExportError(f"{type(feature_extractor).__name__} is not a raw-waveform feature extractor "
                          "(Wav2Vec2FeatureExtractor); this family exports models that take input_values")
    if getattr(feature_extractor, "padding_side", "right") != "right":
        raise ExportError("the feature extractor pads on the left; only right padding is supported")
    return {
        "sampling_rate": int(feature_extractor.sampling_rate),
        "do_normalize": bool(feature_extractor.do_normalize),
        "normalize_epsilon": NORMALIZE_EPSILON,
        "padding_value": float(feature_extractor.padding_value),
        "return_attention_mask": bool(feature_extractor.return_attention_mask),
        "static_window_samples": window,
    }


class Wav2Vec2CtcSpec(FamilySpec):
    """wav2vec2 / HuBERT / WavLM with a CTC head. ``window_s`` overrides the static window (seconds)."""

    name = "wav2vec2-ctc"
    task = "automatic-speech-recognition"
    model_types = ("wav2vec2", "hubert", "wavlm")

    def __init__(self, window_s: float | None = None):
        self.window_s = window_s

    def matches(self, config: dict) -> bool:
        """A CTC checkpoint of a supported type (a pre-training checkpoint has no trained CTC head)."""
        archs = config.get("architectures") or []
        return super().matches(config) and (not archs or any(a.endswith("ForCTC") for a in archs))

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

        try:
            model, info = AutoModelForCTC.from_pretrained(model_dir, output_loading_info=True)
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            feature_extractor = AutoFeatureExtractor.from_pretrained(model_dir)
        except (OSError, ValueError, KeyError) as e:
            raise ExportError(f"cannot load a CTC model, tokenizer and feature extractor from {model_dir}: "
                              f"{str(e).splitlines()[0][:300]}") from None
        if any(k.startswith("lm_head") for k in info.get("missing_keys", [])):
            raise ExportError(f"{model_dir} has no trained CTC head (lm_head weights missing): export a checkpoint "
                              "fine-tuned for CTC, e.g. facebook/wav2vec2-base-960h")
        if not hasattr(tokenizer, "word_delimiter_token") or not hasattr(tokenizer, "replace_word_delimiter_char"):
            raise ExportError(f"{type(tokenizer).__name__} is not a character CTC tokenizer (Wav2Vec2CTCTokenizer); "
                              "phoneme and other tokenizers are not supported by this family")
        model = model.eval()
        config = model.config
        layers = length_layers(config)
        for n in (399, 400, 401, 16000, 36800, 160000):  # our frame arithmetic must be transformers'
            expected = max(int(model._get_feat_extract_output_lengths(torch.tensor(n))), 0)
            if frames_for(n, layers) != expected:
                raise ExportError(f"frame count mismatch for {n} samples ({frames_for(n, layers)} vs {expected}); "
                                  "this model's feature encoder is not supported")
        rate = int(feature_extractor.sampling_rate)
        window = window_samples(config, rate, self.window_s)
        vocab = int(config.vocab_size)
        sizes = {"batch": 1, "samples": int(EXPORT_SECONDS * rate)}
        second = {"batch": 2, "samples": int(SECOND_SECONDS * rate)}
        encoder = ComponentSpec(
            name="encoder", description=f"{type(model).__name__}: input_values -> CTC logits",
            module=CtcEncoder(model).eval(),
            inputs=(TensorDecl("input_values", "float32", ("batch", "samples")),),
            outputs=(TensorDecl("logits", "float32", ("batch", "frames", vocab)),),
            sample=_audio_sample,
            export_sizes={**sizes, "frames": frames_for(sizes["samples"], layers)},
            second_sizes={**second, "frames": frames_for(second["samples"], layers)},
            # "frames" is stated so the converters can write the fixed output shape into the manifest.
            static_signatures={"default": {"batch": 1, "samples": window, "frames": frames_for(window, layers)}})
        ratio = math.prod(s for _, s in layers)
        return LoadedFamily(
            family=self.name, task=self.task, components=[encoder],
            preprocessing={"audio": _audio_config(feature_extractor, window),
                           "frames": {"layers": layers, "inputs_to_logits_ratio": ratio},
                           "ctc": _ctc_vocabulary(tokenizer, vocab)},
            postprocessing={"decoding": "ctc-greedy"})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.wav2vec2_tiny import write_tiny_wav2vec2

        return write_tiny_wav2vec2(out_dir)
