"""Voice notes on a device: transcribe every recording in a folder with a Whisper package.

    python examples/voice_notes.py PACKAGE FOLDER [--out DIR] [--engine litert] [--language en] [--force]

Each recording (WAV, FLAC, OGG, MP3, or raw PCM ``.raw``/``.pcm``: signed 16-bit little-endian mono 16 kHz, as
``arecord -f S16_LE -r 16000`` writes) gets ``NAME.txt`` next to it, or in ``--out DIR``, and one summary line:
its duration, the seconds the transcription took, the real-time factor (seconds taken / seconds of audio; below 1
is faster than real time) and the engine that ran. Recordings longer than 30 s are transcribed in 30 s windows.

Resumable: a recording whose transcript is newer than the audio is skipped, so re-running after new recordings
arrive (or after an interruption) only does the new work; ``--force`` transcribes everything again. Transcripts
are written to a temporary file and renamed, so an interrupted run never leaves a partial transcript that a
later run would take as done. Two recordings with the same name and different suffixes (``a.wav``, ``a.flac``)
get ``a.wav.txt`` and ``a.flac.txt``.

Only the slim runtime (``mmedge.runtime``: numpy, tokenizers and one engine) is used: no torch. FLAC/OGG/MP3
need ``soundfile`` (``pip install 'mmedge[audio]'``); WAV and raw PCM are read with numpy alone. A recording
that cannot be read is reported and skipped; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from mmedge import runtime
from mmedge.errors import InputError, MmedgeError
from mmedge.runtime.preprocess.audio import WHISPER_SAMPLING_RATE, load_audio

AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".raw", ".pcm")


def list_recordings(folder: Path) -> list[Path]:
    """The audio files directly in ``folder`` (by suffix, case-insensitive), sorted by name."""
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a folder; give the folder that holds the recordings")
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES),
                  key=lambda p: p.name)


def transcript_paths(recordings: list[Path], out_dir: Path | None) -> dict[Path, Path]:
    """``NAME.txt`` per recording, or ``NAME.EXT.txt`` where two recordings share a name."""
    stems: dict[str, int] = {}
    for r in recordings:
        stems[r.stem] = stems.get(r.stem, 0) + 1
    return {r: (out_dir or r.parent) / (f"{r.stem}.txt" if stems[r.stem] == 1 else f"{r.name}.txt")
            for r in recordings}


def up_to_date(audio: Path, transcript: Path) -> bool:
    return transcript.is_file() and transcript.stat().st_mtime >= audio.stat().st_mtime


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def describe_ran(ran) -> str:
    return f"{ran.engine} {ran.format}/{ran.variant}"


def transcribe_folder(load_pipeline, folder: Path, out_dir: Path | None, *, language: str | None,
                      force: bool) -> int:
    """Transcribe what is not up to date; ``load_pipeline()`` is called once, only when there is work."""
    recordings = list_recordings(folder)
    if not recordings:
        print(f"no recordings in {folder} (looked for {', '.join(AUDIO_SUFFIXES)})")
        return 0
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    targets = transcript_paths(recordings, out_dir)
    width = min(max(len(r.name) for r in recordings), 48)
    pipe = None
    done = skipped = failed = 0
    audio_total = taken_total = 0.0
    for audio in recordings:
        target = targets[audio]
        if not force and up_to_date(audio, target):
            print(f"{audio.name:{width}s}  skipped: {target.name} is newer than the recording (--force redoes it)")
            skipped += 1
            continue
        if pipe is None:
            pipe = load_pipeline()
        try:
            t0 = time.perf_counter()
            samples = load_audio(audio)
            result = pipe.transcribe(samples, language=language)
            taken = time.perf_counter() - t0
        except InputError as e:  # unreadable or damaged recording: report it, go on with the others
            print(f"{audio.name:{width}s}  FAILED: {e}", file=sys.stderr)
            failed += 1
            continue
        write_atomic(target, result.text)
        duration = len(samples) / WHISPER_SAMPLING_RATE
        audio_total, taken_total, done = audio_total + duration, taken_total + taken, done + 1
        print(f"{audio.name:{width}s}  {duration:7.1f} s audio  {taken:6.2f} s taken  RTF {taken / duration:5.2f}  "
              f"{describe_ran(result.ran)}  -> {target}", flush=True)
    summary = f"{done} transcribed, {skipped} skipped (up to date), {failed} failed"
    if done:
        summary += f"; {audio_total:.1f} s of audio in {taken_total:.1f} s (RTF {taken_total / audio_total:.2f})"
    print(summary)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Transcribe every recording in a folder with a Whisper package.")
    p.add_argument("package", help="a Whisper model package (mmedge export ...)")
    p.add_argument("folder", type=Path, help="folder of recordings (WAV, FLAC, OGG, MP3, raw PCM)")
    p.add_argument("--out", type=Path, help="write the transcripts here (default: next to each recording)")
    p.add_argument("--engine", choices=["onnxruntime", "openvino", "litert"], help="default: the device plan's")
    p.add_argument("--variant", help="package variant, e.g. fp32 or fp32-static")
    p.add_argument("--language", help="spoken language code (multilingual models; default: detected)")
    p.add_argument("--force", action="store_true", help="transcribe again even where the transcript is up to date")
    p.add_argument("--device", help="device profile (default: detected)")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--no-verify", action="store_true", help="skip the package's checksum verification")
    args = p.parse_args(argv)

    options = ({"num_threads": args.threads, "intra_op_num_threads": args.threads,
                "INFERENCE_NUM_THREADS": args.threads} if args.threads else None)

    def load_pipeline():
        pipe = runtime.load(args.package, engine=args.engine, variant=args.variant, device=args.device,
                            verify=not args.no_verify, options=options)
        if pipe.family != "whisper":
            raise InputError(f"{args.package} is a '{pipe.family}' package; voice notes need a Whisper package")
        pipe.prompt_ids(args.language, None)  # an unknown or unsupported language fails before any work
        print(f"model: {args.package} on {describe_ran(pipe.ran)} (device profile {pipe.ran.device})")
        for f in pipe.ran.fallbacks:
            print(f"  fallback: {f.get('component', '') + ': ' if f.get('component') else ''}{f['what']}: {f['why']}")
        return pipe

    try:
        return transcribe_folder(load_pipeline, args.folder, args.out, language=args.language, force=args.force)
    except MmedgeError as e:
        print(f"voice_notes: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
