"""Embedding tables in quantized ONNX graphs: one quantized copy of a tied table, and lookups that dequantize only
the rows they gather. Applied by the ONNX backend after the quantizer has written its graph.

Tied tables: Whisper's decoder, GPT-2 and Llama with ``tie_word_embeddings`` read one table [vocab, hidden] in the
token-embedding ``Gather`` and in the LM head, which the exporter writes as ``Gemm(x, table, transB=1)``
(``exporter.converters.onnx_weights.untie_transposed`` turns torch's ``MatMul(x, Transpose(table))`` into that).
ONNX Runtime's quantizers store such a table twice, once per use (measured on Whisper tiny.en, dynamic int8: a
uint8 copy for the Gather and a transposed int8 copy for the head, 40 MB of the decoder's 49.8 MB). Here the
quantizer is told to leave the lookup alone, quantizes the head as usual, and the lookup is then rebuilt on the
head's quantized weight, with ops ONNX Runtime's CPU provider runs:

- dynamic int8 (head: ``MatMulInteger`` on the transposed table [hidden, vocab], one scale per vocab entry):
  ``Gather(axis=1)`` of the int8 columns -> ``Cast`` -> ``Mul`` by the gathered scales (``Sub`` of the gathered zero
  points for uint8 weights) -> ``Einsum("h...->...h")`` (the hidden axis last, for ids of any rank). The head is
  the quantizer's own, so its speed is unchanged; the lookup gets one scale per row where ORT's own Gather
  quantization has one per table.
- int4 (head: ``MatMulNBits``, B [vocab, k_blocks, blob]): ``com.microsoft.GatherBlockQuantized`` (gather_axis 0,
  quantize_axis 1, the head's block size and bits, the head's scales [vocab, k_blocks]) reading B through a
  ``Reshape`` to [vocab, hidden * bits / 8], the layout onnxruntime-genai's "shared embeddings" use.
  MatMulNBits refuses a 2-D B, so the file holds B once and ONNX Runtime constant-folds the Reshape when the
  session loads (a second copy in memory, not on disk).

Lookups of dequantized constants: static QDQ int8 (a tied table, quantized once for the head's DequantizeLinear)
and NNCF's int8 embeddings leave ``Gather(DequantizeLinear(table))``, which dequantizes the whole table on every
run (12 ms per call for Whisper's 51864 x 384 table on one core, more than a whole fp32 decode step). Such a
lookup is rewritten to gather the integer rows first and dequantize only those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from mmedge.quantize.backends import onnx_graph

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Tie:
    """A table of the fp32 graph read by an embedding lookup (``gather``) and an LM head (``head``, a Gemm)."""

    table: str
    gather: str
    head: str
    head_output: str


@dataclass(frozen=True)
class _Weight:
    """A quantized 2-D weight as stored in the graph: integer data whose ``vocab_axis`` indexes the table's rows,
    its scales and zero points (per row: 1-D; per tensor: a scalar), all initializers."""

    data: str
    scale: str
    zero_point: str | None
    vocab_axis: int


def ties(model) -> list[Tie]:
    """The tables of ``model`` read by exactly a ``Gather`` (axis 0) and a ``Gemm`` (transB=1, the form the
    quantizers rewrite to MatMul)."""
    users: dict[str, list] = {}
    for node in model.graph.node:
        for name in dict.fromkeys(node.input):
            users.setdefault(name, []).append(node)
    found = []
    for init in model.graph.initializer:
        nodes = users.get(init.name, [])
        if len(init.dims) != 2 or len(nodes) != 2:
            continue
        gather = next((n for n in nodes if n.op_type == "Gather" and n.input[0] == init.name
                       and onnx_graph.attr(n, "axis", 0) == 0), None)
        head = next((n for n in nodes if n.op_type == "Gemm" and n.input[1] == init.name
                     and onnx_graph.attr(n, "transB", 0) == 1 and onnx_graph.rewritten_gemm(n)), None)
        if gather is not None and head is not None:
            found.append(Tie(init.name, gather.name, head.name, head.output[0]))
    return found


class _Graph:
    """Edits to one graph: its initializers by name, new constants, a node replaced by a list of nodes at its
    place (topological order kept), initializers dropped once nothing reads them."""

    def __init__(self, model):
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits[name] = numpy_helper.from_array(value, name)
        self.graph.initializer.append(self.inits[name])
        return name

    def replace(self, node, nodes: list) -> None:
        at = list(self.graph.node).index(node)
        self.graph.node.remove(node)
        for k, new in enumerate(nodes):
            self.graph.node.insert(at + k, new)

    def drop_unused(self, names: Iterable[str]) -> None:
        """Remove the initializers ``names`` that no node reads any more (nor the graph outputs)."""
        read = {i for n in self.graph.node for i in n.input} | {o.name for o in self.graph.output}
        for name in names:
            if name in self.inits and name not in read:
                self.graph.initializer.remove(self.inits.pop(name))

    def nbytes(self, names: Iterable[str | None]) -> int:
        return sum(onnx_graph.tensor_bytes(self.inits[n]) for n in names if n)


def _lookup(g: _Graph, weight: _Weight, node) -> list:
    """Nodes computing ``node``'s embedding rows (same name and output) from ``weight``'s integer rows: gather,
    cast, subtract the zero point (where one is non-zero), scale; ``vocab_axis`` 1 moves the hidden axis last."""
    from onnx import helper

    p, ids = node.name, node.input[1]
    scale = g.inits[weight.scale]
    per_row = len(scale.dims) == 1 and scale.dims[0] > 1
    nodes = [helper.make_node("Gather", [weight.data, ids], [f"{p}/rows"], name=f"{p}/rows", axis=weight.vocab_axis),
             helper.make_node("Cast", [f"{p}/rows"], [f"{p}/float"], name=f"{p}/float", to=scale.data_type)]

    def per_id(name: str, tag: str) -> str:
        """``name`` (a row parameter) for each id, broadcastable against the gathered rows."""
        if not per_row:
            return name
        nodes.append(helper.make_node("Gather", [name, ids], [f"{p}/{tag}"], name=f"{p}/{tag}", axis=0))
        if weight.vocab_axis == 1:  # rows [hidden, *ids]: the [*ids] values broadcast as they are
            return f"{p}/{tag}"
        last = f"{p}/last_axis"
        if last not in g.inits:
            g.constant(last, np.array([-1], np.int64))
        nodes.append(helper.make_node("Unsqueeze", [f"{p}/{tag}", last], [f"{p}/{tag}_1"], name=f"{p}/{tag}_1"))
        return f"{p}/{tag}_1"

    rows = f"{p}/float"
    if weight.zero_point and np.any(g.array(weight.zero_point)):
        nodes.append(helper.make_node("Cast", [per_id(weight.zero_point, "zero_point")], [f"{p}/zero"],
                                      name=f"{p}/zero", to=scale.data_type))
        nodes.append(helper.make_node("Sub", [rows, f"{p}/zero"], [f"{p}/centred"], name=f"{p}/centred"))
        rows = f"{p}/centred"
    factor = per_id(weight.scale, "scale")
    if weight.vocab_axis == 0:
        return [*nodes, helper.make_node("Mul", [rows, factor], [node.output[0]], name=p)]
    return [*nodes, helper.make_node("Mul", [rows, factor], [f"{p}/scaled"], name=f"{p}/scaled"),
            helper.make_node("Einsum", [f"{p}/scaled"], [node.output[0]], name=p, equation="h...->...h")]


def _int8_lookup(g: _Graph, loc: onnx_graph.Local, rows: int, width: int, node) -> tuple[list, list] | None:
    """Dynamic int8: (the lookup nodes, the head's weight initializers) for a head computed by MatMulInteger on
    B [hidden, vocab] and scaled by one float initializer (a Mul of the head reads it), else None."""
    matmul = next((n for n in loc.nodes if n.op_type == "MatMulInteger"), None)
    if matmul is None or matmul.input[1] not in g.inits or list(g.inits[matmul.input[1]].dims) != [width, rows]:
        return None
    scales = [i for n in loc.nodes if n.op_type == "Mul" for i in n.input if i in g.inits and g.inits[i].data_type
              in (1, 10, 16)]  # float, float16, bfloat16
    if len(scales) != 1 or list(g.inits[scales[0]].dims) not in ([], [1], [rows]):
        return None
    zero = matmul.input[3] if len(matmul.input) > 3 and matmul.input[3] in g.inits else None
    if zero is not None and list(g.inits[zero].dims) != list(g.inits[scales[0]].dims):
        return None
    weight = _Weight(matmul.input[1], scales[0], zero, vocab_axis=1)
    return _lookup(g, weight, node), [weight.data, weight.scale, weight.zero_point]


def _int4_lookup(g: _Graph, loc: onnx_graph.Local, rows: int, width: int, node) -> tuple[list, list] | None:
    """int4: (GatherBlockQuantized nodes on the head's MatMulNBits weight, that weight's initializers), or None
    where the layouts differ (zero points, a K that is not a whole number of blocks, scales not [N, k_blocks])."""
    from onnx import helper

    matmul = next((n for n in loc.nodes if n.op_type == "MatMulNBits"), None)
    if matmul is None or (len(matmul.input) > 3 and matmul.input[3]):
        return None
    k, n, bits, block = (onnx_graph.attr(matmul, a, 0) for a in ("K", "N", "bits", "block_size"))
    data, scales = matmul.input[1], matmul.input[2]
    if (k, n) != (width, rows) or not block or k % block or data not in g.inits or scales not in g.inits:
        return None
    if list(g.inits[scales].dims) != [n, k // block] or len(g.inits[data].dims) != 3:
        return None
    p = node.name
    shape = g.constant(f"{p}/table_shape", np.array([n, k * bits // 8], np.int64))
    nodes = [helper.make_node("Reshape", [data, shape], [f"{p}/table"], name=f"{p}/table"),
             helper.make_node("GatherBlockQuantized", [f"{p}/table", node.input[1], scales], [node.output[0]],
                              name=p, domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=block, bits=bits)]
    return nodes, [data, scales]


def share(model, tied: list[Tie], stop: set[str]) -> tuple[list[str], int]:
    """Rebuild each tied lookup of the quantized ``model`` (changed in place; the quantizer left the lookup float)
    on its head's quantized weight and drop the float table. ``stop``: the fp32 graph's activations (to find the
    head's quantized computation). Returns the tables shared and the bytes a separate copy would have taken."""
    g = _Graph(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    shared, saved = [], 0
    for tie in tied:
        node = next((n for n in model.graph.node if n.name == tie.gather and n.op_type == "Gather"), None)
        loc = onnx_graph.local(model, tie.head_output, stop, producers)
        if node is None or loc is None or node.input[0] != tie.table or tie.table not in g.inits:
            continue
        rows, width = g.inits[tie.table].dims
        found = _int8_lookup(g, loc, rows, width, node) or _int4_lookup(g, loc, rows, width, node)
        if found is None:
            continue
        g.replace(node, found[0])
        g.drop_unused([tie.table])
        shared.append(tie.table)
        saved += g.nbytes(found[1])
    return shared, saved


def _dequantized_table(g: _Graph, dq) -> _Weight | None:
    """``dq`` as a _Weight when it dequantizes an 8-bit table per tensor or per row (axis 0), else None."""
    if len(dq.input) < 2 or not all(i in g.inits for i in dq.input if i) or onnx_graph.attr(dq, "block_size", 0):
        return None
    data, scale = g.inits[dq.input[0]], g.inits[dq.input[1]]
    if len(data.dims) != 2 or data.data_type not in (2, 3):  # uint8, int8
        return None
    per_row = len(scale.dims) == 1 and scale.dims[0] > 1
    if per_row and (onnx_graph.attr(dq, "axis", 1) not in (0, -2) or scale.dims[0] != data.dims[0]):
        return None
    if not per_row and int(np.prod(scale.dims)) != 1:
        return None
    zero = dq.input[2] if len(dq.input) > 2 and dq.input[2] else None
    if zero is not None and list(g.inits[zero].dims) != list(scale.dims):
        return None
    return _Weight(dq.input[0], dq.input[1], zero, vocab_axis=0)


def gather_rows(model) -> list[str]:
    """Rewrite each ``Gather(DequantizeLinear(table), ids)`` (axis 0) of ``model`` (in place) to gather the
    integer rows and dequantize only those; a DequantizeLinear no node reads any more goes. Returns the names of
    the Gathers rewritten."""
    g = _Graph(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    done = []
    for node in [n for n in model.graph.node if n.op_type == "Gather" and onnx_graph.attr(n, "axis", 0) == 0]:
        dq = producers.get(node.input[0])
        weight = _dequantized_table(g, dq) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if weight is None:
            continue
        g.replace(node, _lookup(g, weight, node))
        if all(dq.output[0] not in n.input for n in model.graph.node):
            model.graph.node.remove(dq)
            g.drop_unused(dq.input)
        done.append(node.name)
    return done
