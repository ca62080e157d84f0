"""OpenVINO engine. The inference precision is a user-visible choice (``INFERENCE_PRECISION_HINT``):
OpenVINO's CPU plugin defaults to bf16 on CPUs with AVX512-BF16, which breaks parity with the other
engines, so mmedge defaults to f32 unless the plan or the user asks otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmedge.errors import EngineUnavailableError, InputError, PackageError
from mmedge.runtime.engines.base import EngineSession, engine_message, missing_engine

DEFAULT_PRECISION_HINT = "f32"


class OpenVinoSession(EngineSession):
    engine = "openvino"

    def __init__(self, path: Path, options: dict):
        try:
            import openvino as ov
        except ImportError:
            raise missing_engine("openvino", "openvino") from None
        self._ov = ov
        device = str(options.get("device", "CPU"))
        config = {k: str(v) for k, v in options.items() if k.isupper()}
        if device.startswith("CPU") or device.startswith("GPU"):
            config.setdefault("INFERENCE_PRECISION_HINT", DEFAULT_PRECISION_HINT)
        core = ov.Core()
        if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices} and device != "AUTO":
            raise EngineUnavailableError(f"OpenVINO device '{device}' is not available here "
                                         f"(available: {', '.join(core.available_devices)}); install its driver "
                                         "or run on CPU")
        try:
            model = core.read_model(str(path))
        except Exception as e:
            raise PackageError(f"OpenVINO cannot read {path}: {engine_message(e)}; "
                               "the IR (.xml/.bin) is damaged: re-export the package") from None
        try:
            self._compiled = core.compile_model(model, device, config)
        except Exception as e:
            raise EngineUnavailableError(f"OpenVINO could not compile {path.name} for {device}: "
                                         f"{engine_message(e)}") from None
        self._request = self._compiled.create_infer_request()
        self._outputs = [(o, o.get_any_name()) for o in self._compiled.outputs]
        self._device, self._config = device, config

    def run(self, feeds: dict[str, np.ndarray], key: str = "") -> dict[str, np.ndarray]:
        try:
            # share_inputs: the arrays are contiguous and of the right dtype (ComponentRunner ensures it) and
            # the call is synchronous, so OpenVINO may read them in place.
            result = self._request.infer(feeds, share_inputs=True)
        except Exception as e:
            raise InputError(f"OpenVINO rejected the inputs: {engine_message(e)}") from None
        # infer() copies outputs out of the request by default (share_outputs=False): the caller owns them.
        return {name: result[port] for port, name in self._outputs}

    @property
    def info(self) -> dict:
        try:
            executed = list(self._compiled.get_property("EXECUTION_DEVICES"))
        except Exception:
            executed = [self._device]
        return {"engine": self.engine, "version": self._ov.get_version(), "device": self._device,
                "execution_devices": executed, "options": dict(self._config), "fallbacks": []}


def load(path: Path, *, precision: str, options: dict) -> OpenVinoSession:
    return OpenVinoSession(path, options)
