"""ONNX Runtime dynamic int8: weights quantized offline (per tensor, signed int8), activations quantized at run
time by the graph itself, so no calibration data is needed. The quantizer is onnxruntime's own
(``onnxruntime.quantization.quantize_dynamic``); this module only decides which ops it touches and writes the
result into a package as a new variant, atomically, next to the variants already there.

Only the MatMul family is quantized (MatMul, and Gemm with constant weights, which onnxruntime rewrites to
MatMulInteger + Add): ORT's dynamic ConvInteger kernels are slower than its float Conv on CPUs, so
convolutional models want static int8 (QDQ with calibration) instead, which the advisor says when Conv dominates.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

from mmedge.errors import ExportError, UsageError
from mmedge.exporter.package_writer import commit, staging
from mmedge.runtime.manifest import Artifact, Component
from mmedge.runtime.package import open_package

#: The op types dynamic int8 is asked to quantize (Gemm comes along as MatMul; see the module docstring).
DYNAMIC_OPS = ("MatMul", "Attention", "LSTM")


def quantize_file(src: Path, dst: Path) -> None:
    """Write the dynamic-int8 form of the ONNX graph ``src`` (external weights resolved from its folder) to ``dst``
    with its weights inside (int8 weights are a quarter of the size, far from ONNX's 2 GB protobuf limit)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        quantize_dynamic(src, dst, op_types_to_quantize=list(DYNAMIC_OPS), weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True})
    except Exception as e:  # onnxruntime raises plain exceptions (ValueError, RuntimeError, onnx errors)
        raise ExportError(f"onnxruntime could not quantize {src.name} to dynamic int8: {e}") from e


def _copy(src: Path, dst: Path) -> None:
    """A real copy: onnx refuses external weights with several hard links (its guard against link attacks)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _quantized(component: str, art: Artifact, src_root: Path, stage: Path, variant: str) -> Artifact:
    """The int8 twin of the fp32 ONNX artifact ``art``: each graph file quantized to ``<component>/onnx-<variant>/``."""
    renamed = {}
    for rel in dict.fromkeys([art.file, *(s.file for s in art.signatures.values())]):
        new = f"{component}/onnx-{variant}/{Path(rel).name}"
        quantize_file(src_root / rel, stage / new)
        renamed[rel] = new
    signatures = {name: replace(sig, file=renamed[sig.file]) for name, sig in art.signatures.items()}
    return replace(art, variant=variant, precision="int8", file=renamed[art.file], signatures=signatures,
                   extra_files=(), parity={"quantization": {"method": "onnxruntime dynamic", "weights": "int8 per tensor",
                                                            "activations": "uint8 at run time",
                                                            "op_types": list(DYNAMIC_OPS)}})


def add_dynamic_int8(package: str | Path, out_dir: str | Path, *, variant: str = "int8",
                     log: Callable[[str], None] | None = None) -> Path:
    """Write ``package`` plus a dynamic-int8 ONNX variant of every component to ``out_dir`` (which may be the
    package itself: the new package replaces it only once complete)."""
    pkg = open_package(package)
    manifest = pkg.manifest
    if variant in {v for _, v, _, _ in manifest.variants()}:
        raise UsageError(f"the package already has a variant '{variant}'; pick another name")
    sources = {name: c.find("onnx", "fp32") for name, c in manifest.components.items()}
    missing = [name for name, art in sources.items() if art is None]
    if missing:
        raise UsageError(f"components {', '.join(missing)} have no dynamic fp32 ONNX file to quantize; "
                         "export the package with the onnx format (mmedge export --formats onnx,...)")
    with staging(out_dir) as stage:
        for rel in manifest.files:
            _copy(pkg.path(rel), stage / rel)
        components = {}
        for name, comp in manifest.components.items():
            if log:
                log(f"dynamic int8: {name}")
            art = _quantized(name, sources[name], pkg.root, stage, variant)
            components[name] = Component(name=comp.name, description=comp.description,
                                         artifacts=(*comp.artifacts, art))
        return commit(stage, out_dir, replace(manifest, components=components))
