"""A Piper voice's ONNX graph cut where its output length is decided, as VITS is cut (``families/vits.py``).

A Piper voice is VITS exported whole by ``torch.onnx``: text encoder (``enc_p``) and stochastic duration predictor
(``dp``), then the length regulation (``ceil(exp(logw) · x_mask · length_scale)``, the monotonic path, the prior
expanded over the frames) and the prior sample ``z_p = m_p + randn · exp(logs_p) · noise_scale``, then the inverted
flow (``flow``) and HiFi-GAN (``dec``). The cut tensors are found by their producers, not by name:

- ``encoder``: ``input``, ``input_lengths``, ``scales`` + ``duration_noise`` (the duration predictor's
  ``RandomNormalLike`` output, now an input: standard normal, the graph still scales it by ``noise_w``) →
  ``log_duration`` (the ``Exp`` input of the length regulation), ``x_mask``, ``prior_means``, ``prior_log_scales``.
- ``decoder``: ``prior_latents`` (``z_p``, the ``Add`` after the prior's ``RandomNormalLike``) + ``frame_mask``
  (the ``y_mask`` the flow multiplies by) → ``output``.

The dynamic halves are the voice's own nodes (``onnx.utils.Extractor``), unchanged. The fixed-shape halves are
made for PyTorch (``onnx2torch``) so that mmedge's converters (ONNX, OpenVINO, TFLite) can export them:

- input shapes fixed and the shape arithmetic folded by ONNX Runtime's basic optimizer (``onnx2torch`` turns
  ``Shape``/``Reshape`` chains into tensor→list conversions that ``torch.export`` cannot trace);
- the duration flows' rational-quadratic spline, written by ``torch.onnx`` as ``NonZero`` + ``GatherND`` /
  ``ScatterND`` (data-dependent sizes no fixed-shape format has), replaced by one ``mmedge.RationalQuadraticInverse``
  node that ``onnx2torch`` converts to ``families.vits.rational_quadratic_inverse`` (the same spline over the whole
  tensor, selected with ``where``; Piper's and transformers' splines are the same code). ONNX Runtime cannot
  load a custom op, so the spline stands as ``_placeholder`` nodes while it folds, then ``restore_splines``;
- ``Slice``/``Reshape``/``Pad``/``Split``/``Unsqueeze``/scalar ``Gather`` with constant integer operands get them
  as attributes (``_constant_operands``): onnx2torch reads such operands at run time, which ``torch.export``
  makes data-dependent and litert-torch cannot lower; each gets a small module here (``_Slice``, ``_Pad``...);
- graph outputs go through ``Identity`` (onnx2torch returns a multi-output node's whole tuple for them);
- HiFi-GAN over padded frames: the flow masks its padding, but each vocoder convolution would let padded frames
  leak into the last real samples; ``hifigan.FrameMasks`` zeroes the padding before each of them.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from mmedge.errors import ExportError
from mmedge.exporter.families.hifigan import FrameMasks
from mmedge.exporter.families.vits import rational_quadratic_inverse

SPLINE_OP, SPLINE_DOMAIN = "RationalQuadraticInverse", "mmedge"
ENCODER_INPUTS = ("input", "input_lengths", "scales", "duration_noise")
ENCODER_OUTPUTS = ("log_duration", "x_mask", "prior_means", "prior_log_scales")
DECODER_INPUTS = ("prior_latents", "frame_mask")
#: The fixed-shape encoder's tolerance (outputs up to ~7 in size, six attention layers summed in each engine's own
#: order). Measured on joe at 96 ids: TFLite vs PyTorch 1.2e-4, vs the voice's nodes on ONNX Runtime 9.5e-5, and
#: PyTorch itself vs those nodes 6e-5. The decoder keeps 1e-4.
ENCODER_ATOL = 3e-4


@dataclass(frozen=True)
class Cut:
    """The voice graph's tensor names at the cut (keys: our names, see the module doc)."""

    tensors: dict[str, str]


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def find_cut(model: onnx.ModelProto) -> Cut:
    """The cut tensors, found from the single ``Ceil`` (the durations) and the two ``RandomNormalLike`` nodes."""
    graph = model.graph
    made_by = _producers(graph)
    ceils = [n for n in graph.node if n.op_type == "Ceil"]
    noises = [n for n in graph.node if n.op_type == "RandomNormalLike"]
    try:
        (ceil,), (duration_noise, prior_noise) = ceils, noises
        scaled = made_by[ceil.input[0]]                      # exp(logw) * x_mask * length_scale
        masked = made_by[scaled.input[0]]                    # exp(logw) * x_mask
        exp, x_mask = made_by[masked.input[0]], masked.input[1]
        means_t = made_by[prior_noise.input[0]]              # (attn @ m_p^T)^T
        m_p = made_by[made_by[means_t.input[0]].input[1]].input[0]
        add = next(n for n in graph.node if n.op_type == "Add" and n.input[0] == prior_noise.input[0])
        scaled_noise = made_by[add.input[1]]                 # randn * exp(logs_p) * noise_scale
        exp_logs = made_by[made_by[scaled_noise.input[0]].input[1]]
        logs_p = made_by[made_by[made_by[exp_logs.input[0]].input[0]].input[1]].input[0]
        y_mask = _frame_mask(graph, add.output[0])
    except (ValueError, KeyError, StopIteration, IndexError):
        raise ExportError("this Piper voice's graph does not have VITS's length regulation as Piper exports it "
                          "(one Ceil, two RandomNormalLike), where mmedge splits a voice; it cannot be imported") \
            from None
    if exp.op_type != "Exp" or scaled_noise.op_type != "Mul":
        raise ExportError("unexpected nodes where mmedge splits this Piper voice's graph (the Exp of the log "
                          "durations, the prior's noise Mul); it cannot be imported")
    return Cut({"duration_noise": duration_noise.output[0], "log_duration": exp.input[0], "x_mask": x_mask,
                "prior_means": m_p, "prior_log_scales": logs_p, "prior_latents": add.output[0],
                "frame_mask": y_mask})


def _frame_mask(graph: onnx.GraphProto, latents: str) -> str:
    """The frame mask the flow and vocoder use: the tensor not computed from ``latents`` that the most ``Mul``
    nodes computed from ``latents`` multiply by."""
    after, counts = {latents}, {}
    for node in graph.node:
        if any(i in after for i in node.input):
            after.update(node.output)
            if node.op_type == "Mul":
                for i in node.input:
                    if i not in after:
                        counts[i] = counts.get(i, 0) + 1
    return max(counts, key=counts.get)


def _rename(model: onnx.ModelProto, names: dict[str, str]) -> onnx.ModelProto:
    """Rename graph tensors (``old -> new``) everywhere they occur."""
    for node in model.graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    for value in (*model.graph.input, *model.graph.output):
        value.name = names.get(value.name, value.name)
    return model


def extract(model: onnx.ModelProto, cut: Cut, part: str) -> onnx.ModelProto:
    """The ``encoder`` or ``decoder`` half of the voice graph, its cut tensors named as in the module doc."""
    t = cut.tensors
    graph_inputs = [i.name for i in model.graph.input]
    if part == "encoder":
        inputs = [n for n in graph_inputs if n != "sid"][:3] + [t["duration_noise"]]
        outputs = [t[n] for n in ENCODER_OUTPUTS]
    else:
        inputs, outputs = [t["prior_latents"], t["frame_mask"]], [model.graph.output[0].name]
    inputs += ["sid"] if "sid" in graph_inputs else []
    sub = _rename(onnx.utils.Extractor(model).extract_model(inputs, outputs),
                  {t[n]: n for n in (*ENCODER_OUTPUTS, "duration_noise", *DECODER_INPUTS)})
    channels = prior_channels(model, cut)
    f32 = onnx.TensorProto.FLOAT
    declared = {"duration_noise": ("batch_size", 2, "phonemes"), "log_duration": ("batch_size", 1, "phonemes"),
                "x_mask": ("batch_size", 1, "phonemes"), "prior_means": ("batch_size", channels, "phonemes"),
                "prior_log_scales": ("batch_size", channels, "phonemes"),
                "prior_latents": ("batch_size", channels, "frames"), "frame_mask": ("batch_size", 1, "frames")}
    for value in (*sub.graph.input, *sub.graph.output):  # the cut tensors have no type in the voice graph
        if value.name in declared:
            value.CopyFrom(helper.make_tensor_value_info(value.name, f32, declared[value.name]))
    return sub


def prior_channels(model: onnx.ModelProto, cut: Cut) -> int:
    """Channels of the prior: ``m_p, logs_p = split(proj(x) * x_mask)``, half the ``proj`` convolution's outputs."""
    made_by = _producers(model.graph)
    node = made_by[cut.tensors["prior_means"]]
    while node.op_type != "Conv":
        node = made_by.get(node.input[0])
        if node is None:
            raise ExportError("cannot find the prior projection (a Conv) of this Piper voice; it cannot be imported")
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    return int(weight.dims[0]) // 2


def _fixed(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, int]) -> onnx.ModelProto:
    """``model`` with its inputs given ``shapes`` (and, for cut tensors, the element type), shape arithmetic
    folded by ONNX Runtime's basic graph optimizer (standard ONNX ops only)."""
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        if value.name in shapes:
            value.CopyFrom(helper.make_tensor_value_info(value.name, dtypes.get(
                value.name, value.type.tensor_type.elem_type), shapes[value.name]))
    del model.graph.value_info[:]
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    node = _producers(graph).get(name)
    if node is not None and node.op_type == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def replace_splines(model: onnx.ModelProto) -> int:
    """Replace each duration flow's masked spline (``NonZero`` ... ``ScatterND``) by one ``RationalQuadraticInverse``
    node (see the module doc); returns how many were replaced. A region is found from its ``GatherND`` nodes: the
    one gathering the Split half ``x1`` with the inside-interval indices, the widths and heights gathered with the
    same indices, the derivatives (padded, then their edges set by ``ScatterND``), and the ``Concat([x0, x1'])``
    that takes the result."""
    graph = model.graph
    made_by = _producers(graph)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            users.setdefault(i, []).append(node)
    replaced, remove, new_nodes = 0, set(), {}
    for split in [n for n in graph.node if n.op_type == "Split" and len(n.output) == 2]:
        x0, x1 = split.output
        concat = next((n for n in users.get(x0, []) if n.op_type == "Concat" and list(n.input)[:1] == [x0]), None)
        gathers = [n for n in users.get(x1, []) if n.op_type == "GatherND"]
        if concat is None or not gathers:
            continue
        inside = gathers[-1].input[1]  # the outside-interval gather comes first, as Piper's code does it
        same = [n for n in graph.node if n.op_type == "GatherND" and n.input[1] == inside and n.input[0] != x1]
        params = [n.input[0] for n in same]
        derivative = next((p for p in params if made_by[p].op_type == "ScatterND"), None)
        widths_heights = [p for p in params if p != derivative]
        if derivative is None or len(widths_heights) != 2:
            raise ExportError("a duration flow's spline in this Piper voice has an unexpected form; export it "
                              "without --static")
        node = made_by[derivative]
        while node.op_type == "ScatterND":
            node = made_by[node.input[0]]
        if node.op_type != "Pad":
            raise ExportError("a duration flow's spline derivatives are not padded as Piper pads them")
        bounds = [_constant(graph, n.input[1]) for n in graph.node if n.op_type == "LessOrEqual" and n.input[0] == x1]
        if len(bounds) != 1 or bounds[0] is None:
            raise ExportError("cannot read a duration flow's spline tail bound from this Piper voice")
        result = concat.input[1]
        region = _region(graph, made_by, result, stop={x1, *widths_heights, node.input[0]})
        remove |= region
        new_nodes[max(region)] = _placeholder(f"{split.name}/{SPLINE_OP}", x1, widths_heights, node.input[0],
                                              result, float(np.asarray(bounds[0]).reshape(-1)[0]))
        replaced += 1
    if replaced:
        nodes = []
        for index, node in enumerate(graph.node):
            if index in new_nodes:
                nodes.extend(new_nodes[index])
            elif index not in remove:
                nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.append(numpy_helper.from_array(np.asarray([-1], np.int64), f"{SPLINE_OP}/last_axis"))
        _drop_dead(graph)
    return replaced


def _placeholder(name: str, x1: str, widths_heights: list[str], derivatives: str, result: str,
                 tail_bound: float) -> list[onnx.NodeProto]:
    """Standard nodes standing for the spline while ONNX Runtime folds the graph (it cannot load a custom op):
    ``x1 + Σ widths + Σ heights + Σ derivatives`` keeps every input alive and has the result's shape.
    ``restore_splines`` turns them into the ``RationalQuadraticInverse`` node; ``tail_bound`` rides in a name."""
    sums = [helper.make_node("ReduceSum", [t, f"{SPLINE_OP}/last_axis"], [f"{name}/sum{k}"], keepdims=0,
                             name=f"{name}/sum{k}") for k, t in enumerate([*widths_heights, derivatives])]
    adds, last = [], x1
    for k, total in enumerate(s.output[0] for s in sums):
        out = result if k == len(sums) - 1 else f"{name}/add{k}"
        adds.append(helper.make_node("Add", [last, total], [out], name=f"{name}/add{k}|{tail_bound!r}"))
        last = out
    return [*sums, *adds]


def restore_splines(model: onnx.ModelProto) -> int:
    """The ``_placeholder`` nodes (after folding) → one ``mmedge.RationalQuadraticInverse`` node each."""
    graph = model.graph
    made_by = _producers(graph)
    finals = [n for n in graph.node if n.op_type == "Add" and f"/{SPLINE_OP}/add2|" in n.name]
    drop, new = set(), {}
    for final in finals:
        chain = [final, made_by[final.input[0]]]
        chain.append(made_by[chain[1].input[0]])
        sums = [made_by[n.input[1]] for n in reversed(chain)]
        x1 = chain[2].input[0]
        drop |= {id(n) for n in (*chain, *sums)}
        new[id(final)] = helper.make_node(SPLINE_OP, [x1, *(n.input[0] for n in sums)], [final.output[0]],
                                          domain=SPLINE_DOMAIN, name=final.name.split("|")[0],
                                          tail_bound=float(final.name.split("|")[1]))
    nodes = [new.get(id(n), n) for n in graph.node if id(n) in new or id(n) not in drop]
    del graph.node[:]
    graph.node.extend(nodes)
    if finals:
        model.opset_import.append(helper.make_opsetid(SPLINE_DOMAIN, 1))
        _drop_dead(graph)
    return len(finals)


def _region(graph: onnx.GraphProto, made_by: dict, result: str, stop: set[str]) -> set[int]:
    """Indices of the nodes ``result`` depends on, stopping at ``stop`` tensors and at nodes outside the flow."""
    index = {id(n): i for i, n in enumerate(graph.node)}
    prefix = made_by[result].name.rsplit("/", 1)[0] + "/"
    seen, todo = set(), [result]
    while todo:
        name = todo.pop()
        node = made_by.get(name)
        if name in stop or node is None or not node.name.startswith(prefix) or index[id(node)] in seen:
            continue
        seen.add(index[id(node)])
        todo.extend(node.input)
    return seen


def _drop_dead(graph: onnx.GraphProto) -> None:
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


# ----------------------------------------------------------------------------------------------- to PyTorch

@contextlib.contextmanager
def _onnx2torch() -> Iterator[types.ModuleType]:
    """``onnx2torch``, imported even where ``torchvision`` cannot be: onnx2torch imports torchvision only for its
    ``NonMaxSuppression`` and ``RoiAlign`` converters (no voice has them), and PyPI torchvision fails to import
    beside the CPU torch wheel here (design.md). Stand-in modules are visible to that one import, then removed."""
    try:
        import torchvision  # noqa: F401
        stand_in = False
    except Exception:  # ImportError, or torchvision's own RuntimeError against this torch
        stand_in = True
        ops = types.ModuleType("torchvision.ops")
        ops.roi_align = None
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = types.ModuleType("torchvision"), ops
    try:
        import onnx2torch
    except ImportError:
        raise ExportError("fixed-shape Piper variants need onnx2torch: pip install --no-deps onnx2torch==1.5.15") \
            from None
    finally:
        if stand_in:
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.ops", None)
    _register_converters(onnx2torch)
    yield onnx2torch


class _Spline(torch.nn.Module):
    def __init__(self, tail_bound: float):
        super().__init__()
        self.tail_bound = tail_bound

    def forward(self, inputs: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor,
                derivatives: torch.Tensor) -> torch.Tensor:
        return rational_quadratic_inverse(inputs, widths, heights, derivatives, reverse=True,
                                          tail_bound=self.tail_bound)[0]


class _Slice(torch.nn.Module):
    """ONNX ``Slice`` with constant bounds, as plain indexing (a negative step: flip, then a positive step, as
    onnx2torch does it)."""

    def __init__(self, starts: list[int], ends: list[int], axes: list[int], steps: list[int]):
        super().__init__()
        self.index: list[tuple[int, bool, tuple]] = []
        for start, end, axis, step in zip(starts, ends, axes, steps):
            flip = step < 0
            if flip:
                start, end, step = -start - 1, -end - 1, -step
            part = slice(start, min(end, sys.maxsize), step)
            index = (Ellipsis, part, *[slice(None)] * (-axis - 1)) if axis < 0 else (*[slice(None)] * axis, part)
            self.index.append((axis, flip, index))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, flip, index in self.index:
            x = x[index] if not flip else torch.flip(x, [axis])[index]
        return x


class _Reshape(torch.nn.Module):
    """ONNX ``Reshape`` with a constant shape (0 keeps the input's size, as ONNX says)."""

    def __init__(self, shape: list[int]):
        super().__init__()
        self.shape = list(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)])


class _Unsqueeze(torch.nn.Module):
    def __init__(self, axes: list[int]):
        super().__init__()
        self.axes = list(axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = x.dim() + len(self.axes)
        for axis in sorted(a % rank for a in self.axes):
            x = x.unsqueeze(axis)
        return x


class _Split(torch.nn.Module):
    def __init__(self, sizes: list[int], axis: int):
        super().__init__()
        self.sizes, self.axis = list(sizes), axis

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.split(x, self.sizes, dim=self.axis))


class _Select(torch.nn.Module):
    """ONNX ``Gather`` with a constant scalar index."""

    def __init__(self, index: int, axis: int):
        super().__init__()
        self.index, self.axis = index, axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.select(self.axis, self.index)


class _Pad(torch.nn.Module):
    """ONNX ``Pad`` (``[begin_0, ..., begin_n, end_0, ..., end_n]``) with constant pads, as ``F.pad`` (last dim
    first)."""

    def __init__(self, pads: list[int], value: float, mode: str):
        super().__init__()
        half = len(pads) // 2
        self.pads = [p for dim in reversed(range(half)) for p in (pads[dim], pads[dim + half])]
        self.value, self.mode = value, {"edge": "replicate"}.get(mode, mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = list(self.pads)
        while len(pads) > 2 and pads[-2:] == [0, 0]:  # F.pad's reflect/replicate want only the padded dims
            pads = pads[:-2]
        if self.mode == "constant":
            return torch.nn.functional.pad(x, pads, value=self.value)
        return torch.nn.functional.pad(x, pads, mode=self.mode)


def _register_converters(onnx2torch: types.ModuleType) -> None:
    from onnx2torch.node_converters.registry import OperationDescription, _CONVERTER_REGISTRY, add_converter
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    if OperationDescription(domain=SPLINE_DOMAIN, operation_type=SPLINE_OP, version=1) in _CONVERTER_REGISTRY:
        return

    def converter(op: str, make: Callable[[dict], torch.nn.Module]) -> None:
        @add_converter(operation_type=op, version=1, domain=SPLINE_DOMAIN)
        def _convert(node, graph):  # noqa: ANN001 - onnx2torch's converter signature
            return OperationConverterResult(torch_module=make(node.attributes),
                                            onnx_mapping=onnx_mapping_from_node(node))

    converter("Reshape", lambda a: _Reshape(a["shape"]))
    converter("Unsqueeze", lambda a: _Unsqueeze(a["axes"]))
    converter("Split", lambda a: _Split(a["split"], a.get("axis", 0)))
    converter("Gather", lambda a: _Select(a["index"], a.get("axis", 0)))
    converter("Pad", lambda a: _Pad(a["pads"], a["value"], a["mode"]))

    @add_converter(operation_type="Slice", version=1, domain=SPLINE_DOMAIN)
    def _slice(node, graph):  # noqa: ANN001 - onnx2torch's converter signature
        a = node.attributes
        return OperationConverterResult(torch_module=_Slice(a["starts"], a["ends"], a["axes"], a["steps"]),
                                        onnx_mapping=onnx_mapping_from_node(node))

    @add_converter(operation_type=SPLINE_OP, version=1, domain=SPLINE_DOMAIN)
    def _convert(node, graph):  # noqa: ANN001 - onnx2torch's converter signature
        return OperationConverterResult(torch_module=_Spline(float(node.attributes["tail_bound"])),
                                        onnx_mapping=onnx_mapping_from_node(node))


def to_torch(model: onnx.ModelProto) -> torch.fx.GraphModule:
    """The (fixed-shape, spline-restored) half as a PyTorch module returning its outputs in graph order. Each graph
    output gets an ``Identity`` first: onnx2torch returns a multi-output node's whole tuple for an output it makes
    (the cut tensors come from ``Split`` nodes)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for output in model.graph.output:
        inner = f"{output.name}/inner"
        for node in model.graph.node:
            node.output[:] = [inner if o == output.name else o for o in node.output]
            node.input[:] = [inner if i == output.name else i for i in node.input]
        model.graph.node.append(helper.make_node("Identity", [inner], [output.name], name=f"{output.name}/out"))
    _constant_operands(model)
    with _onnx2torch() as onnx2torch:
        return onnx2torch.convert(model).eval()


def _constant_operands(model: onnx.ModelProto) -> None:
    """``Slice``, ``Reshape``, ``Pad``, ``Split``, ``Unsqueeze`` and scalar ``Gather`` nodes whose integer operand
    is a constant → the same op in the ``mmedge`` domain with the operand as an attribute: onnx2torch's modules
    read those tensors at run time (``.numpy()``, ``.tolist()``, ``torch.any(shape == 0)``), which ``torch.export``
    turns into data-dependent scalars that litert-torch cannot lower."""
    graph = model.graph
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        operand = _constant(graph, node.input[1]) if node.input[1] else None
        if operand is None or operand.dtype.kind not in "iu":
            continue
        ints = [int(v) for v in np.asarray(operand).reshape(-1)]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Reshape", "Unsqueeze", "Split"):
            key = {"Reshape": "shape", "Unsqueeze": "axes", "Split": "split"}[node.op_type]
            node.CopyFrom(helper.make_node(node.op_type, node.input[:1], node.output, name=node.name,
                                           domain=SPLINE_DOMAIN, **{key: ints}, **attrs))
            continue
        if node.op_type == "Gather" and operand.ndim == 0:
            node.CopyFrom(helper.make_node("Gather", node.input[:1], node.output, name=node.name,
                                           domain=SPLINE_DOMAIN, index=ints[0], **attrs))
            continue
        if node.op_type == "Pad":
            value = _constant(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if len(node.input) > 2 and node.input[2] and value is None:
                continue
            node.CopyFrom(helper.make_node("Pad", node.input[:1], node.output, name=node.name, domain=SPLINE_DOMAIN,
                                           pads=ints, value=float(value) if value is not None else 0.0,
                                           mode=attrs.get("mode", b"constant").decode()))
            continue
        if node.op_type != "Slice":
            continue
        bounds = [_constant(graph, name) if name else None for name in node.input[1:]]
        if any(b is None for b in bounds[:2]) or any(name and b is None for name, b in zip(node.input[1:], bounds)):
            continue
        starts, ends = bounds[0], bounds[1]
        axes = bounds[2] if len(bounds) > 2 and bounds[2] is not None else np.arange(len(starts))
        steps = bounds[3] if len(bounds) > 3 and bounds[3] is not None else np.ones(len(starts), np.int64)
        node.CopyFrom(helper.make_node("Slice", node.input[:1], node.output, name=node.name, domain=SPLINE_DOMAIN,
                                       starts=[int(v) for v in starts], ends=[int(v) for v in ends],
                                       axes=[int(v) for v in axes], steps=[int(v) for v in steps]))
    if not any(o.domain == SPLINE_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(SPLINE_DOMAIN, 1))


def masked_vocoder(module: torch.nn.Module, rates: list[int]) -> FrameMasks:
    """Frame masks on every HiFi-GAN convolution of a converted decoder (``dec/...`` modules, not ``dec/cond``):
    level 0 before the first upsampler, i after the i-th, found from the converted module names."""
    masks = FrameMasks(rates)
    level, convs = 0, [(n, m) for n, m in module.named_modules()
                       if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and n.startswith("dec/")
                       and not n.startswith("dec/cond")]
    if not convs:
        raise ExportError("no HiFi-GAN convolutions (dec/...) in this Piper voice's decoder")
    for _name, conv in convs:
        masks.add(conv, level)
        if isinstance(conv, torch.nn.ConvTranspose1d):
            level += 1
    return masks


# ------------------------------------------------------------------------------------------ fixed-shape specs

class _Outputs(torch.nn.Module):
    """A converted half with its outputs by name (``ComponentSpec`` wants a dict), the vocoder's convolutions
    masked by ``frame_mask`` when ``masks`` is given."""

    def __init__(self, inner: torch.nn.Module, names: tuple[str, ...], masks: FrameMasks | None = None):
        super().__init__()
        self.inner, self.names, self.masks = inner, names, masks

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.masks.masking(inputs[1]) if self.masks else contextlib.nullcontext():
            out = self.inner(*inputs)
        return dict(zip(self.names, out if isinstance(out, (list, tuple)) else [out]))


def hop_length(model: onnx.ModelProto) -> tuple[list[int], int]:
    """The vocoder's upsampling rates (the ``ConvTranspose`` strides) and their product (samples per frame)."""
    rates = [int(next(a.ints[0] for a in n.attribute if a.name == "strides"))
             for n in model.graph.node if n.op_type == "ConvTranspose"]
    if not rates:
        raise ExportError("no HiFi-GAN upsamplers (ConvTranspose) in this Piper voice's decoder")
    return rates, int(np.prod(rates))


def static_specs(encoder: onnx.ModelProto, decoder: onnx.ModelProto, *, symbols: int, channels: int,
                 max_phonemes: int, max_frames: int) -> list:
    """``ComponentSpec``s of the fixed-shape halves (single-speaker voices): ``max_phonemes`` ids, ``max_frames``
    frames. ``encoder``/``decoder`` are the extracted dynamic halves (``extract``)."""
    from mmedge.exporter.families.base import ComponentSpec, TensorDecl

    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    rates, hop = hop_length(decoder)
    enc = onnx.ModelProto.FromString(encoder.SerializeToString())
    replace_splines(enc)
    enc = _fixed(enc, {"input": (1, max_phonemes), "input_lengths": (1,), "scales": (3,),
                       "duration_noise": (1, 2, max_phonemes)}, {"duration_noise": f32, "input": i64})
    restore_splines(enc)
    dec = _fixed(decoder, {"prior_latents": (1, channels, max_frames), "frame_mask": (1, 1, max_frames)},
                 {"prior_latents": f32, "frame_mask": f32})
    enc_module = _Outputs(to_torch(enc), ENCODER_OUTPUTS).eval()
    dec_inner = to_torch(dec)
    dec_module = _Outputs(dec_inner, ("output",), masked_vocoder(dec_inner, rates)).eval()

    def encoder_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        width = sizes["phonemes"]
        length = max(2, width - 5 - 7 * seed)  # padded, as a short sentence is
        ids = torch.zeros(1, width, dtype=torch.int64)
        ids[0, :length] = torch.randint(1, symbols, (length,), generator=g)
        noise = torch.zeros(1, 2, width)
        noise[..., :length] = torch.randn(1, 2, length, generator=g)
        return {"input": ids, "input_lengths": torch.tensor([length]), "scales": torch.tensor([0.667, 1.0, 0.8]),
                "duration_noise": noise}

    def decoder_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed + 1000)
        frames = sizes["frames"]
        mask = torch.zeros(1, 1, frames)
        mask[..., :max(1, frames - frames // 4 - 9 * seed)] = 1.0
        return {"prior_latents": torch.randn(1, channels, frames, generator=g) * mask, "frame_mask": mask}

    enc_sizes = {"batch": 1, "phonemes": max_phonemes}
    dec_sizes = {"batch": 1, "frames": max_frames, "samples": max_frames * hop}
    return [
        ComponentSpec(
            name="encoder", description="Piper text encoder + stochastic duration predictor (the voice's nodes, "
                                        "through onnx2torch) -> log durations, text mask and the prior",
            module=enc_module,
            inputs=(TensorDecl("input", "int64", ("batch", "phonemes")), TensorDecl("input_lengths", "int64", ("batch",)),
                    TensorDecl("scales", "float32", (3,)),
                    TensorDecl("duration_noise", "float32", ("batch", 2, "phonemes"))),
            outputs=(TensorDecl("log_duration", "float32", ("batch", 1, "phonemes")),
                     TensorDecl("x_mask", "float32", ("batch", 1, "phonemes")),
                     TensorDecl("prior_means", "float32", ("batch", channels, "phonemes")),
                     TensorDecl("prior_log_scales", "float32", ("batch", channels, "phonemes"))),
            sample=encoder_sample, export_sizes=enc_sizes, second_sizes=enc_sizes,
            static_signatures={"default": enc_sizes}, atol=ENCODER_ATOL),
        ComponentSpec(
            name="decoder", description="Piper inverted flow + HiFi-GAN (the voice's nodes, through onnx2torch; "
                                        "padded frames masked) -> waveform",
            module=dec_module,
            inputs=(TensorDecl("prior_latents", "float32", ("batch", channels, "frames")),
                    TensorDecl("frame_mask", "float32", ("batch", 1, "frames"))),
            outputs=(TensorDecl("output", "float32", ("batch", 1, 1, "samples")),),
            sample=decoder_sample, export_sizes=dec_sizes, second_sizes=dec_sizes,
            static_signatures={"default": dec_sizes}, atol=1e-4)]


def truth_check(spec, artifact, files: dict[str, Path], half: onnx.ModelProto) -> dict:  # noqa: ANN001
    """The fixed-shape file against the voice's own nodes (``half``, the extracted dynamic half, unpadded) on ONNX
    Runtime: the real (unpadded) part of every output within ``spec.atol``."""
    import onnxruntime as ort

    from mmedge.exporter.parity import ENGINE_OF_FORMAT, REFERENCE_OPTIONS
    from mmedge.runtime.engines.base import open_session
    from mmedge.runtime.runner import ComponentRunner

    engine = ENGINE_OF_FORMAT[artifact.format]
    runner = ComponentRunner(spec.name, artifact, {rel: open_session(engine, path, precision="fp32",
                                                                      options=REFERENCE_OPTIONS.get(engine))
                                                   for rel, path in files.items()})
    truth = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    checks = []
    for seed in (0, 1):
        sample = {k: v.numpy() for k, v in spec.sample(spec.static_signatures["default"], seed).items()}
        got = runner(**sample)
        if spec.name == "encoder":
            n = int(sample["input_lengths"][0])
            feed = {**sample, "input": sample["input"][:, :n], "duration_noise": sample["duration_noise"][..., :n]}
            expected = dict(zip([o.name for o in truth.get_outputs()], truth.run(None, feed)))
            diffs = {k: float(np.abs(got[k][..., :n] - v).max()) for k, v in expected.items()}
        else:
            n = int(sample["frame_mask"].sum())
            feed = {"prior_latents": sample["prior_latents"][..., :n], "frame_mask": sample["frame_mask"][..., :n]}
            expected = truth.run(None, feed)[0]
            diffs = {"output": float(np.abs(got["output"][..., :expected.shape[-1]] - expected).max())}
        checks.append({"seed": seed, "real_length": n, "max_abs_diff": diffs,
                       "passed": all(d <= spec.atol for d in diffs.values())})
    record = {"reference": "the voice's own nodes (unpadded) on onnxruntime", "engine": engine,
              "tolerance": spec.atol, "checks": checks, "passed": all(c["passed"] for c in checks)}
    if not record["passed"]:
        from mmedge.errors import ParityError

        raise ParityError(f"{spec.name} {artifact.format}/{artifact.variant} differs from the voice's own graph "
                          f"beyond {spec.atol}: {checks}")
    return record
