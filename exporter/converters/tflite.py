"""TFLite via ``litert-torch`` (no TensorFlow needed). TFLite graphs are always fixed-shape: one file
per component with one signature per static entry point (a decoder's ``decode`` and ``prefill_N``
buckets share the weights), taking int32 where the spec says int64 (token ids): LiteRT kernels and
mobile delegates expect int32 indices. Family wrappers return dicts, so outputs keep their names."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch

from mmedge.errors import ExportError
from mmedge.exporter.converters import Converted, ConvertedSignature, contract
from mmedge.exporter.families.base import ComponentSpec
from mmedge.exporter.package_writer import check_room, out_of_space

INT_TO_TFLITE = {"int64": "int32"}


@contextlib.contextmanager
def _quiet():
    """litert-torch prints progress lines for every pass; keep the CLI's output readable."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(io.StringIO()):
        yield


def _int32(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.int32) if v.dtype == torch.int64 else v for k, v in sample.items()}


#: A TFLite file is one FlatBuffer, whose 32-bit offsets cap it at 2 GiB (weights included).
FLATBUFFER_LIMIT = 2**31
#: room a .tflite file needs beyond its weights (graph, signatures; a tiny model's is ~60 kB)
GRAPH_BYTES = 1 << 20


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers, each tensor counted once (tied weights share storage)."""
    seen: dict[int, int] = {}
    for t in (*module.parameters(), *module.buffers()):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def convert(spec: ComponentSpec, out_dir: Path) -> Converted:
    import litert_torch

    size = weight_bytes(spec.module)
    if size >= FLATBUFFER_LIMIT:  # fail in a second, not after minutes of conversion ending in a FlatBuffer error
        raise ExportError(f"component '{spec.name}' has {size / 2**30:.1f} GiB of weights, over TFLite's 2 GiB file "
                          "limit (FlatBuffers): export it with --formats onnx,openvino")
    path = out_dir / "model.tflite"
    check_room(out_dir, size + GRAPH_BYTES)  # a failed write aborts the converter's process: check before
    try:
        with _quiet():
            converter = litert_torch
            for name, sizes in spec.static_signatures.items():
                converter = converter.signature(name, spec.module, sample_kwargs=_int32(spec.sample(sizes, 0)))
            converter.convert().export(str(path))
    except Exception as e:
        if out_of_space(e):
            raise  # staging names the fix
        raise ExportError(f"TFLite conversion of component '{spec.name}' failed: "
                          f"{str(e).strip().splitlines()[0][:300]}") from None
    return Converted(signatures=[
        ConvertedSignature(name=name, file=path, engine_key=name,
                           inputs=contract(spec.inputs, sizes=sizes, dtype_map=INT_TO_TFLITE),
                           outputs=contract(spec.outputs, sizes=sizes))
        for name, sizes in spec.static_signatures.items()])
