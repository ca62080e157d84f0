"""OpenVINO options for accelerator devices: the NPU's static input shapes and compiled-blob cache.

The NPU compiles a graph for fixed shapes, and compiling takes seconds to minutes: ``CACHE_DIR`` lets only the
first load pay it (GPU kernels are cached the same way). ``input_shapes`` carries the manifest's static contract
to the engine, which checks the IR against it (and reshapes an IR whose inputs are still dynamic).
``PERFORMANCE_HINT`` and ``NPU_COMPILER_TYPE`` are checked here so a typo is a usage error naming the choices,
not a compile failure that silently falls back to the CPU.
"""

from __future__ import annotations

from typing import Any

from mmedge.errors import UsageError
from mmedge.runtime.accelerators.context import FileContext
from mmedge.runtime.manifest import Signature

CACHED_DEVICES = ("NPU", "GPU")
CHOICES = {"PERFORMANCE_HINT": ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"),
           "NPU_COMPILER_TYPE": ("DRIVER", "PLUGIN")}


def openvino_options(options: dict[str, Any], signature: Signature, context: FileContext) -> dict[str, Any]:
    """``options`` plus ``CACHE_DIR`` (NPU, GPU) and ``input_shapes`` (NPU); unchanged for the CPU."""
    device = str(options.get("device", "CPU")).split(".")[0]
    if device not in CACHED_DEVICES:
        return options
    for key, allowed in CHOICES.items():
        if key in options and str(options[key]).upper() not in allowed:
            raise UsageError(f"OpenVINO option {key}={options[key]} is not one of {', '.join(allowed)}")
    out = {k: (str(v).upper() if k in CHOICES else v) for k, v in options.items()}
    out.setdefault("CACHE_DIR", str(context.cache_dir(options, "openvino")))
    if device == "NPU":
        out["input_shapes"] = {t.bound_name: list(t.shape) for t in signature.inputs}
    return out
