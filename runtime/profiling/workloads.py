"""One realistic task call per family, built from the package's own contract, so every engine and variant is
timed on the same work and its outputs can be compared with the fp32 reference.

Inputs are fixed and deterministic: a synthetic image at the package's crop size (for faces the bundled
``examples/data/photos/astronaut.jpg``, a smiling face, in a source checkout), the bundled speech clip
(``examples/data/audio/goforward.wav`` in a source checkout; a synthetic tone otherwise), a fixed short prompt
and greedy decoding of at most ``MAX_NEW_TOKENS`` tokens (sampling would make token agreement meaningless), a
fixed sentence spoken with fixed noise (text-to-speech).

Generation timings come from the pipelines' own ``GenerationResult.timings`` (``timed_generate``) where the
result has them; Whisper and the captioning pipelines return none, so a clock on the decoder session takes
their place: the first token is ready when the first decoder call returns, and each later call yields one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmedge.errors import UsageError
from mmedge.runtime.profiling.hooks import after_each_run, sessions_of

MAX_NEW_TOKENS = 16
PROMPT = "Once upon a time, in a small village by the sea,"
SEQ2SEQ_PROMPT = "translate English to German: The weather is nice today."
QUESTION = "what is this?"  # short: static VQA packages fix the question length (16 tokens in the tiny one)
LABELS = ["a photo of a cat", "a photo of a dog", "a diagram"]
IMAGE_PROMPT, IMAGE_STEPS = "a photo of an astronaut riding a horse", 8  # text-to-image: a short denoising run
SPEECH_TEXT = "Turn on the kitchen lights."  # short: static text-to-speech packages fix the text length
SPEECH_CLIP = Path(__file__).resolve().parents[2] / "examples" / "data" / "audio" / "goforward.wav"
FACE_PHOTO = Path(__file__).resolve().parents[2] / "examples" / "data" / "photos" / "astronaut.jpg"
PHOTOS = FACE_PHOTO.parent  # five real photos in a source checkout (examples/data/photos)
SR_INPUT = (80, 64)  # (width, height) of the super-resolution input: tiled on a static 64-pixel tile
GREEDY = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False, "num_beams": 1}


@dataclass
class Workload:
    """``run`` is the timed task call; ``outputs`` turns one run's result into comparable numbers or tokens
    (``kind``: embeddings, tokens or transcript); ``timings`` gives a run's generation timings or None."""

    kind: str
    inputs: str
    run: Callable[[], Any]
    outputs: Callable[[Any], dict]
    timings: Callable[[Any], dict | None]


def synthetic_image(preprocessing: dict) -> np.ndarray:
    """A smooth colour gradient with a disc, HxWx3 uint8 at the package's crop size (224 if unstated)."""
    crop = (preprocessing.get("image") or {}).get("crop_size") or {}
    h, w = int(crop.get("height", 224)), int(crop.get("width", 224))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    disc = ((y - h / 2) ** 2 + (x - w / 2) ** 2 < (min(h, w) / 4) ** 2).astype(np.float32)
    rgb = np.stack([x / w, y / h, disc], axis=-1) * 255
    return rgb.astype(np.uint8)


def speech_input() -> tuple[Any, str]:
    if SPEECH_CLIP.is_file():
        return str(SPEECH_CLIP), SPEECH_CLIP.name
    t = np.arange(16000 * 3, dtype=np.float32) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), "3 s synthetic 440 Hz tone"


class DecoderClock:
    """Times the decoder session's calls during one task call (for pipelines without generation timings)."""

    def __init__(self, runner):
        self.start = self.first = self.last = 0.0
        self.calls = 0
        for _, session in sessions_of({"decoder": runner}):
            after_each_run(session, self._tick)

    def _tick(self, _session) -> None:
        self.calls += 1
        self.last = time.perf_counter()
        if self.calls == 1:
            self.first = self.last

    def reset(self) -> None:
        self.start, self.calls = time.perf_counter(), 0

    def result(self) -> dict | None:
        if not self.calls:
            return None
        rest = self.last - self.first
        return {"time_to_first_token_ms": 1000 * (self.first - self.start), "new_tokens": self.calls,
                "tokens_per_s": (self.calls - 1) / rest if self.calls > 1 and rest > 0 else None,
                "source": "decoder calls"}


def _pipeline_timings(result) -> dict:
    t = result.timings
    return {"time_to_first_token_ms": t.get("time_to_first_token_ms"), "new_tokens": t.get("new_tokens"),
            "tokens_per_s": t.get("tokens_per_s"), "source": "pipeline timings"}


def _tokens(result) -> dict:
    return {"tokens": list(result.tokens), "text": result.text}


def _clocked(clock: DecoderClock, call: Callable[[], Any]) -> Callable[[], Any]:
    def run():
        clock.reset()
        return call()
    return run


def build(pipe, runners: dict) -> Workload:
    """The workload of ``pipe``'s family (``runners``: the loaded components, for the decoder clock)."""
    family, pre = pipe.package.manifest.family, pipe.package.manifest.preprocessing
    if family == "clip":
        image = synthetic_image(pre)
        return Workload("embeddings", f"zero-shot: {image.shape[1]}x{image.shape[0]} synthetic image, "
                        f"{len(LABELS)} labels", lambda: pipe.zero_shot(image, LABELS),
                        lambda r: {"probs": r.probs, "image_embeds": pipe.embed_images([image])[0].tolist(),
                                   "text_embeds": pipe.embed_text(LABELS).tolist()}, lambda r: None)
    if family in ("causal-lm", "seq2seq"):
        prompt = PROMPT if family == "causal-lm" else SEQ2SEQ_PROMPT
        return Workload("tokens", f"greedy, {MAX_NEW_TOKENS} new tokens after: {prompt!r}",
                        lambda: pipe.generate(prompt, **GREEDY), _tokens, _pipeline_timings)
    if family in ("llava", "blip-vqa"):
        image = synthetic_image(pre)
        return Workload("tokens", f"{image.shape[1]}x{image.shape[0]} synthetic image, {QUESTION!r}, greedy",
                        lambda: pipe.answer(image, QUESTION, **GREEDY), _tokens, _pipeline_timings)
    if family in ("vision-encoder-decoder", "blip-captioning"):
        image, clock = synthetic_image(pre), DecoderClock(runners["decoder"])
        return Workload("tokens", f"caption of a {image.shape[1]}x{image.shape[0]} synthetic image, greedy",
                        _clocked(clock, lambda: pipe.caption(image, **GREEDY)), _tokens, lambda r: clock.result())
    if family in ("whisper", "wav2vec2-ctc"):
        audio, what = speech_input()
        clock = DecoderClock(runners["decoder"]) if family == "whisper" else None
        call = lambda: pipe.transcribe(audio)  # noqa: E731
        return Workload("transcript", f"transcribe {what}", _clocked(clock, call) if clock else call,
                        lambda r: {"text": r.text}, lambda r: clock.result() if clock else None)
    if pipe.task == "text-to-speech":
        # Repeatable on every engine: the TTS pipelines (VITS, Piper, SpeechT5) draw their noise in numpy from the seed.
        options: dict[str, Any] = {"seed": 0}
        what = ", ".join(f"{k}={v}" for k, v in options.items())
        if family == "speecht5-tts":  # a fixed synthetic voice: SpeechT5 speaks with a speaker embedding
            options["speaker_embedding"] = np.random.default_rng(0).standard_normal(
                int(pre["speaker_embedding_dim"])).astype(np.float32)
            what += ", a fixed random speaker embedding"
        return Workload("waveform", f"speak {SPEECH_TEXT!r} ({what})",
                        lambda: pipe.speak(SPEECH_TEXT, **options),
                        lambda r: {"waveform": r.waveform.tolist(), "sampling_rate": r.sampling_rate}, lambda r: None)
    if family == "face-expression":
        found = FACE_PHOTO.is_file()
        image = str(FACE_PHOTO) if found else synthetic_image(pre)
        faces = lambda r: {"labels": [f.label for f in r.faces],  # noqa: E731
                           "probs": [list(f.probs.values()) for f in r.faces]}
        return Workload("labels", f"detect faces and score expressions in "
                        f"{FACE_PHOTO.name if found else 'a synthetic image (no face)'}",
                        lambda: pipe.recognize(image), faces, lambda r: None)
    if family == "audio-classification":
        audio, what = speech_input()
        return Workload("labels", f"classify {what}", lambda: pipe.classify(audio),
                        lambda r: {"labels": [r.label], "probs": [r.probs]}, lambda r: None)
    if family == "image-classification":
        return _classification(pipe, pre)
    if family == "super-resolution":
        image, what = sr_input()
        return Workload("image", f"upscale {what} x{pipe.scale}", lambda: pipe.upscale(image),
                        lambda r: {"pixels": r.pixels.tolist(), "peak": int(np.iinfo(r.pixels.dtype).max)},
                        lambda r: None)
    if family == "text-to-image":  # a fixed seed: the same initial latents on every engine and variant
        return Workload("image", f"{IMAGE_PROMPT!r}, {IMAGE_STEPS} steps of the package's default scheduler, seed 0",
                        lambda: pipe.generate(IMAGE_PROMPT, steps=IMAGE_STEPS, seed=0),
                        lambda r: {"pixels": r.pixels.tolist(), "peak": 1.0}, lambda r: None)
    raise UsageError(f"the profiler has no workload for family '{family}' yet; profile it with `mmedge run` timings")


def _classification(pipe, pre: dict) -> Workload:
    """Top-5 of the bundled real photos (a synthetic image outside a source checkout), batch of all of them."""
    from mmedge.runtime.pipelines.probabilities import probabilities

    photos = sorted(PHOTOS.glob("*.jpg")) if PHOTOS.is_dir() else []
    images: list = [str(p) for p in photos] or [synthetic_image(pre)]
    what = f"{len(photos)} photos from {PHOTOS.name}/" if photos else "a synthetic image"

    def outputs(results) -> dict:
        return {"labels": [r.top1.label for r in results], "top_k": [[p.id for p in r.predictions] for r in results],
                "probs": probabilities(pipe.logits(images), pipe.activation).tolist()}
    return Workload("labels", f"top-5 labels of {what}", lambda: pipe.classify_many(images, top_k=5), outputs,
                    lambda r: None)


def sr_input() -> tuple[np.ndarray, str]:
    """A ``SR_INPUT`` crop of a real photo (the coffee cup) in a source checkout, else a synthetic image."""
    width, height = SR_INPUT
    photo = PHOTOS / "coffee.jpg"
    if photo.is_file():
        from PIL import Image

        with Image.open(photo) as image:
            pixels = np.asarray(image.convert("RGB"))
        top, left = (pixels.shape[0] - height) // 2, (pixels.shape[1] - width) // 2
        crop = pixels[top:top + height, left:left + width]
        return np.ascontiguousarray(crop), f"a {width}x{height} crop of {photo.name}"
    synthetic = synthetic_image({"image": {"crop_size": {"height": height, "width": width}}})
    return synthetic, f"a {width}x{height} synthetic image"
