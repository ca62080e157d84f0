"""Detection: which device profile fits this machine, read from files under an overridable root.

Everything comes from plain files (``proc/device-tree/model`` and ``compatible``, ``etc/nv_tegra_release``,
``proc/cpuinfo``, ``dev/accel/accel*``) so that tests and ``mmedge devices --root DIR`` can point at a fake root, and so that
detection never loads a driver. Engines are only *looked up* (``importlib.util.find_spec``), never imported:
importing onnxruntime or openvino costs seconds and may fail loudly on a half-installed machine.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from .profiles import DeviceProfile, profile

#: cpu features that change a plan (int8 dot product, fp16/bf16 arithmetic, vector width).
FEATURES_OF_INTEREST = frozenset({
    "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",   # x86 `flags`
    "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2",                   # Arm `Features`
})
INT8_DOT_FEATURES = frozenset({"asimddp", "avx512_vnni", "avx_vnni", "amx_int8"})
#: engine -> the modules that provide it, first found wins. tflite_runtime is reported on its own:
#: it returns wrong numbers on dynamic-int8 files, so the planner treats it as a restricted LiteRT.
ENGINE_MODULES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "litert": ("ai_edge_litert",),
                  "tflite_runtime": ("tflite_runtime",)}


@dataclass
class DetectedDevice:
    """What detection found: the profile name, the machine's cores and features, and the evidence for it."""

    profile: str
    arch: str
    cores: int | None                      # None: unknown (fake root without cpuinfo); plan() then uses os.cpu_count()
    features: tuple[str, ...]              # sorted, only FEATURES_OF_INTEREST
    has_int8_dot: bool
    model: str = ""                        # the board's own name, when a file gave one
    dla_cores: int = 0                     # Jetson deep-learning accelerators TensorRT may use (Orin NX / AGX)
    evidence: dict[str, str] = field(default_factory=dict)    # file (relative to root) -> what it said
    notes: list[str] = field(default_factory=list)

    def device_profile(self) -> DeviceProfile:
        """The profile with ``has_int8_dot`` taken from this machine's CPU rather than the class default."""
        return replace(profile(self.profile), has_int8_dot=self.has_int8_dot)

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "arch": self.arch, "cores": self.cores, "features": list(self.features),
                "has_int8_dot": self.has_int8_dot, "model": self.model, "dla_cores": self.dla_cores, "evidence": dict(self.evidence),
                "notes": list(self.notes)}


def available_engines() -> dict[str, bool]:
    """Which engines are installed (onnxruntime, openvino, litert, tflite_runtime), without importing them."""
    def found(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):      # a broken install or a module stubbed in sys.modules
            return False
    return {engine: any(found(m) for m in modules) for engine, modules in ENGINE_MODULES.items()}


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_bytes().replace(b"\0", b"").decode("utf-8", "replace").strip()
    except OSError:
        return None


def _cpuinfo(text: str) -> tuple[str | None, set[str], int, str]:
    """(arch, features of interest, processor count, `Model` line) from /proc/cpuinfo."""
    arch, feats, cores, model = None, set(), 0, ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            cores += 1
        elif key in ("flags", "Features"):
            arch = "x86_64" if key == "flags" else "aarch64"
            feats |= set(value.split()) & FEATURES_OF_INTEREST
        elif key == "Model":
            model = value
    return arch, feats, cores, model


def _board(model: str, tegra: str | None) -> tuple[str | None, str | None]:
    """(profile, note) from the device-tree model / Tegra release; (None, None) when neither names a board."""
    pi = re.search(r"Raspberry Pi (?:Compute Module )?(\d)", model)
    if pi:
        gen = int(pi.group(1))
        if gen in (4, 5):
            return f"rpi{gen}", None
        return "rpi4", f"'{model}' has no profile of its own; using rpi4 (the Pi without int8 dot product)"
    if tegra is not None or "jetson" in model.lower() or "nvidia" in model.lower():
        if "orin" in model.lower():
            return "jetson-orin", None
        return "jetson-orin", f"'{model or 'Jetson'}' is not an Orin; using jetson-orin (TensorRT/CUDA/CPU routes)"
    return None, None


def jetson_dla_cores(model: str, compatible: str) -> tuple[int, str]:
    """(DLA cores, module name) of a Jetson Orin from its device-tree model and compatible strings.

    AGX Orin and Orin NX 16GB have two DLA v2 cores, Orin NX 8GB (module p3767-0001) one, Orin Nano none: the
    Nano's module is an Orin NX with the DLAs fused off, so TensorRT must not be asked for DLA there.
    """
    lower = model.lower()
    if "nano" in lower:
        return 0, "Orin Nano"
    if "agx" in lower:
        return 2, "AGX Orin"
    if "orin nx" in lower:
        return (1, "Orin NX 8GB") if "p3767-0001" in compatible else (2, "Orin NX")
    return 0, "unknown Orin module"


def intel_npu_node(root: str | Path = "/") -> tuple[str | None, str | None]:
    """The first /dev/accel node that is (or may be) an Intel NPU, and its driver name when sysfs says it.

    Other accel drivers (AMD XDNA...) are skipped. The OpenVINO engine uses it too, to tell "no driver at all"
    from "driver present but OpenVINO does not list the NPU".
    """
    root = Path(root)
    for node in sorted((root / "dev" / "accel").glob("accel*")):
        driver = root / "sys" / "class" / "accel" / node.name / "device" / "driver"
        name = os.path.basename(os.path.realpath(driver)) if driver.exists() else None
        if name in (None, "intel_vpu"):
            return f"dev/accel/{node.name}", name
    return None, None


def detect(root: str | Path = "/", *, openvino_devices: Sequence[str] | None = None) -> DetectedDevice:
    """Detect the device profile of the machine whose filesystem is at ``root`` (``/`` for this machine).

    ``openvino_devices`` (``ov.Core().available_devices``, from a caller that has OpenVINO loaded anyway) is
    more evidence for an Intel NPU: an NPU OpenVINO lists counts even where ``/dev/accel`` cannot be seen.
    Detection itself never imports OpenVINO (seconds of import, and it may fail on a half-installed driver).
    """
    root = Path(root)
    live = root.resolve() == Path("/").resolve()
    evidence: dict[str, str] = {}
    notes: list[str] = []

    model = _read(root, "proc/device-tree/model") or ""
    if model:
        evidence["proc/device-tree/model"] = model
    tegra = _read(root, "etc/nv_tegra_release")
    if tegra is not None:
        evidence["etc/nv_tegra_release"] = tegra.splitlines()[0] if tegra else "(empty)"

    cpuinfo = _read(root, "proc/cpuinfo")
    arch, feats, cores, cpu_model = _cpuinfo(cpuinfo) if cpuinfo else (None, set(), 0, "")
    if cpuinfo:
        evidence["proc/cpuinfo"] = f"{arch or 'unknown arch'}, {cores} processors, features: {' '.join(sorted(feats)) or 'none of interest'}"
    model = model or cpu_model
    if live:
        arch = arch or {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if usable and (not cores or usable < cores):
            evidence["os"] = f"{usable} usable cores (affinity/cpu_count)"
            cores = usable

    name, note = _board(model, tegra)
    dla = 0
    if name == "jetson-orin":
        compatible = _read(root, "proc/device-tree/compatible") or ""
        dla, module = jetson_dla_cores(model, compatible)
        evidence["jetson module"] = f"{module}: {dla} DLA core{'s' * (dla != 1)}" + ("" if dla else " (TensorRT on the GPU only)")
    if name is None:
        npu_node, driver = intel_npu_node(root) if arch in (None, "x86_64") else (None, None)
        ov_npu = any(d.split(".")[0] == "NPU" for d in openvino_devices or ())
        if npu_node or ov_npu:
            name = "intel-npu"
            if npu_node:
                evidence[npu_node] = f"accel device, driver {driver}" if driver else "accel device (driver unknown: assumed Intel NPU)"
            if ov_npu:
                evidence["openvino"] = f"available devices: {', '.join(openvino_devices or ())}"
        elif live and sys.platform == "darwin" and arch == "aarch64":
            name, note = "ios", "macOS on Apple silicon: using the ios profile (CoreML EP first)"
        elif arch == "x86_64":
            name = "x86-cpu"
        elif arch is None:
            name, note = "x86-cpu", "nothing under the root says what this machine is; assumed x86-cpu"
        else:
            # A generic Arm (or other) board: the Pi profiles are the plain-CPU routes (LiteRT/XNNPACK, then ORT
            # CPU); pick the one whose int8 trait matches this CPU.
            name = "rpi5" if "asimddp" in feats else "rpi4"
            note = f"no profile for this {arch} board; using {name} (CPU routes, int8 dot product: {'yes' if name == 'rpi5' else 'no'})"
    if note:
        notes.append(note)

    prof = profile(name)
    if cpuinfo and arch in ("x86_64", "aarch64"):
        int8_dot = bool(feats & INT8_DOT_FEATURES)
    else:
        int8_dot = prof.has_int8_dot
        notes.append(f"cpu features unknown; int8 dot product taken from the {name} profile ({int8_dot})")
    if not cores:
        notes.append("core count unknown (no proc/cpuinfo); plans use this machine's os.cpu_count()")
    return DetectedDevice(profile=name, arch=arch or prof.arch, cores=cores or None, features=tuple(sorted(feats)),
                          has_int8_dot=int8_dot, model=model, dla_cores=dla, evidence=evidence, notes=notes)
