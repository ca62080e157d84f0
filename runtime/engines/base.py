"""The one small session interface every engine module implements, and the factory that picks a module.

Engine modules are imported lazily here, so importing ``mmedge.runtime`` never imports an engine the
device does not have; a missing engine becomes an ``EngineUnavailableError`` naming the pip extra.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from mmedge.errors import EngineUnavailableError, UsageError

ENGINES = {"onnxruntime": "ort", "openvino": "openvino", "litert": "litert"}  # engine -> pip extra
FORMAT_OF_ENGINE = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"}


class EngineSession(ABC):
    """A loaded model file on one engine. Feeds and results use the engine's own tensor names."""

    engine: str

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray], key: str = "") -> dict[str, np.ndarray]:
        """Run entry point ``key`` once ("" = the file's only one); returned arrays are owned by the caller."""

    @property
    @abstractmethod
    def info(self) -> dict:
        """What really runs: engine and version, providers/device/delegate, options, fallbacks."""


def open_session(engine: str, path: str | Path, *, precision: str = "fp32", options: dict | None = None) -> EngineSession:
    """Load ``path`` on ``engine`` with ``options`` (the planner's dict for that engine)."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}'; choose one of: {', '.join(ENGINES)}")
    module = importlib.import_module(f"mmedge.runtime.engines.{engine}")
    return module.load(Path(path), precision=precision, options=dict(options or {}))


def cache_folder(path: str | Path) -> None:
    """Create an accelerator's cache folder (``accelerators.context.FileContext.cache_dir``) just before the engine
    uses it: only then, so that a run which falls back to the CPU writes nothing."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the cache folder {path} ({e.strerror}); pass options "
                         "cache_dir=A_WRITABLE_FOLDER or set MMEDGE_CACHE_DIR") from None


def engine_message(error: BaseException, limit: int = 300) -> str:
    """An engine's exception text on one line (OpenVINO's first line is only a source location)."""
    return " ".join(str(error).split())[:limit]


def missing_engine(engine: str, package: str) -> EngineUnavailableError:
    return EngineUnavailableError(
        f"engine '{engine}' needs the Python package '{package}', which is not installed; "
        f"install it with: pip install 'mmedge[{ENGINES[engine]}]'")
