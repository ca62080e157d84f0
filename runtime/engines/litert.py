"""LiteRT engine via ``ai-edge-litert``; ``tflite-runtime`` only as a fallback for float files.

``tflite-runtime`` 2.14 returns wrong numbers without any error on dynamic-int8 transformer files, so
it is refused for int8/int4 artifacts rather than allowed to produce garbage. The interpreter is
single-threaded unless told otherwise, so ``num_threads`` is always passed (default: all cores).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from mmedge.errors import EngineUnavailableError, InputError, PackageError
from mmedge.runtime.engines.base import EngineSession, engine_message

SAFE_ON_TFLITE_RUNTIME = {"fp32", "fp16"}


def _interpreter_class(precision: str) -> tuple[type, str, list[dict]]:
    try:
        from ai_edge_litert.interpreter import Interpreter
        import ai_edge_litert

        return Interpreter, f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '')}".strip(), []
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        raise EngineUnavailableError("engine 'litert' needs 'ai-edge-litert' (or, for float files only, "
                                     "'tflite-runtime'); install it with: pip install 'mmedge[litert]'") from None
    if precision not in SAFE_ON_TFLITE_RUNTIME:
        raise EngineUnavailableError(f"tflite-runtime gives wrong results on {precision} files; install "
                                     "ai-edge-litert (pip install 'mmedge[litert]') or use a fp32/fp16 variant")
    return Interpreter, "tflite-runtime", [{"what": "ai-edge-litert", "why": "not installed; using tflite-runtime"}]


def _delegated_nodes(interpreter) -> int | None:
    """How many nodes a delegate really took (XNNPACK by default). LiteRT applies its default delegate only when
    tensors are first allocated and skips it silently when its CPU check fails (seen under emulation without a
    CPU topology), so the requested option alone says nothing. None when this interpreter cannot tell."""
    interpreter.allocate_tensors()
    details = getattr(interpreter, "_get_ops_details", None)  # the only op listing the Python API offers
    if details is None:
        return None
    return sum(op.get("op_name") == "DELEGATE" for op in details())


class LiteRtSession(EngineSession):
    engine = "litert"

    def __init__(self, path: Path, precision: str, options: dict):
        interpreter_cls, runtime_name, fallbacks = _interpreter_class(precision)
        threads = int(options.get("num_threads") or os.cpu_count() or 1)
        try:
            self._interpreter = interpreter_cls(model_path=str(path), num_threads=threads)
            delegated = _delegated_nodes(self._interpreter)  # before any runner holds tensors (it reallocates)
            # One runner per signature, made up front: a multi-signature file (a static decoder's decode and
            # prefill buckets) shares its weights between them.
            self._runners = {key: self._interpreter.get_signature_runner(key)
                             for key in self._interpreter.get_signature_list()}
        except (ValueError, RuntimeError) as e:
            raise PackageError(f"LiteRT cannot load {path}: {engine_message(e)}; "
                               "the file is damaged or not a .tflite model: re-export the package") from None
        requested = options.get("delegate", "xnnpack")
        if requested == "xnnpack" and delegated == 0:
            fallbacks = [*fallbacks, {"what": "xnnpack", "why": "LiteRT did not apply the XNNPACK delegate (CPU not "
                                                                "recognised); running the reference kernels"}]
        # The interpreter and its signature runners (which share its tensors) are not thread-safe: calls from
        # several threads take turns. An interpreter per thread would hold the weights once per thread.
        self._lock = threading.Lock()
        applied = requested if delegated is None or delegated else "none"  # None: this interpreter cannot tell
        self._info = {"engine": self.engine, "version": runtime_name, "num_threads": threads,
                      "delegate": applied, "delegated_nodes": delegated,
                      "options": dict(options), "fallbacks": fallbacks}

    def run(self, feeds: dict[str, np.ndarray], key: str = "") -> dict[str, np.ndarray]:
        runner = self._runners.get(key) if key else next(iter(self._runners.values()))
        if runner is None:
            raise PackageError(f"this .tflite file has no signature '{key}' (has: {', '.join(self._runners)}); "
                               "re-export the package")
        try:
            with self._lock:
                outs = runner(**feeds)
        except (ValueError, RuntimeError) as e:
            raise InputError(f"LiteRT rejected the inputs: {engine_message(e)}") from None
        return outs  # the signature runner returns fresh arrays the caller owns

    @property
    def info(self) -> dict:
        return dict(self._info)


def load(path: Path, *, precision: str, options: dict) -> LiteRtSession:
    return LiteRtSession(path, precision, options)
