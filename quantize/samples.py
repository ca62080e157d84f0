"""Real samples for calibration and for the accuracy budget: photos, speech clips (with their transcripts when
known) and sentences, from a folder the user gives or, by default, from what ships with the tools.

Defaults: images from scikit-image's bundled data (fourteen photographs, seven in colour, seven grayscale given
as RGB; scikit-image is a dev dependency); speech from pocketsphinx's
LibriVox test clips (Debian's ``pocketsphinx`` test data, with their transcripts, so WER is measured against what
was said), else the source checkout's ``examples/data/audio``; and the fixed English sentences below. A user folder
holds images (.jpg .jpeg .png .bmp .webp), audio (.wav .flac; a ``NAME.txt`` beside a clip is its transcript)
and/or other ``*.txt`` prompt files (one sentence per line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
AUDIO_SUFFIXES = {".wav", ".flac"}
EXAMPLE_AUDIO = Path(__file__).resolve().parents[1] / "examples" / "data" / "audio"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel",
                  "camera", "coins", "moon", "clock", "grass", "gravel", "brick")  # the last seven are grayscale
SENTENCES = (
    "The weather is nice today, so we will walk to the market.",
    "Please turn off the lights in the kitchen before you leave.",
    "A small robot rolled across the floor and stopped near the door.",
    "She read the letter twice and then put it back in the drawer.",
    "The train to the city leaves at seven in the morning.",
    "Scientists measured the temperature of the lake every hour.",
    "My phone battery is almost empty, can I borrow a charger?",
    "The children built a sand castle on the beach.",
    "Add two cups of flour and a pinch of salt to the bowl.",
    "The museum opens on Sunday and closes early on holidays.",
    "He fixed the bicycle with an old wrench from the garage.",
    "Once upon a time, in a small village by the sea, there lived a fisherman.",
)


@dataclass(frozen=True)
class Sample:
    """One input: an image (HxWxC uint8 array or path), an audio path, or a sentence. ``reference`` is the known
    transcript of a speech clip (None when unknown: the budget then compares with the fp32 transcript)."""

    modality: str  # "image" | "audio" | "text"
    value: Any
    name: str
    reference: str | None = None


def _librivox() -> list[Sample]:
    listing = LIBRIVOX / "transcription"
    if not listing.is_file():
        return []
    out = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((\S+)\)", line.strip())
        if m and (LIBRIVOX / f"{m.group(2)}.wav").is_file():
            out.append(Sample("audio", str(LIBRIVOX / f"{m.group(2)}.wav"), m.group(2), m.group(1)))
    return out


def _skimage_photos() -> list[Sample]:
    try:
        import skimage.data
    except ImportError:
        return []
    out = []
    for name in SKIMAGE_PHOTOS:
        pixels = getattr(skimage.data, name)()
        if pixels.ndim == 2:  # grayscale photographs, given as RGB like a camera would
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        out.append(Sample("image", np.ascontiguousarray(pixels[:, :, :3]), f"skimage.{name}"))
    return out


def _from_folder(folder: Path, modality: str) -> list[Sample]:
    if not folder.is_dir():
        raise UsageError(f"calibration folder {folder} does not exist; pass a folder of images, audio or .txt files")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if modality == "image":
        return [Sample("image", str(p), p.name) for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if modality == "audio":
        return [Sample("audio", str(p), p.name, p.with_suffix(".txt").read_text(encoding="utf-8").strip()
                       if p.with_suffix(".txt").is_file() else None)
                for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
    transcripts = {p.with_suffix(".txt") for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
    lines = [ln.strip() for p in files if p.suffix == ".txt" and p not in transcripts
             for ln in p.read_text(encoding="utf-8").splitlines()]
    return [Sample("text", ln, f"line {i}") for i, ln in enumerate(x for x in lines if x)]


def samples(modality: str, *, folder: str | Path | None = None, limit: int | None = None) -> list[Sample]:
    """Up to ``limit`` samples of ``modality`` from ``folder`` or the defaults (see the module docstring)."""
    if modality not in ("image", "audio", "text"):
        raise UsageError(f"unknown sample modality '{modality}'")
    if folder is not None:
        found = _from_folder(Path(folder), modality)
    elif modality == "image":
        found = _skimage_photos()
    elif modality == "audio":
        found = _librivox() or [Sample("audio", str(p), p.name) for p in sorted(EXAMPLE_AUDIO.glob("*.wav"))]
    else:
        found = [Sample("text", s, f"sentence {i}") for i, s in enumerate(SENTENCES)]
    if not found:
        where = f"in {folder}" if folder is not None else "among the defaults (scikit-image, examples/data/audio, " \
                                                          "pocketsphinx's LibriVox clips)"
        raise UsageError(f"no {modality} samples found {where}; pass --calibration DIR with {modality} files")
    return found[:limit] if limit else found
