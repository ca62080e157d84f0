"""Per-file engine options that depend on the package and the machine, not only on the device plan.

The planner (``mmedge.devices``) knows routes and precisions; some accelerators also need facts about the file
being loaded: TensorRT wants shape profiles built from the artifact's inputs and the manifest's limits, engine
and timing caches per package and component, and DLA only where the board has one; the Intel NPU wants the
static shapes it will compile and a blob cache. ``file_options`` adds them, per signature file, just before the
loader opens a session; the engine modules only translate options into their engine's API.

Anything an accelerator asked for but cannot get here (DLA on an Orin Nano) goes into the options' ``fallbacks``
list, which the engine reports with its own, so ``ran.fallbacks`` says it.
"""

from __future__ import annotations

from typing import Any

from mmedge.runtime.accelerators.context import FileContext
from mmedge.runtime.accelerators.openvino_npu import openvino_options
from mmedge.runtime.accelerators.tensorrt import tensorrt_options
from mmedge.runtime.manifest import Artifact, Signature

__all__ = ["FileContext", "file_options"]


def file_options(engine: str, options: dict[str, Any], artifact: Artifact, signature: Signature,
                 context: FileContext) -> dict[str, Any]:
    """``options`` plus what this file needs on its accelerator (unchanged for plain CPU routes)."""
    if engine == "onnxruntime" and "TensorrtExecutionProvider" in (options.get("providers") or ()):
        return tensorrt_options(options, artifact, signature, context)
    if engine == "openvino":
        return openvino_options(options, signature, context)
    return options
