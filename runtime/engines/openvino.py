"""OpenVINO engine. The inference precision is a user-visible choice (``INFERENCE_PRECISION_HINT``):
OpenVINO's CPU plugin defaults to bf16 on CPUs with AVX512-BF16, which breaks parity with the other
engines, so mmedge defaults to f32 unless the plan or the user asks otherwise.

The NPU compiles fixed shapes only: its files must be static in the manifest (a dynamic one is refused, naming
``--static``), and an IR whose inputs are still dynamic is reshaped to the manifest's static contract before
compiling. A missing NPU driver and an NPU compile error are told apart in the message, since the fixes differ
(install the driver / re-export or report the op); both raise ``EngineUnavailableError`` so the loader falls
back to the plan's next route and records why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmedge.devices.detect import intel_npu_node
from mmedge.errors import EngineUnavailableError, InputError, PackageError
from mmedge.runtime.engines.base import EngineSession, cache_folder, engine_message, missing_engine

DEFAULT_PRECISION_HINT = "f32"
#: where this machine's /dev/accel is looked for (tests point it at a fake root).
DEVICE_ROOT = "/"


def _unavailable(device: str, available: list[str]) -> EngineUnavailableError:
    have = ", ".join(available) or "none"
    if device.split(".")[0] == "NPU":
        node, _ = intel_npu_node(DEVICE_ROOT)
        if node:
            why = (f"the NPU is not in OpenVINO's devices ({have}) although /{node} exists: the driver's user-space "
                   "part (level-zero, NPU compiler) is missing or older than this OpenVINO; update the Intel NPU "
                   "driver (linux-npu-driver)")
        else:
            why = (f"no /dev/accel node and OpenVINO lists no NPU ({have}): install the Intel NPU driver "
                   "(linux-npu-driver) and add your user to the 'render' group")
        return EngineUnavailableError(why)
    return EngineUnavailableError(f"OpenVINO device '{device}' is not available here (available: {have}); "
                                  "install its driver or run on CPU")


def _static_contract(path: Path, shapes: dict[str, list]) -> dict[str, list[int]]:
    """The manifest's input shapes for an NPU file; a dynamic one is an error naming the re-export."""
    dynamic = {name: shape for name, shape in shapes.items() if any(isinstance(d, str) for d in shape)}
    if dynamic:
        named = ", ".join(f"{n} {s}" for n, s in dynamic.items())
        raise EngineUnavailableError(f"the NPU compiles static shapes only and {path.name} has dynamic inputs "
                                     f"({named}): re-export with `mmedge export MODEL OUT --static` and run its "
                                     "-static variant")
    return shapes


def _reshape_to(model: Any, path: Path, shapes: dict[str, list[int]]) -> bool:
    """Give dynamic IR inputs the manifest's static shapes; True when a reshape was needed."""
    new = {}
    for port in model.inputs:
        name = port.get_any_name()
        expected = shapes.get(name)
        if expected is None:
            raise PackageError(f"{path.name} has input '{name}' that the manifest does not list; re-export the package")
        partial = port.get_partial_shape()
        if partial.is_dynamic:
            new[name] = expected
        elif [int(d) for d in partial.to_shape()] != expected:
            raise PackageError(f"{path.name} input '{name}' is {list(partial.to_shape())}, the manifest says "
                               f"{expected}; re-export the package")
    if new:
        model.reshape(new)
    return bool(new)


class OpenVinoSession(EngineSession):
    engine = "openvino"

    def __init__(self, path: Path, options: dict):
        try:
            import openvino as ov
        except ImportError:
            raise missing_engine("openvino", "openvino") from None
        self._ov = ov
        device = str(options.get("device", "CPU"))
        npu = device.split(".")[0] == "NPU"
        config = {k: str(v) for k, v in options.items() if k.isupper()}
        if device.startswith("CPU") or device.startswith("GPU"):
            config.setdefault("INFERENCE_PRECISION_HINT", DEFAULT_PRECISION_HINT)
        shapes = _static_contract(path, options.get("input_shapes") or {}) if npu else {}
        core = ov.Core()
        available = list(core.available_devices)
        if device.split(".")[0] not in {d.split(".")[0] for d in available} and device != "AUTO":
            raise _unavailable(device, available)
        if "CACHE_DIR" in config:  # accelerators.openvino_npu: only once the device is known to be here
            cache_folder(config["CACHE_DIR"])
        try:
            model = core.read_model(str(path))
        except Exception as e:
            raise PackageError(f"OpenVINO cannot read {path}: {engine_message(e)}; "
                               "the IR (.xml/.bin) is damaged: re-export the package") from None
        self._reshaped = _reshape_to(model, path, shapes) if shapes else False
        try:
            self._compiled = core.compile_model(model, device, config)
        except Exception as e:
            what = f"the NPU compiler rejected {path.name}" if npu else f"OpenVINO could not compile {path.name} for {device}"
            raise EngineUnavailableError(f"{what}: {engine_message(e)}") from None
        self._request = self._compiled.create_infer_request()
        # An InferRequest is not thread-safe (the compiled model is): each call takes an idle request from this
        # pool, or a new one when every request is busy, so one session serves several threads at once (at most
        # one request per concurrent caller). list.pop/append are atomic. With one caller ``_request`` is the
        # only request, so the profiler reads its performance counters there.
        self._idle = [self._request]
        # Names from the read model: compiling can fuse away a last no-op node (Swin2SR's final crop to the full
        # size), and the compiled port then carries the producer's name too, which get_any_name() may return.
        self._outputs = [(o, m.get_any_name()) for o, m in zip(self._compiled.outputs, model.outputs)]
        self._device, self._config = device, config
        self._fallbacks = list(options.get("fallbacks", ()))

    def run(self, feeds: dict[str, np.ndarray], key: str = "") -> dict[str, np.ndarray]:
        try:
            request = self._idle.pop()
        except IndexError:
            request = self._compiled.create_infer_request()
        try:
            # share_inputs: the arrays are contiguous and of the right dtype (ComponentRunner ensures it) and
            # the call is synchronous, so OpenVINO may read them in place.
            result = request.infer(feeds, share_inputs=True)
        except Exception as e:
            raise InputError(f"OpenVINO rejected the inputs: {engine_message(e)}") from None
        finally:
            self._idle.append(request)
        # infer() copies outputs out of the request by default (share_outputs=False): the caller owns them.
        return {name: result[port] for port, name in self._outputs}

    @property
    def info(self) -> dict:
        try:
            executed = list(self._compiled.get_property("EXECUTION_DEVICES"))
        except Exception:
            executed = [self._device]
        return {"engine": self.engine, "version": self._ov.get_version(), "device": self._device,
                "execution_devices": executed, "options": dict(self._config), "reshaped_to_manifest": self._reshaped,
                "fallbacks": list(self._fallbacks)}


def load(path: Path, *, precision: str, options: dict) -> OpenVinoSession:
    return OpenVinoSession(path, options)
