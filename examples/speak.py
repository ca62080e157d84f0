"""Announcements on a device: speak sentences into WAV files with a text-to-speech package.

    python examples/speak.py PACKAGE "The laundry is done." ["Second announcement." ...] [--out-dir prompts/]
                             [--engine onnxruntime] [--speaker N] [--seed S] [--prefix NAME]

Each sentence becomes ``PREFIX-NN.wav`` (16-bit mono at the voice's own sample rate) in ``--out-dir``, ready for
``aplay``; one line per sentence says its duration, the seconds it took, the real-time factor (seconds taken /
seconds of speech; below 1 is faster than real time) and the engine, format and variant that ran. Sentences are
rendered once and played many times, which is how a doorbell, a kiosk or a washing machine speaks without a
speech engine of its own. Files are written to a temporary name and renamed, so a player never reads half a file.

Any text-to-speech package works: an imported Piper voice (real speech; needs ``apt install espeak-ng`` for its
phonemes), a VITS/MMS-TTS package or a SpeechT5 package (``--speaker-embedding x.npy``). Only the slim runtime
(``mmedge.runtime``: numpy and one engine) is used: no torch. A sentence that cannot be spoken (empty, no
character the voice knows, longer than a static package allows) is reported and skipped; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from mmedge import runtime
from mmedge.errors import InputError, MmedgeError, UsageError


def speak_to(pipe, text: str, path: Path, options: dict) -> tuple[float, float]:
    """Speak ``text`` into ``path`` (atomically); (seconds of speech, seconds taken)."""
    start = time.perf_counter()
    result = pipe.speak(text, **options)
    taken = time.perf_counter() - start
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        result.save(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return result.duration_s, taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", help="a text-to-speech package (mmedge export joe-us-piper joe)")
    parser.add_argument("sentences", nargs="+", help="the sentences to speak, one WAV file each")
    parser.add_argument("--out-dir", default=".", help="where the WAV files go (default: here)")
    parser.add_argument("--prefix", default="speech", help="file names: PREFIX-01.wav, PREFIX-02.wav ...")
    parser.add_argument("--engine", choices=["onnxruntime", "openvino", "litert"])
    parser.add_argument("--variant", help="package variant, e.g. fp32 or fp32-static")
    parser.add_argument("--device", help="device profile (default: detected)")
    parser.add_argument("--speaker", help="speaker of a multi-speaker voice")
    parser.add_argument("--speaker-embedding", help="SpeechT5: a speaker embedding .npy file")
    parser.add_argument("--seed", type=int, help="noise seed (Piper, VITS, SpeechT5): the same seed, the same speech")
    args = parser.parse_args(argv)
    try:
        out_dir = Path(args.out_dir)
        if not out_dir.is_dir():
            raise UsageError(f"--out-dir {out_dir} is not a folder; create it first")
        pipe = runtime.load(args.package, engine=args.engine, variant=args.variant, device=args.device)
        if pipe.task != "text-to-speech":
            raise UsageError(f"{args.package} is a '{pipe.task}' package; give a text-to-speech package")
        options = {k: v for k, v in (("speaker", args.speaker), ("seed", args.seed)) if v is not None}
        if args.speaker_embedding:
            import numpy as np

            options["speaker_embedding"] = np.load(args.speaker_embedding, allow_pickle=False)
    except (MmedgeError, OSError, ValueError) as e:
        print(f"speak: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    ran = pipe.ran
    print(f"voice: {args.package} on {ran.engine} {ran.format}/{ran.variant} (device profile {ran.device})")
    failed = 0
    for i, text in enumerate(args.sentences, 1):
        path = out_dir / f"{args.prefix}-{i:02d}.wav"
        try:
            seconds, taken = speak_to(pipe, text, path, options)
        except InputError as e:
            failed += 1
            print(f"{i:2d}  skipped: {e}")
            continue
        print(f"{i:2d}  {seconds:5.2f} s speech  {taken:5.2f} s taken  RTF {taken / max(seconds, 1e-9):5.2f}  "
              f"-> {path}  {text!r}")
    print(f"{len(args.sentences) - failed} spoken, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
