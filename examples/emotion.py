"""Mood log on a device: the emotion of every capture (a camera frame and/or a voice clip) in a folder.

    python examples/emotion.py FOLDER --face-package FACE_PKG [--speech-package SPEECH_PKG] [--out mood.csv]
                               [--engine litert] [--weights face=0.6,speech=0.4]

A capture is the files of one name: ``visit1.jpg`` and ``visit1.wav`` are one capture, seen and heard; a lone
``visit2.png`` or ``visit3.wav`` is a capture with one modality. Each gets one line (its fused emotion, the
face's and the voice's own top emotion, the faces found) and a row in the CSV file (``--out``, default
``mood.csv`` in the folder). Face and speech are fused late (``mmedge.runtime.pipelines.emotion``: equal
weights by default, labels mapped onto face-api's seven expressions); an image without a face leaves the voice
to decide, and a capture with neither is logged as ``no emotion``.

Get the packages with ``mmedge export face-api face-pkg`` (real face-api nets from npm) and, for speech, any
wav2vec2 emotion classifier (``mmedge export superb/wav2vec2-base-superb-er ser-pkg`` where the hub is reachable;
``mmedge tiny-model speech-emotion tiny && mmedge export tiny ser-pkg`` offline: random weights). Only the slim
runtime is used (numpy, Pillow and one engine). An unreadable file is reported and skipped; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from mmedge.errors import InputError, MmedgeError
from mmedge.runtime.pipelines.emotion import EmotionRecognizer

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".raw", ".pcm")
COLUMNS = ("capture", "emotion", "probability", "face", "voice", "faces_found", "engine")


def captures(folder: Path) -> dict[str, dict[str, Path]]:
    """Name → {"image": path, "audio": path} for the files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a folder; give the folder that holds the captures")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        kind = "image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else None
        if kind and path.is_file():
            found.setdefault(path.stem, {})[kind] = path
    return found


def top(probs: dict[str, float] | None) -> str:
    if not probs:
        return ""
    label = max(probs, key=probs.__getitem__)
    return f"{label} {probs[label]:.2f}"


def mood_row(name: str, files: dict[str, Path], recognizer: EmotionRecognizer) -> dict:
    image = files.get("image") if recognizer.face else None
    audio = files.get("audio") if recognizer.speech else None
    if image is None and audio is None:
        return {"capture": name, "emotion": "no input for the loaded packages"}
    result = recognizer.recognize(image=image, audio=audio)
    ran = (result.face or result.speech)["ran"]
    return {"capture": name, "emotion": result.label or "no emotion",
            "probability": f"{result.probs[result.label]:.3f}" if result.label else "",
            "face": top(result.sources.get("face")), "voice": top(result.sources.get("speech")),
            "faces_found": len(result.face["faces"]) if result.face else "",
            "engine": f"{ran['engine']} {ran['format']}/{ran['variant']}"}


def parse_weights(text: str | None) -> dict[str, float]:
    weights = {}
    for item in filter(None, (text or "").split(",")):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"--weights takes face=W,speech=W, got {item!r}") from None
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--face-package", help="face-expression package")
    parser.add_argument("--speech-package", help="speech-emotion (audio-classification) package")
    parser.add_argument("--out", type=Path, help="CSV file to write (default FOLDER/mood.csv)")
    parser.add_argument("--engine", choices=["onnxruntime", "openvino", "litert"])
    parser.add_argument("--device", help="device profile (default: detected)")
    parser.add_argument("--weights", help="fusion weights, e.g. face=0.6,speech=0.4 (default: equal)")
    args = parser.parse_args(argv)
    try:
        found = captures(args.folder)
        recognizer = EmotionRecognizer.load(args.face_package, args.speech_package, weights=parse_weights(args.weights),
                                            engine=args.engine, device=args.device)
    except MmedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, failed = [], 0
    for name, files in found.items():
        try:
            row = mood_row(name, files, recognizer)
        except InputError as e:
            print(f"{name}: skipped: {e}", file=sys.stderr)
            failed += 1
            continue
        rows.append(row)
        print(f"{name:<20} {row['emotion']:<10} face: {row.get('face') or '-':<14} voice: {row.get('voice') or '-'}")
    out = args.out or args.folder / "mood.csv"
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} capture(s) logged to {out}" + (f", {failed} skipped" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
