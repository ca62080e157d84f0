"""The result every speech-recognition pipeline returns (Whisper, CTC), so callers and the CLI treat them alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmedge.runtime.loader import RunInfo


@dataclass
class TranscriptionResult:
    text: str
    chunks: list[dict] = field(default_factory=list)  # {"start_s", "end_s", "text"[, "language"]} per window
    ran: RunInfo | None = None

    def to_dict(self) -> dict:
        return {"task": "automatic-speech-recognition", "text": self.text, "chunks": self.chunks,
                "ran": self.ran.to_dict() if self.ran else None}
