"""ONNX Runtime engine: providers as planned (with their options), reporting which providers really loaded.

Three ways an accelerator can be missing, each reported in ``info["fallbacks"]``, none silent:
the provider is not in this onnxruntime build (PyPI wheels have the CPU EP only: the message says which build
to install); creating the session on it fails (TensorRT cannot build an engine for an op or shape: the next
provider in the list is tried, down to the CPU); or ORT drops it while creating the session (its CUDA/TensorRT
libraries did not load: ORT only logs that, so the registered providers are compared with the requested ones).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import InputError, PackageError
from mmedge.runtime.engines.base import EngineSession, cache_folder, engine_message, missing_engine

CPU = "CPUExecutionProvider"
NVIDIA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def install_hint(provider: str) -> str:
    """How to get ``provider``: NVIDIA's builds for Jetson (aarch64), ``onnxruntime-gpu`` on x86."""
    if provider not in NVIDIA_PROVIDERS:
        return "install an onnxruntime build that includes it"
    if platform.machine().lower() in ("aarch64", "arm64"):
        return ("on Jetson, replace the PyPI wheel (CPU only on aarch64) with NVIDIA's onnxruntime-gpu build for "
                "your JetPack release: `pip uninstall onnxruntime`, then the wheel linked from the Jetson Zoo "
                "(elinux.org/Jetson_Zoo#ONNX_Runtime) or `pip install onnxruntime-gpu` from NVIDIA's Jetson pip "
                "index for that JetPack (Jetson AI Lab)")
    return ("`pip uninstall onnxruntime && pip install onnxruntime-gpu` (CUDA 12 build; TensorRT also needs "
            "NVIDIA's TensorRT libraries on the library path)")


def session_options(ort: Any, options: dict) -> Any:
    """The SessionOptions mmedge runs with (also what bench/runtime_overhead.py's bare session uses, so that the
    two sides differ only in the runtime's own code)."""
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
    return so


class OrtSession(EngineSession):
    engine = "onnxruntime"

    def __init__(self, path: Path, options: dict):
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_engine("onnxruntime", "onnxruntime") from None
        self._ort = ort
        self._fallbacks: list[dict] = list(options.get("fallbacks", ()))
        requested = list(options.get("providers") or [CPU])
        available = ort.get_available_providers()
        self._fallbacks += [{"what": p, "why": f"execution provider not in this onnxruntime build ({ort.__version__}); "
                                               f"{install_hint(p)}"} for p in requested if p not in available]
        chain = [p for p in requested if p in available]
        if not chain:
            chain = [CPU]
            self._fallbacks.append({"what": "requested providers", "why": f"none available; using {CPU}"})
        for provider in chain:  # TensorRT's engine and timing caches (accelerators.tensorrt), only if it can run
            for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
                if folder := (options.get("provider_options") or {}).get(provider, {}).get(key):
                    cache_folder(folder)
        self._session = self._create(path, session_options(ort, options), chain,
                                     options.get("provider_options") or {})
        self._options = {k: v for k, v in options.items() if k != "fallbacks"}
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _create(self, path: Path, so: Any, chain: list[str], provider_options: dict) -> Any:
        """A session on ``chain``; when one fails on its first provider, again without it, down to the last."""
        for i, first in enumerate(chain[:-1]):
            try:
                return self._open(path, so, chain[i:], provider_options)
            except Exception as e:  # ORT raises its own Fail/InvalidGraph/EPFail types
                self._fallbacks.append({"what": first, "why": f"session creation failed for {path.name}: "
                                                              f"{engine_message(e)}; trying {chain[i + 1]}"})
        try:
            return self._open(path, so, chain[-1:], provider_options)
        except Exception as e:
            raise PackageError(f"onnxruntime cannot load {path}: {engine_message(e)}; "
                               "the file is damaged or not ONNX: re-export the package") from None

    def _open(self, path: Path, so: Any, providers: list[str], provider_options: dict) -> Any:
        session = self._ort.InferenceSession(
            str(path), sess_options=so, providers=[(p, dict(provider_options.get(p, {}))) for p in providers])
        registered = session.get_providers()
        self._fallbacks += [{"what": p, "why": "onnxruntime did not register it (its CUDA/cuDNN/TensorRT "
                                               "libraries failed to load: they must match this onnxruntime build)"}
                            for p in providers if p not in registered]
        return session

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
