"""The resumable state of a distillation run, written atomically.

One file, ``checkpoint.pt``: the student's weights, the optimizer's state, the step, the torch RNG state (dropout),
the early-stopping bookkeeping and the evaluation history, plus a fingerprint of everything that changes what a
step computes (spec, inputs, student shapes), so a checkpoint of a different run is refused instead of resumed.
It is written to a temporary file in the same folder and moved over the old one with ``os.replace``, so a run
killed while saving leaves the previous checkpoint intact. It is read back with ``weights_only=True`` (no
arbitrary unpickling): it holds only tensors, numbers, strings, lists and dicts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mmedge.errors import UsageError

FILE = "checkpoint.pt"
VERSION = 1


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"version": VERSION, **state}, f)
        os.replace(tmp, folder / FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return folder / FILE


def load_checkpoint(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """The saved state, or None when ``folder`` has no checkpoint; a checkpoint of another run or version is a
    ``UsageError`` naming the fix."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a damaged checkpoint
        raise UsageError(f"cannot read the checkpoint {str(path)!r} ({exc}); delete it to start over") from None
    if state.get("version") != VERSION or state.get("fingerprint") != fingerprint:
        raise UsageError(f"{str(path)!r} is the checkpoint of a different distillation run (other teacher, student, "
                         "inputs or training settings); give a new checkpoint folder or delete this one to start over")
    return state
