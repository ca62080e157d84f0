"""One pipeline per task family, looked up by the manifest's ``family`` and imported lazily."""

from __future__ import annotations

import importlib

from mmedge.errors import UnknownFamilyError

PIPELINES = {"clip": "mmedge.runtime.pipelines.clip:ClipPipeline",
             "causal-lm": "mmedge.runtime.pipelines.text_generation:TextGenerationPipeline",
             "whisper": "mmedge.runtime.pipelines.whisper:WhisperPipeline",
             "wav2vec2-ctc": "mmedge.runtime.pipelines.ctc_asr:CtcAsrPipeline",
             "llava": "mmedge.runtime.pipelines.vlm:VlmPipeline",
             "vision-encoder-decoder": "mmedge.runtime.pipelines.captioning:CaptioningPipeline",
             "blip-captioning": "mmedge.runtime.pipelines.captioning:CaptioningPipeline",
             "blip-vqa": "mmedge.runtime.pipelines.vqa:VqaPipeline",
             "seq2seq": "mmedge.runtime.pipelines.seq2seq:Seq2SeqPipeline",
             "piper-tts": "mmedge.runtime.pipelines.piper_tts:PiperTtsPipeline",
             "vits-tts": "mmedge.runtime.pipelines.vits_tts:VitsTtsPipeline",
             "speecht5-tts": "mmedge.runtime.pipelines.speecht5_tts:SpeechT5TtsPipeline",
             "face-expression": "mmedge.runtime.pipelines.face_expression:FaceExpressionPipeline",
             "audio-classification": "mmedge.runtime.pipelines.audio_classification:AudioClassificationPipeline",
             "text-to-image": "mmedge.runtime.pipelines.text_to_image:TextToImagePipeline",
             "image-classification": "mmedge.runtime.pipelines.image_classification:ImageClassificationPipeline",
             "super-resolution": "mmedge.runtime.pipelines.super_resolution:SuperResolutionPipeline"}


def pipeline_class(family: str) -> type:
    if family not in PIPELINES:
        raise UnknownFamilyError(f"this mmedge has no runtime pipeline for family '{family}' "
                                 f"(has: {', '.join(PIPELINES)}); upgrade mmedge")
    module, name = PIPELINES[family].split(":")
    return getattr(importlib.import_module(module), name)
