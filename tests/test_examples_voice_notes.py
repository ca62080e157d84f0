"""examples/voice_notes.py end to end on the real Whisper tiny.en package and real LibriVox speech, as a user runs
it: transcripts equal to ``runtime.load(...).transcribe``, a second run skips what is up to date, a re-recorded
file is redone, and the process stays on the slim runtime (no torch)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mmedge import runtime

from conftest import LIBRIVOX

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "voice_notes.py"
CLIPS = ("sense_and_sensibility_01_austen_64kb-0870.wav", "sense_and_sensibility_01_austen_64kb-0880.wav")


def _run(*args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + [str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_voice_notes_transcribes_a_folder_then_skips_it(whisper_package, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    for name in CLIPS:
        shutil.copy(LIBRIVOX / name, notes / name)
    (notes / "readme.md").write_text("not audio")  # ignored: not a recording
    common = [str(whisper_package), str(notes), "--engine", "onnxruntime", "--device", "x86-cpu"]

    first = _run(*common, importtime=True)
    assert first.returncode == 0, first.stderr
    # -X importtime lists every module the process imported: the example must stay on the slim runtime
    assert not re.search(r"\|\s+(torch|transformers|mmedge\.exporter)(\.|\s*$)", first.stderr, re.M)
    assert "2 transcribed, 0 skipped" in first.stdout
    assert sorted(p.name for p in notes.glob("*.txt")) == sorted(Path(n).stem + ".txt" for n in CLIPS)
    pipe = runtime.load(whisper_package, engine="onnxruntime", device="x86-cpu")
    for name in CLIPS:
        expected = pipe.transcribe(notes / name).text
        assert expected and (notes / name).with_suffix(".txt").read_text(encoding="utf-8") == expected + "\n"
        line = next(ln for ln in first.stdout.splitlines() if ln.startswith(name))
        assert re.search(r"\d+\.\d s audio\s+\d+\.\d+ s taken\s+RTF\s+\d+\.\d+\s+onnxruntime onnx/fp32", line), line

    stamps = {p: p.stat().st_mtime_ns for p in notes.glob("*.txt")}
    second = _run(*common)
    assert second.returncode == 0, second.stderr
    assert "0 transcribed, 2 skipped" in second.stdout
    assert all(f"{name}  skipped" in second.stdout for name in CLIPS)
    assert "model:" not in second.stdout  # nothing to do: the model is not even loaded
    assert {p: p.stat().st_mtime_ns for p in notes.glob("*.txt")} == stamps

    # a recording newer than its transcript (re-recorded) is done again; the other one is still skipped
    redo = notes / CLIPS[1]
    future = max(stamps.values()) / 1e9 + 10
    os.utime(redo, (future, future))
    third = _run(*common)
    assert third.returncode == 0, third.stderr
    assert "1 transcribed, 1 skipped" in third.stdout
    assert redo.with_suffix(".txt").read_text(encoding="utf-8") == pipe.transcribe(redo).text + "\n"
