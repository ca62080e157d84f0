"""OpenVINO IR via ``ov.convert_model`` + ``ov.save_model``, from the ONNX graph of the same component:
converting the torch module directly loses the input names (they become numbers), and starting from
the ONNX graph keeps one traced graph behind both formats. Static variants are reshaped to the spec's
fixed sizes (what the NPU plugin needs). Weights stay fp32 (``compress_to_fp16=False``); fp16 is a
compression variant, chosen explicitly."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mmedge.errors import ExportError
from mmedge.exporter.converters import Converted, contract
from mmedge.exporter.converters import onnx as onnx_converter
from mmedge.exporter.families.base import ComponentSpec


def convert(spec: ComponentSpec, path: Path, *, static: bool, onnx_file: Path | None = None) -> Converted:
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="mmedge-ov-") as tmp:
        if onnx_file is None:
            onnx_file = onnx_converter.convert(spec, Path(tmp) / "model.onnx", static=static).file
        try:
            model = ov.convert_model(str(onnx_file))
            if static:
                model.reshape({t.name: list(t.shape(spec.static_sizes)) for t in spec.inputs})
            ov.save_model(model, str(path), compress_to_fp16=False)
        except Exception as e:
            raise ExportError(f"OpenVINO conversion of component '{spec.name}' failed: "
                              f"{str(e).strip().splitlines()[0][:300]}") from None
    static_sizes = spec.static_sizes if static else None
    return Converted(file=path, extra_files=[path.with_suffix(".bin")],
                     inputs=contract(spec.inputs, static_sizes=static_sizes),
                     outputs=contract(spec.outputs, static_sizes=static_sizes))
