"""``describe()``: everything ``mmedge devices`` shows, as one JSON-able dict (detection, engines, profiles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .detect import available_engines, detect
from .profiles import list_profiles


def describe(root: str | Path = "/") -> dict[str, Any]:
    """The detected device with its evidence, the installed engines and every profile, for the CLI to print."""
    detected = detect(root)
    return {"root": str(root), "detected": detected.to_dict(), "profile": detected.device_profile().to_dict(),
            "engines": available_engines(), "profiles": [p.to_dict() for p in list_profiles()]}
