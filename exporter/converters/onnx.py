"""ONNX via ``torch.onnx``. optimum-onnx has no export config for these wrapped towers (CLIP with its
projections), so the family spec's wrapper is exported directly: the TorchScript exporter first (it
keeps named dynamic axes reliably), the dynamo exporter when the model cannot be traced. Either way the
parity check runs at a second shape, which catches a dimension the exporter silently specialised."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from mmedge.errors import ExportError
from mmedge.exporter.converters import Converted, contract, sizes_for
from mmedge.exporter.families.base import ComponentSpec

OPSET = 17


def _dynamic_axes(spec: ComponentSpec) -> dict[str, dict[int, str]]:
    return {t.name: {i: d for i, d in enumerate(t.dims) if isinstance(d, str)} for t in (*spec.inputs, *spec.outputs)}


def _export_torchscript(spec: ComponentSpec, args: tuple, path: Path, static: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(spec.module, args, str(path), input_names=[t.name for t in spec.inputs],
                          output_names=[t.name for t in spec.outputs],
                          dynamic_axes=None if static else _dynamic_axes(spec), opset_version=OPSET, dynamo=False)


def _export_dynamo(spec: ComponentSpec, args: tuple, path: Path, static: bool) -> None:
    dims: dict[str, torch.export.Dim] = {}
    shapes = None
    if not static:
        shapes = {t.name: {i: dims.setdefault(d, torch.export.Dim(d)) for i, d in enumerate(t.dims)
                           if isinstance(d, str)} or None for t in spec.inputs}
    program = torch.onnx.export(spec.module, args, input_names=[t.name for t in spec.inputs],
                                output_names=[t.name for t in spec.outputs], dynamic_shapes=shapes,
                                opset_version=max(OPSET, 18), dynamo=True, verbose=False)
    program.save(str(path))


def convert(spec: ComponentSpec, path: Path, *, static: bool) -> Converted:
    import onnx

    sample = spec.sample(sizes_for(spec, static), 0)
    args = tuple(sample[t.name] for t in spec.inputs)
    errors = []
    for exporter in (_export_torchscript, _export_dynamo):
        try:
            exporter(spec, args, path, static)
            onnx.checker.check_model(str(path))
            break
        except Exception as e:  # each exporter has its own error types; keep the first line of each
            errors.append(f"{exporter.__name__.removeprefix('_export_')}: {str(e).strip().splitlines()[0][:300]}")
            path.unlink(missing_ok=True)
    else:
        raise ExportError(f"ONNX export of component '{spec.name}' failed: {' | '.join(errors)}")
    static_sizes = spec.static_sizes if static else None
    return Converted(file=path, extra_files=[], inputs=contract(spec.inputs, static_sizes=static_sizes),
                     outputs=contract(spec.outputs, static_sizes=static_sizes))
