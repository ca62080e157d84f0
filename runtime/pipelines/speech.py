"""What every text-to-speech pipeline returns: a mono float waveform at the model's sample rate, and what ran.

WAV files are written with the standard library's ``wave`` module as 16-bit PCM (what every player reads; the
float waveform is clipped to [-1, 1] and scaled by 32767, as Piper writes its files), so the slim runtime needs
no audio library to save speech.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.loader import RunInfo


def write_wav(path: str | Path, waveform: np.ndarray, sampling_rate: int) -> Path:
    """Write a mono float waveform (nominally in [-1, 1]) as a 16-bit PCM WAV file; returns the path."""
    path = Path(path)
    pcm = (np.clip(np.asarray(waveform, np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    try:
        with wave.open(str(path), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(int(sampling_rate))
            f.writeframes(pcm.tobytes())
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}; choose a writable output path") from None
    return path


@dataclass
class SpeechResult:
    """``waveform``: float32 samples at ``sampling_rate``; ``details``: the family's own facts (phonemes, frames,
    the seed...), reported in ``to_dict``."""

    text: str
    waveform: np.ndarray
    sampling_rate: int
    ran: RunInfo
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return len(self.waveform) / self.sampling_rate

    def save(self, path: str | Path) -> Path:
        """Write the speech as a 16-bit WAV file at the model's sample rate."""
        return write_wav(path, self.waveform, self.sampling_rate)

    def to_dict(self) -> dict:
        return {"task": "text-to-speech", "text": self.text, "sampling_rate": self.sampling_rate,
                "samples": int(len(self.waveform)), "duration_s": round(self.duration_s, 4), **self.details,
                "ran": self.ran.to_dict()}
