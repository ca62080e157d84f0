"""OpenVINO IR via ``ov.convert_model`` + ``ov.save_model``, from the ONNX graph of the same component:
converting the torch module directly loses the input names (they become numbers), and starting from
the ONNX graph keeps one traced graph behind both formats. Static signatures are reshaped to their
fixed sizes (what the NPU plugin needs). Weights stay fp32 (``compress_to_fp16=False``); fp16 is a
compression variant, chosen explicitly."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mmedge.errors import ExportError
from mmedge.exporter.converters import Converted, ConvertedSignature, contract, file_name, graphs
from mmedge.exporter.converters import onnx as onnx_converter
from mmedge.exporter.families.base import ComponentSpec
from mmedge.exporter.package_writer import out_of_space


def convert(spec: ComponentSpec, out_dir: Path, *, static: bool, onnx_files: dict[str, Path] | None = None) -> Converted:
    """``onnx_files``: signature -> ONNX file already exported for this component and shape mode."""
    import openvino as ov

    result = Converted(signatures=[])
    with tempfile.TemporaryDirectory(prefix="mmedge-ov-") as tmp:
        for name, sizes in graphs(spec, static).items():
            source = (onnx_files or {}).get(name)
            if source is None:
                source = Path(tmp) / file_name(name, "onnx")
                onnx_converter.export_graph(spec, source, sizes)
            path = out_dir / file_name(name, "xml")
            try:
                model = ov.convert_model(str(source))
                if sizes is not None:
                    model.reshape({t.name: list(t.shape(sizes)) for t in spec.inputs})
                ov.save_model(model, str(path), compress_to_fp16=False)
            except Exception as e:
                if out_of_space(e):
                    raise  # staging names the fix
                raise ExportError(f"OpenVINO conversion of component '{spec.name}' failed: "
                                  f"{str(e).strip().splitlines()[0][:300]}") from None
            result.signatures.append(ConvertedSignature(name=name, file=path, inputs=contract(spec.inputs, sizes=sizes),
                                                        outputs=contract(spec.outputs, sizes=sizes)))
            result.extra_files.append(path.with_suffix(".bin"))
    return result
