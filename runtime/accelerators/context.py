"""What per-file options need to know about the package and the machine: a cache key, the component, the
manifest's shape limits and the detected device (for DLA)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedge.devices import DetectedDevice, detect
from mmedge.runtime.package import Package


@dataclass(frozen=True)
class FileContext:
    """``package``: the cache key (package folder name + a digest of its files, so a re-export gets fresh
    caches); ``limits``: ``max_positions`` / ``max_cache_len`` (``generation.cache``) and ``text_length``
    (``preprocessing.text.max_length``) where the manifest states them."""

    package: str
    component: str
    limits: dict[str, int] = field(default_factory=dict)
    detected: DetectedDevice | None = None

    @classmethod
    def of(cls, package: Package, component: str, detected: DetectedDevice | None) -> FileContext:
        m = package.manifest
        digest = hashlib.sha256("".join(f"{k}={v};" for k, v in sorted(m.files.items())).encode()).hexdigest()
        cache = m.generation.get("cache") or {}
        limits = {k: int(cache[k]) for k in ("max_positions", "max_cache_len") if isinstance(cache.get(k), int)}
        text_length = (m.preprocessing.get("text") or {}).get("max_length")
        if isinstance(text_length, int):
            limits["text_length"] = text_length
        return cls(package=f"{package.root.resolve().name}-{digest[:12]}", component=component, limits=limits,
                   detected=detected)

    def device(self) -> DetectedDevice:
        """The detected device: the one the loader had, else this machine's (only DLA needs it)."""
        return self.detected if self.detected is not None else detect()

    def cache_dir(self, options: dict[str, Any], kind: str) -> Path:
        """``<cache root>/<kind>/<package>/<component>``. The root is the ``cache_dir`` option, else
        ``$MMEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmedge`` or ``~/.cache/mmedge``. Not created here: the
        engine creates it (``engines.base.cache_folder``) only when the accelerator really runs, so a plan that
        falls back to the CPU writes nothing."""
        root = options.get("cache_dir") or os.environ.get("MMEDGE_CACHE_DIR") or Path(
            os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmedge"
        return Path(root).expanduser() / kind / self.package / self.component
