"""ONNX via ``torch.onnx``. optimum-onnx has no export config for these wrapped graphs (CLIP towers with
their projections, decoders with stacked KV-cache inputs), so the family spec's wrapper is exported
directly: the TorchScript exporter first (it keeps named dynamic axes reliably), the dynamo exporter
when the model cannot be traced (transformers 4.57 decoders). Either way the parity check runs at a
second shape, which catches a dimension the exporter silently specialised. Static variants get one
file per signature (e.g. a decoder's ``decode`` and ``prefill_N`` graphs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from mmedge.errors import ExportError
from mmedge.exporter.converters import Converted, ConvertedSignature, contract, file_name, graphs
from mmedge.exporter.converters.onnx_weights import DATA_FILE, share_weights
from mmedge.exporter.families.base import ComponentSpec
from mmedge.exporter.package_writer import out_of_space

OPSET = 18


def _dynamic_axes(spec: ComponentSpec) -> dict[str, dict[int, str]]:
    return {t.name: {i: d for i, d in enumerate(t.dims) if isinstance(d, str)} for t in (*spec.inputs, *spec.outputs)}


def _export_torchscript(spec: ComponentSpec, args: tuple, path: Path, dynamic: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(spec.module, args, str(path), input_names=[t.name for t in spec.inputs],
                          output_names=[t.name for t in spec.outputs],
                          dynamic_axes=_dynamic_axes(spec) if dynamic else None, opset_version=17, dynamo=False)


def _export_dynamo(spec: ComponentSpec, args: tuple, path: Path, dynamic: bool) -> None:
    shapes = None
    if dynamic:
        dims: dict[str, object] = {}
        # A dim named in spec.derived_dims (e.g. past + sequence) is left for torch.export to derive.
        shapes = {t.name: {i: (torch.export.Dim.AUTO if d in spec.derived_dims else dims.setdefault(d, torch.export.Dim(d)))
                           for i, d in enumerate(t.dims) if isinstance(d, str)} or None for t in spec.inputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(spec.module, args, input_names=[t.name for t in spec.inputs],
                                    output_names=[t.name for t in spec.outputs], dynamic_shapes=shapes,
                                    opset_version=OPSET, dynamo=True, verbose=False)
    program.save(str(path))


def export_graph(spec: ComponentSpec, path: Path, sizes: dict[str, int] | None) -> None:
    """One ONNX graph: dynamic when ``sizes`` is None, else fixed at ``sizes``."""
    import onnx

    sample = spec.sample(sizes or spec.export_sizes, 0)
    args = tuple(sample[t.name] for t in spec.inputs)
    exporters = (_export_dynamo,) if spec.needs_dynamo else (_export_torchscript, _export_dynamo)
    errors = []
    for exporter in exporters:
        try:
            exporter(spec, args, path, sizes is None)
            onnx.checker.check_model(str(path))
            return
        except Exception as e:  # each exporter has its own error types; keep the first line of each
            if out_of_space(e):
                raise  # the disk is full: the other exporter would fail too, and staging names the fix
            errors.append(f"{exporter.__name__.removeprefix('_export_')}: {str(e).strip().splitlines()[0][:300]}")
            path.unlink(missing_ok=True)
    raise ExportError(f"ONNX export of component '{spec.name}' failed: {' | '.join(errors)}")


def convert(spec: ComponentSpec, out_dir: Path, *, static: bool) -> Converted:
    """The graphs of one artifact, their weights stored once in a shared data file (``onnx_weights``)."""
    signatures = []
    for name, sizes in graphs(spec, static).items():
        path = out_dir / file_name(name, "onnx")
        export_graph(spec, path, sizes)
        signatures.append(ConvertedSignature(name=name, file=path, inputs=contract(spec.inputs, sizes=sizes),
                                             outputs=contract(spec.outputs, sizes=sizes)))
    data = share_weights([s.file for s in signatures], out_dir / DATA_FILE)
    return Converted(signatures=signatures, extra_files=[data] if data else [])
