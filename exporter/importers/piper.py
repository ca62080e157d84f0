"""Piper voices (an ONNX VITS graph + its ``.onnx.json`` config) → an mmedge package.

A Piper voice is a finished ONNX graph, text to waveform in one run with its noise drawn inside. It is packaged
split where its output length is decided (``importers.piper_split``), as the VITS family is: an ``encoder`` and a
``decoder`` that are the voice's own nodes on each side of the cut (ONNX, plus OpenVINO IRs converted from them),
with the length regulation and the noise in the runtime's numpy (so a seed repeats the speech). With fixed shapes
(``--static``, TFLite, or a device that needs them) both halves are also exported at fixed shapes through
onnx2torch and mmedge's converters (``importers.piper_package``). Every file is checked through the runtime path
against the voice's whole graph on ONNX Runtime (noise 0): the same waveform within ``ATOL``; the fixed-shape
files also against their PyTorch modules and, half by half, against the voice's own nodes. The runtime needs
espeak-ng (``runtime.preprocess.espeak``) for ``espeak`` voices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmedge.errors import ExportError, UsageError
from mmedge.exporter.importers import piper_package

#: Bundled Piper voices (``importers.bundled``) this importer accepts by name.
VOICES = ("joe-us-piper",)
#: Formats written by default (dynamic shapes) and all a voice exports to (TFLite: fixed shapes only).
FORMATS = ("onnx", "openvino")
ALL_FORMATS = ("onnx", "openvino", "tflite")
PHONEME_TYPES = ("espeak", "text")


def voice_files(model: str | Path) -> tuple[Path, Path] | None:
    """(graph, config) of a Piper voice: a bundled voice name, an ``.onnx`` file with ``.onnx.json`` beside it, or
    a folder holding one such pair; None for anything else."""
    if str(model) in VOICES and not Path(model).exists():
        from mmedge.exporter.importers.bundled import locate

        model = locate(str(model))
    path = Path(model)
    if path.is_dir():
        pairs = [p for p in sorted(path.glob("*.onnx")) if p.with_name(p.name + ".json").is_file()]
        if len(pairs) != 1:
            return None
        path = pairs[0]
    config = path.with_name(path.name + ".json")
    if path.suffix == ".onnx" and path.is_file() and config.is_file():
        return path, config
    return None


def is_piper_voice(model: str | Path) -> bool:
    return voice_files(model) is not None


def _read_config(config_path: Path) -> dict:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        kind = config.get("phoneme_type", "espeak")
        checks = {"phoneme_id_map": isinstance(config.get("phoneme_id_map"), dict),
                  "audio.sample_rate": isinstance((config.get("audio") or {}).get("sample_rate"), int),
                  "espeak.voice": kind != "espeak" or isinstance((config.get("espeak") or {}).get("voice"), str)}
    except (OSError, ValueError, AttributeError) as e:
        raise ExportError(f"{config_path} is not a readable Piper voice config: {e}") from None
    missing = [k for k, ok in checks.items() if not ok]
    if missing:
        raise ExportError(f"{config_path} lacks {', '.join(missing)}; it is not a Piper voice config")
    if kind not in PHONEME_TYPES:
        raise ExportError(f"Piper phoneme_type '{kind}' is not supported (supported: {', '.join(PHONEME_TYPES)}); "
                          "pinyin voices need Piper's own Chinese front end")
    return config


def parity_samples(config: dict, speakers: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Deterministic feeds (noise scales 0): two phoneme sequences drawn from the voice's own symbols, laid out as
    Piper lays ids out, for every speaker id the check covers (the first two)."""
    id_map = config["phoneme_id_map"]
    symbols = [ids for s, ids in sorted(id_map.items()) if s not in ("^", "$", "_")]
    rng = np.random.default_rng(seed)
    feeds = []
    for length in (9, 23):
        ids = [*id_map["^"], *id_map["_"]]
        for k in rng.integers(0, len(symbols), length):
            ids += [*symbols[k], *id_map["_"]]
        ids += id_map["$"]
        for sid in range(min(speakers, 2)) if speakers > 1 else (None,):
            feed = {"input": np.asarray([ids], np.int64), "input_lengths": np.asarray([len(ids)], np.int64),
                    "scales": np.asarray([0.0, 1.0, 0.0], np.float32)}
            if sid is not None:
                feed["sid"] = np.asarray([sid], np.int64)
            feeds.append(feed)
    return feeds


def _formats(formats: Sequence[str] | None, static: bool, device: str | None) -> tuple[list[str], bool]:
    """The formats to write and whether fixed-shape variants are made (``--static``, TFLite, or a device that
    needs fixed shapes)."""
    if device is not None:
        from mmedge.devices import profile

        prof = profile(device)
        static = static or prof.static_shapes
        formats = formats or [r.format for r in prof.preferred if r.format in ALL_FORMATS]
    chosen = list(dict.fromkeys(formats or FORMATS))
    unknown = [f for f in chosen if f not in ALL_FORMATS]
    if unknown or not chosen:
        raise UsageError(f"unknown format(s) {unknown}; a Piper voice exports to {', '.join(ALL_FORMATS)}")
    return chosen, static or "tflite" in chosen


def export_voice(model: str | Path, out_dir: str | Path, *, formats: Sequence[str] | None = None,
                 static: bool = False, device: str | None = None, limits: dict[str, int] | None = None,
                 log: Callable[[str], None] = lambda _m: None) -> Path:
    """Package the Piper voice ``model`` (see ``voice_files``) at ``out_dir``; returns the package path.

    ``limits`` may set ``max_phonemes`` / ``max_frames`` of the fixed shapes (``piper_package`` has the
    defaults)."""
    found = voice_files(model)
    if found is None:
        raise ExportError(f"{model} is not a Piper voice (an .onnx file with its .onnx.json beside it)")
    graph_path, config_path = found
    chosen, static = _formats(formats, static, device)
    config = _read_config(config_path)
    log(f"importing Piper voice {graph_path.name} ({config.get('num_speakers', 1)} speaker(s), "
        f"{config['audio']['sample_rate']} Hz)")
    samples = parity_samples(config, int(config.get("num_speakers", 1)))
    return piper_package.export_split(graph_path, config_path, config, out_dir, formats=chosen, static=static,
                                      source_name=str(model), samples=samples, device=device, log=log,
                                      **(limits or {}))
