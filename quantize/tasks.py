"""The family's task, called on one real sample: what calibration records and what the accuracy budget scores.

Each ``Task`` says which samples it takes (``modality``), how the runtime pipeline is called on one of them, and
how the result becomes the comparable dict of ``runtime.profiling.accuracy`` (``kind``: transcript, tokens,
labels, waveform, image, embeddings). Running the real pipeline is the point: calibration then sees the inputs
every component really gets (a decoder's encoder outputs and its own earlier tokens), not random tensors, and
the budget judges what users see (words, labels, tokens), not graph outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mmedge.errors import UsageError
from mmedge.quantize.samples import Sample

GREEDY = {"max_new_tokens": 16, "do_sample": False, "num_beams": 1}
#: Zero-shot labels for CLIP: everyday classes that cover the default photos and more.
CLIP_LABELS = ("a photo of a person", "a photo of a cat", "a photo of a dog", "a photo of a cup of coffee",
               "a photo of a rocket", "a photo of a horse", "a microscope image", "a photo of the night sky",
               "a colour wheel", "a photo of a city street")
QUESTION = "what is in the picture?"
SR_CROP = 48  # super-resolution: a centre crop of each photo, small enough to keep the budget pass quick
IMAGE_STEPS = 4  # text-to-image: a short seeded denoising run per prompt


@dataclass(frozen=True)
class Task:
    modality: str  # the samples it takes: image | audio | text
    kind: str  # accuracy.METRICS kind of ``outputs`` ("lm": tokens + teacher-forced likelihood of the sample)
    call: Callable[[Any, Sample], Any]  # (pipeline, sample) -> pipeline result
    outputs: Callable[[Any, Any], dict]  # (pipeline, result) -> comparable dict


def _tokens(_pipe, r) -> dict:
    return {"tokens": list(r.tokens), "text": r.text}


@dataclass(frozen=True)
class _LmResult:
    generated: Any  # the greedy continuation (GenerationResult)
    nll: float  # summed negative log-likelihood of the sample's own tokens, each given the ones before it
    count: int  # how many tokens were predicted


def _teacher_forced_nll(pipe, text: str) -> tuple[float, int]:
    """The sample sentence fed one token at a time through a fresh KV cache: -log p(token | earlier tokens),
    summed, in float64. One token per step works on every cache strategy (dynamic past, static decode buffer)."""
    ids = pipe.tokenizer.encode(text)
    decoder = pipe.new_decoder()
    total = 0.0
    for i in range(len(ids) - 1):
        logits = decoder.extend(np.asarray([[ids[i]]], np.int64))[0].astype(np.float64)
        top = logits.max()
        total += top + np.log(np.exp(logits - top).sum()) - logits[ids[i + 1]]
    return float(total), max(len(ids) - 1, 0)


def _lm(pipe, sample: Sample) -> _LmResult:
    generated = pipe.generate(sample.value, **GREEDY)  # first: calibration records the prompt prefill early
    return _LmResult(generated, *_teacher_forced_nll(pipe, sample.value))


def _lm_outputs(_pipe, r: _LmResult) -> dict:
    return {**_tokens(_pipe, r.generated), "nll": r.nll, "count": r.count}


def _crop(sample: Sample) -> np.ndarray:
    from mmedge.runtime.preprocess.image import load_image

    pixels = np.asarray(load_image(sample.value).convert("RGB"))
    h, w = pixels.shape[:2]
    size = min(SR_CROP, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(pixels[top:top + size, left:left + size])


def _speak_options(pipe) -> dict:
    options: dict[str, Any] = {"seed": 0}
    if pipe.package.manifest.family == "speecht5-tts":  # SpeechT5 speaks with a speaker embedding: a fixed one
        dim = int(pipe.package.manifest.preprocessing["speaker_embedding_dim"])
        options["speaker_embedding"] = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    return options


def _zero_shot(pipe, r) -> dict:
    return {"labels": [r.labels[int(np.argmax(r.probs))]], "probs": [list(r.probs)]}


def _classified(_pipe, r) -> dict:
    return {"labels": [r.top1.label], "top_k": [[p.id for p in r.predictions]],
            "probs": [[p.prob for p in r.predictions]]}


def _faces(_pipe, r) -> dict:
    return {"labels": [f.label for f in r.faces], "probs": [list(f.probs.values()) for f in r.faces]}


TASKS: dict[str, Task] = {
    "whisper": Task("audio", "transcript", lambda p, s: p.transcribe(s.value), lambda _p, r: {"text": r.text}),
    "wav2vec2-ctc": Task("audio", "transcript", lambda p, s: p.transcribe(s.value), lambda _p, r: {"text": r.text}),
    "causal-lm": Task("text", "lm", _lm, _lm_outputs),
    "seq2seq": Task("text", "tokens", lambda p, s: p.generate(s.value, **GREEDY), _tokens),
    "vision-encoder-decoder": Task("image", "tokens", lambda p, s: p.caption(s.value, **GREEDY), _tokens),
    "blip-captioning": Task("image", "tokens", lambda p, s: p.caption(s.value, **GREEDY), _tokens),
    "blip-vqa": Task("image", "tokens", lambda p, s: p.answer(s.value, QUESTION, **GREEDY), _tokens),
    "llava": Task("image", "tokens", lambda p, s: p.answer(s.value, QUESTION, **GREEDY), _tokens),
    "clip": Task("image", "labels", lambda p, s: p.zero_shot(s.value, CLIP_LABELS), _zero_shot),
    "image-classification": Task("image", "labels", lambda p, s: p.classify(s.value, top_k=5), _classified),
    "face-expression": Task("image", "labels", lambda p, s: p.recognize(s.value), _faces),
    "audio-classification": Task("audio", "labels", lambda p, s: p.classify(s.value),
                                 lambda _p, r: {"labels": [r.label], "probs": [list(r.probs)]}),
    "super-resolution": Task("image", "image", lambda p, s: p.upscale(_crop(s)),
                             lambda _p, r: {"pixels": r.pixels, "peak": int(np.iinfo(r.pixels.dtype).max)}),
    "text-to-image": Task("text", "image", lambda p, s: p.generate(s.value, steps=IMAGE_STEPS, seed=0),
                          lambda _p, r: {"pixels": r.pixels, "peak": 1.0}),
}
_SPEAK = Task("text", "waveform", lambda p, s: p.speak(s.value, **_speak_options(p)),
              lambda _p, r: {"waveform": r.waveform})


def task_for(family: str, task: str) -> Task:
    """The task of a package (``manifest.family``, ``manifest.task``)."""
    if task == "text-to-speech":
        return _SPEAK
    if family not in TASKS:
        raise UsageError(f"family '{family}' has no calibration/evaluation task yet; "
                         "quantize it without --budget and a calibrated mode (e.g. --mode dynamic-int8)")
    return TASKS[family]
