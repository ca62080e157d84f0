"""ONNX Runtime engine: providers as planned, reporting which providers really loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmedge.errors import InputError, PackageError
from mmedge.runtime.engines.base import EngineSession, engine_message, missing_engine


class OrtSession(EngineSession):
    engine = "onnxruntime"

    def __init__(self, path: Path, options: dict):
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_engine("onnxruntime", "onnxruntime") from None
        self._ort = ort
        requested = list(options.get("providers") or ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        providers = [p for p in requested if p in available]
        self._fallbacks = [{"what": p, "why": f"execution provider not in this onnxruntime build ({ort.__version__})"}
                           for p in requested if p not in available]
        if not providers:
            providers = ["CPUExecutionProvider"]
            self._fallbacks.append({"what": "requested providers", "why": "none available; using CPUExecutionProvider"})
        so = ort.SessionOptions()
        if options.get("intra_op_num_threads"):
            so.intra_op_num_threads = int(options["intra_op_num_threads"])
        if options.get("inter_op_num_threads"):
            so.inter_op_num_threads = int(options["inter_op_num_threads"])
        so.log_severity_level = 3
        if options.get("prepack_weights") is False:  # see runtime.loader._component_options
            so.add_session_config_entry("session.disable_prepacking", "1")
        # ORT's memory pattern pre-plans one block for the shapes of the previous run and allocates it beside the
        # arena's: Whisper tiny.en's encoder held 120 MB more from its second window on (222 -> 342 MB), with no
        # measurable speed gain on the encoder or a decode step. Off unless asked for.
        so.enable_mem_pattern = bool(options.get("memory_pattern", False))
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise PackageError(f"onnxruntime cannot load {path}: {engine_message(e)}; "
                               "the file is damaged or not ONNX: re-export the package") from None
        self._options = {k: v for k, v in options.items()}
        self._output_names = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray], key: str = "") -> dict[str, np.ndarray]:
        try:
            outs = self._session.run(self._output_names, feeds)
        except Exception as e:
            raise InputError(f"onnxruntime rejected the inputs: {engine_message(e)}") from None
        return dict(zip(self._output_names, outs))

    @property
    def info(self) -> dict:
        return {"engine": self.engine, "version": self._ort.__version__,
                "providers": self._session.get_providers(), "options": self._options,
                "fallbacks": list(self._fallbacks)}


def load(path: Path, *, precision: str, options: dict) -> OrtSession:
    return OrtSession(path, options)
