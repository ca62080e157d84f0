"""TFLite via ``litert-torch`` (no TensorFlow needed). TFLite graphs are always fixed-shape here (the
spec's static sizes) and take int32 where the spec says int64 (token ids): LiteRT kernels and mobile
delegates expect int32 indices. The family wrappers return dicts, so signature outputs keep their names."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch

from mmedge.errors import ExportError
from mmedge.exporter.converters import Converted, contract
from mmedge.exporter.families.base import ComponentSpec

INT_TO_TFLITE = {"int64": "int32"}


@contextlib.contextmanager
def _quiet():
    """litert-torch prints progress lines for every pass; keep the CLI's output readable."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(io.StringIO()):
        yield


def convert(spec: ComponentSpec, path: Path, *, static: bool = True) -> Converted:
    import litert_torch

    sample = spec.sample(spec.static_sizes, 0)
    sample = {k: v.to(torch.int32) if v.dtype == torch.int64 else v for k, v in sample.items()}
    try:
        with _quiet():
            edge = litert_torch.convert(spec.module, sample_kwargs=sample)
            edge.export(str(path))
    except Exception as e:
        raise ExportError(f"TFLite conversion of component '{spec.name}' failed: "
                          f"{str(e).strip().splitlines()[0][:300]}") from None
    return Converted(file=path, extra_files=[],
                     inputs=contract(spec.inputs, static_sizes=spec.static_sizes, dtype_map=INT_TO_TFLITE),
                     outputs=contract(spec.outputs, static_sizes=spec.static_sizes))
