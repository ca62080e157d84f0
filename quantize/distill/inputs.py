"""Unlabelled training inputs for distillation: audio clips, images and sentences, from files, folders or memory.

The teacher provides every target, so all a family needs is real inputs of its modality. Files are read with
the runtime's own loaders (``load_audio``, ``load_image``), so a file that ``mmedge run`` accepts is accepted
here with the same typed errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from mmedge.errors import InputError, UsageError
from mmedge.runtime.preprocess.audio import load_audio
from mmedge.runtime.preprocess.image import load_image

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".raw", ".pcm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TEXT_SUFFIXES = (".txt",)
#: What each family trains on.
KINDS = {"whisper": ("audio",), "causal-lm": ("text",), "clip": ("image", "text")}


def load_inputs(inputs: Iterable[Any], family: str) -> dict[str, list]:
    """Sort ``inputs`` by kind and load them: ``{"audio": [16 kHz float32 arrays], "image": [PIL images],
    "text": [sentences]}`` (only the kinds ``family`` uses). An item is a file or folder path (folders give their
    files, sorted), a 1-D numpy array (16 kHz audio), an image array or PIL image, or a sentence; a ``.txt`` file
    gives one sentence per non-empty line."""
    wanted = KINDS[family]
    out: dict[str, list] = {kind: [] for kind in wanted}
    for item in _expand(inputs):
        kind, value = _classify(item)
        if kind not in wanted:
            raise UsageError(f"{_describe(item)} is {kind}, but {family} distillation trains on "
                             f"{' and '.join(wanted)} inputs; remove it or give {' and '.join(wanted)} files")
        if kind == "text":
            out[kind].extend(value)
        else:
            out[kind].append(load_audio(value) if kind == "audio" else load_image(value).convert("RGB"))
    for kind in wanted:
        if not out[kind]:
            raise UsageError(f"{family} distillation needs {kind} inputs and none were given; pass {kind} files, a "
                             f"folder of them or in-memory samples (default_inputs('{family}') lists real ones)")
    return out


def default_inputs(family: str) -> list:
    """Real unlabelled samples that install offline (``quantize.samples``: LibriVox speech for Whisper,
    scikit-image's photographs for CLIP) and the embedded English corpus for CLIP and the causal LM."""
    from mmedge.exporter.families.tiny_corpus import CORPUS
    from mmedge.quantize.samples import samples

    sentences = [line.strip() for line in CORPUS.strip().splitlines() if line.strip()]
    if family == "whisper":
        return [s.value for s in samples("audio")]
    if family == "causal-lm":
        return sentences
    if family == "clip":
        return [Image.fromarray(s.value) for s in samples("image")] + sentences
    raise UsageError(f"no default inputs for family {family!r}; choose one of {', '.join(KINDS)}")


def _expand(inputs: Iterable[Any]) -> list:
    if isinstance(inputs, (str, os.PathLike, np.ndarray, Image.Image)):
        inputs = [inputs]
    items: list = []
    for item in inputs:
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            items.extend(sorted(p for p in Path(item).iterdir()
                                if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES + IMAGE_SUFFIXES + TEXT_SUFFIXES))
        else:
            items.append(item)
    return items


def _classify(item: Any) -> tuple[str, Any]:
    if isinstance(item, Image.Image):
        return "image", item
    if isinstance(item, np.ndarray):
        return ("audio" if item.ndim == 1 else "image"), item
    if isinstance(item, os.PathLike) or (isinstance(item, str) and _looks_like_path(item)):
        path = Path(item)
        if not path.is_file():
            raise InputError(f"input file {str(path)!r} does not exist; give an existing file")
        suffix = path.suffix.lower()
        if suffix in AUDIO_SUFFIXES:
            return "audio", path
        if suffix in IMAGE_SUFFIXES:
            return "image", path
        if suffix in TEXT_SUFFIXES:
            lines = path.read_text(encoding="utf-8").splitlines()
            return "text", [line.strip() for line in lines if line.strip()]
        raise InputError(f"cannot tell what {str(path)!r} holds from its suffix; give audio "
                         f"({', '.join(AUDIO_SUFFIXES)}), image ({', '.join(IMAGE_SUFFIXES)}) or .txt files")
    if isinstance(item, str) and item.strip():
        return "text", [item.strip()]
    raise InputError(f"unsupported distillation input {_describe(item)}; give file paths, folders, numpy arrays, "
                     "PIL images or sentences")


def _looks_like_path(text: str) -> bool:
    """A string is a file path when such a file exists, or when it is one word ending in a known suffix (so a
    mistyped file name is an error, not a sentence to train on)."""
    known = AUDIO_SUFFIXES + IMAGE_SUFFIXES + TEXT_SUFFIXES
    return Path(text).is_file() or (not any(c.isspace() for c in text) and text.lower().endswith(known))


def _describe(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return repr(str(item))
    return f"an input of type {type(item).__name__}"
