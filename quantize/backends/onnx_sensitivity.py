"""How much quantization error each quantized node of an ONNX graph adds by itself: the measure the sensitivity
loop ranks nodes by to choose which to keep in float.

The measure, per node: the node's replacement in the quantized graph (its quantize/dequantize and integer or
int4 nodes, found by walking back from the node's output, whose name the quantizers keep) is cut out as a graph
of its own and fed the *fp32* graph's activations at its inputs; its output is compared with the fp32 node's:

    error = sum over feeds ||y_quantized - y_fp32||^2 / sum over feeds ||y_fp32||^2

(the noise-to-signal power ratio: 1e-4 is an SNR of 40 dB). Feeding fp32 inputs isolates the node: error that
earlier nodes let through does not count against it, which comparing both whole graphs would do (the last
nodes would always look worst). A node left in float (excluded) adds none: 0.0 without running it. For static
QDQ the node's share is the quantization of its inputs and weights (its output's requantization belongs to the
node reading it). In fp16 graphs every node is measured, its inputs cast to fp16 where the graph has them so.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mmedge.errors import ExportError, UsageError
from mmedge.quantize.backends import onnx_graph


def _session(model_or_path):
    import onnxruntime as ort

    source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _dtype(name: str, types: dict[str, int], values: dict[str, np.ndarray], half: bool) -> np.dtype:
    """The dtype of tensor ``name`` in the quantized graph: as its value info says, else as in fp32 (or fp16 for
    float tensors of an fp16 graph, whose inputs and outputs alone stay fp32 and have value info)."""
    from onnx import helper

    if types.get(name):
        return helper.tensor_dtype_to_np_dtype(types[name])
    dtype = values[name].dtype
    return np.dtype(np.float16) if half and dtype == np.float32 else dtype


def _cut(qmodel, loc: onnx_graph.Local, types: dict[str, int], values: dict[str, np.ndarray], half: bool):
    """``loc`` as a session of its own, and the numpy dtype of each input (as the quantized graph has it)."""
    import onnx
    from onnx import helper

    dtypes = {name: _dtype(name, types, values, half) for name in loc.inputs}
    inits = {i.name: i for i in qmodel.graph.initializer}
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtypes[name]), None)
              for name in loc.inputs]
    graph = helper.make_graph(loc.nodes, "local", inputs, [onnx.ValueInfoProto(name=loc.output)],
                              [inits[name] for name in loc.initializers])
    model = helper.make_model(graph, opset_imports=qmodel.opset_import, ir_version=qmodel.ir_version)
    return _session(model), dtypes


def _with_outputs(model, names: list[str], tmp: Path) -> str:
    """``model`` (changed in place) also outputting the tensors ``names``, saved in ``tmp``."""
    import onnx

    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)
    path = tmp / "fp32.onnx"
    onnx_graph.save(model, path)
    return str(path)


def layer_errors(fp32: str | Path, quantized: str | Path, calibration: list[dict[str, np.ndarray]],
                 layers: list[str]) -> dict[str, float]:
    """The error each node of ``layers`` (names in ``fp32``, as ``layers()`` lists them) adds in ``quantized``,
    measured over the ``calibration`` feeds (see the module docstring). Higher is worse; 0.0 for nodes left in
    float."""
    import onnx
    from onnx import TensorProto

    if not calibration:
        raise UsageError("layer_errors needs calibration feeds to run both graphs on")
    ref, qmodel = onnx.load(str(fp32)), onnx.load(str(quantized))  # external weights read from their folders
    nodes = {n.name: n for n in ref.graph.node}
    unknown = [name for name in layers if name not in nodes]
    if unknown:
        raise UsageError(f"no node {', '.join(unknown[:5])} in {Path(fp32).name}; give names as layers() lists them")
    stop, producers = onnx_graph.activations(ref), {o: n for n in qmodel.graph.node for o in n.output}
    found = {name: onnx_graph.local(qmodel, nodes[name].output[0], stop, producers) for name in layers}
    lost = [name for name, loc in found.items() if loc is None]
    if lost:
        raise ExportError(f"cannot tell what nodes {', '.join(lost[:5])} became in {Path(quantized).name} (their "
                          "output tensors are renamed or far from their inputs); was it quantized from this fp32 "
                          "graph?")
    half = any(t.data_type == TensorProto.FLOAT16 for t in qmodel.graph.initializer)  # fp16: every node changed
    measured = {name: loc for name, loc in found.items() if half or loc.quantized}
    graph_inputs = {i.name for i in ref.graph.input}
    wanted = list(dict.fromkeys(t for loc in measured.values() for t in [*loc.inputs, loc.output]
                                if t not in graph_inputs))
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*qmodel.graph.value_info, *qmodel.graph.input, *qmodel.graph.output]}
    noise = dict.fromkeys(measured, 0.0)
    signal = dict.fromkeys(measured, 0.0)
    cuts: dict = {}
    with tempfile.TemporaryDirectory(prefix="mmedge-sensitivity-") as tmp:
        reference = _session(_with_outputs(ref, wanted, Path(tmp)))
        for feed in calibration:
            values = {**feed, **dict(zip(wanted, reference.run(wanted, feed)))}
            for name, loc in measured.items():
                if name not in cuts:
                    cuts[name] = _cut(qmodel, loc, types, values, half)
                session, dtypes = cuts[name]
                with np.errstate(over="ignore"):  # fp16 inputs: the graph's own casts saturate the same way
                    inputs = {n: values[n].astype(dt, copy=False) for n, dt in dtypes.items()}
                (got,) = session.run([loc.output], inputs)
                want = values[loc.output].astype(np.float64)
                noise[name] += float(((got.astype(np.float64) - want) ** 2).sum())
                signal[name] += float((want ** 2).sum())
    errors = dict.fromkeys(layers, 0.0)
    for name in measured:
        errors[name] = noise[name] / signal[name] if signal[name] else (np.inf if noise[name] else 0.0)
    return errors
