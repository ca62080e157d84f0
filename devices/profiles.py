"""Device profiles: what each class of device should try, in which order, read from ``profiles/*.json``.

Profiles are data so that a new device class (or a better ordering measured on real hardware) is a JSON edit,
not a code change. A profile lists *routes*: a (format, engine, options, precisions) recipe such as
"tflite on LiteRT with XNNPACK, fp32 then fp16". The planner walks them in order and matches them against
what a package offers.

Two rules the data relies on (kept here, not repeated in every file):

* ``options`` values of ``None`` for ``num_threads`` / ``intra_op_num_threads`` mean "the cores of the
  machine", resolved at planning time; an explicit number (phones: 4 big cores) is kept as is.
* On ``cpu`` routes the listed precision order is the one for CPUs *without* int8 dot-product instructions;
  when the device has them (``has_int8_dot``: asimddp on Arm, VNNI on x86) the planner moves int8 first.
  That is how one ``x86-cpu`` profile serves machines with and without VNNI, decided at detection.
* ``lean_memory: true`` in a route's options (small-memory boards) asks the runtime to trade a little speed for
  memory where it can: ONNX Runtime sessions then read their weights in place instead of pre-packing a copy
  (``runtime.loader._component_options``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Mapping

from mmedge.errors import UnknownDeviceError

#: engine -> the package format it runs (one each: the engines read their own format only).
FORMAT_OF_ENGINE: Mapping[str, str] = MappingProxyType(
    {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"})
#: engine -> the pip extra of mmedge that installs it.
EXTRA_OF_ENGINE: Mapping[str, str] = MappingProxyType({"onnxruntime": "ort", "openvino": "openvino", "litert": "litert"})
PRECISIONS = ("fp32", "fp16", "int8", "int4")
TARGETS = ("cpu", "gpu", "npu")
THREAD_OPTIONS = ("num_threads", "intra_op_num_threads")


def _freeze(value: Any) -> Any:
    """Read-only view of JSON data, so a cached profile cannot be changed by whoever holds it."""
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain (JSON-serialisable, mutable) copy of frozen profile data."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Route:
    """One way to run a package on a device: a format on an engine with options, precisions in preference order.

    ``static_only`` marks accelerators that compile fixed shapes only (Intel NPU); ``target`` says where the
    work runs (cpu/gpu/npu), which decides whether the int8-dot-product rule applies.
    """

    format: str
    engine: str
    target: str
    options: Mapping[str, Any]
    precisions: tuple[str, ...]
    static_only: bool = False

    @property
    def accelerator(self) -> str:
        """The name a user recognises: the first ORT execution provider, the OpenVINO device or the delegate."""
        if self.engine == "onnxruntime":
            return str(self.options.get("providers", ("CPUExecutionProvider",))[0])
        if self.engine == "openvino":
            return str(self.options.get("device", "CPU"))
        return str(self.options.get("delegate", "cpu"))

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "engine": self.engine, "target": self.target, "options": thaw(self.options),
                "precisions": list(self.precisions), "static_only": self.static_only}


@dataclass(frozen=True)
class DeviceProfile:
    """A class of device: its architecture, its int8/static-shape traits and its ordered routes."""

    name: str
    title: str
    arch: str
    has_int8_dot: bool
    static_shapes: bool
    preferred: tuple[Route, ...]
    notes: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "arch": self.arch, "has_int8_dot": self.has_int8_dot,
                "static_shapes": self.static_shapes, "preferred": [r.to_dict() for r in self.preferred],
                "notes": self.notes}


def _route(d: dict[str, Any], where: str) -> Route:
    engine, fmt = d["engine"], d["format"]
    if FORMAT_OF_ENGINE.get(engine) != fmt:
        raise ValueError(f"{where}: engine '{engine}' does not run format '{fmt}'")
    if d["target"] not in TARGETS or not d["precisions"] or set(d["precisions"]) - set(PRECISIONS):
        raise ValueError(f"{where}: bad target or precisions in {d}")
    return Route(format=fmt, engine=engine, target=d["target"], options=_freeze(d.get("options", {})),
                 precisions=tuple(d["precisions"]), static_only=bool(d.get("static_only", False)))


def _load(name: str, text: str) -> DeviceProfile:
    d = json.loads(text)
    if d["name"] != name:
        raise ValueError(f"profiles/{name}.json declares name '{d['name']}'")
    if d["arch"] not in ("x86_64", "aarch64", "arm64"):
        raise ValueError(f"profiles/{name}.json: unknown arch '{d['arch']}'")
    routes = tuple(_route(r, f"profiles/{name}.json route {i}") for i, r in enumerate(d["preferred"]))
    return DeviceProfile(name=name, title=d["title"], arch=d["arch"], has_int8_dot=bool(d["has_int8_dot"]),
                         static_shapes=bool(d["static_shapes"]), preferred=routes, notes=d.get("notes", ""))


@lru_cache(maxsize=1)
def _all() -> dict[str, DeviceProfile]:
    folder = resources.files(__package__).joinpath("profiles")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    return {f.name[:-5]: _load(f.name[:-5], f.read_text(encoding="utf-8")) for f in files}


def list_profiles() -> list[DeviceProfile]:
    """Every known device profile, sorted by name."""
    return list(_all().values())


def profile(name: str) -> DeviceProfile:
    """The profile called ``name``; ``UnknownDeviceError`` (listing the known names) otherwise."""
    try:
        return _all()[name]
    except KeyError:
        raise UnknownDeviceError(
            f"unknown device '{name}'; known devices: {', '.join(_all())}") from None
