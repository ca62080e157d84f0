"""Graph facts the ONNX backend needs around the quantizers: which nodes a mode would quantize (the candidates the
sensitivity pass may keep in float), the local computation that replaced a node in a quantized graph, saving with
external weights, and the bytes the weights take.

Node names are the interface: ONNX Runtime's quantizers keep a node's name and its output tensor's name (verified
for dynamic int8, static QDQ, MatMulNBits int4, NNCF int4 and fp16 on the exported tiny models), so a node of the
fp32 graph is found in the quantized one by walking back from its output to the activations it read in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Ops that only appear where a tool quantized something: a node whose local computation holds one is quantized.
QUANT_OPS = frozenset({"DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "MatMulNBits",
                       "GatherBlockQuantized", "QLinearMatMul", "QLinearConv", "QGemm", "QAttention",
                       "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"})
#: Integer types of quantized weights (uint8, int8, uint4, int4): a node reading such an initializer is quantized
#: even without a quantizing op (an embedding lookup that gathers int8 rows and scales them; ``onnx_embeddings``).
LOW_BIT = frozenset({2, 3, 21, 22})
#: Above this much weight, files are written with their weights in ``<file>.data`` beside them (protobuf's 2 GB
#: limit applies to the whole file; a margin keeps the graph's own bytes out of the question).
EXTERNAL_ABOVE = 1 << 30
#: A node's local computation is its own quantize/dequantize/compute nodes; more than this means the walk left it.
MAX_LOCAL_NODES = 32


def tensor_bytes(t) -> int:
    """Bytes of the TensorProto ``t`` (int4 counted as half a byte), from its metadata."""
    import onnx

    count = int(np.prod(t.dims)) if t.dims else 1
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (count + 1) // 2
    return count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def weight_bytes(model) -> int:
    """Bytes of the initializers and Constant tensors, from the protos' metadata."""
    consts = [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return sum(tensor_bytes(t) for t in [*model.graph.initializer, *consts])


def save(model, dst: Path) -> list[str]:
    """Write ``model`` to ``dst``: one file, or ``dst`` plus ``<dst.name>.data`` for weights over
    ``EXTERNAL_ABOVE`` (the name ONNX Runtime's quantizers use too). Returns the file names written."""
    import onnx

    dst.parent.mkdir(parents=True, exist_ok=True)
    if weight_bytes(model) <= EXTERNAL_ABOVE:
        onnx.save(model, str(dst))
        return [dst.name]
    data = dst.name + ".data"
    onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data)
    return [dst.name, data]


def written(dst: Path) -> list[str]:
    """The files a tool wrote for ``dst`` (itself and, for large models, its external data file)."""
    data = dst.with_name(dst.name + ".data")
    return [dst.name, data.name] if data.exists() else [dst.name]


def attr(node, name: str, default):
    """The value of ``node``'s attribute ``name``, ``default`` when it has none."""
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def rewritten_gemm(node) -> bool:
    """A Gemm that ONNX Runtime's dynamic and weight-only quantizers rewrite into MatMul(+Add) first."""
    return (node.op_type == "Gemm" and attr(node, "alpha", 1.0) == 1.0 and attr(node, "beta", 1.0) == 1.0
            and attr(node, "transA", 0) == 0)


def subgraph_weights(model) -> list[str]:
    """Names of If/Loop/Scan nodes whose subgraphs hold weighted MatMul/Gemm nodes (an optimum *merged* decoder):
    the quantizers here work on the main graph only and would leave those weights in float."""
    found = []
    for node in model.graph.node:
        graphs = [a.g for a in node.attribute if a.type == a.GRAPH] + [g for a in node.attribute for g in a.graphs]
        for g in graphs:
            inits = {i.name for i in g.initializer} | {i.name for i in model.graph.initializer}
            if any(n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits for n in g.node):
                found.append(node.name)
                break
    return found


def candidates(model, mode: str, opts: dict) -> list[str]:
    """Names of the main-graph nodes that ``mode`` with options ``opts`` would quantize, in graph order. Mirrors
    the tools' own selection: only initializers count as constant weights (as in ONNX Runtime)."""
    inits = {i.name for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        op, ins = node.op_type, node.input
        const_b = len(ins) > 1 and ins[1] in inits
        if mode == "fp16":
            take = op in opts["op_types"] and op not in opts["op_block_list"]
        elif mode == "int4" and opts["tool"] == "nncf":
            take = op in ("MatMul", "Gemm") and const_b
        elif mode == "int4":
            take = ((op == "MatMul" or rewritten_gemm(node)) and const_b
                    or opts["embeddings"] and op == "Gather" and ins[0] in inits)
        elif op == "Gather":
            take = op in opts["op_types"] and ins[0] in inits
        elif op in ("MatMul", "Gemm"):
            # dynamic int8 quantizes a Gemm as the MatMul it rewrites it into
            as_matmul = mode == "dynamic-int8" and op == "Gemm"
            wanted = ("MatMul" in opts["op_types"] and rewritten_gemm(node)) if as_matmul else op in opts["op_types"]
            take = wanted and (const_b or not opts["matmul_const_b_only"])
        else:
            take = op in opts["op_types"]
        if take and node.name:  # exporters name every node; an unnamed one could not be excluded or reported
            names.append(node.name)
    return names


def tool_names(model, names: list[str], mode: str) -> list[str]:
    """The names ``names`` go by inside ONNX Runtime's dynamic and int4 quantizers, which first rewrite a Gemm
    with constant weights into ``<name>_MatMul`` (+ ``<name>_Add``): both the original and the rewritten name."""
    if mode not in ("dynamic-int8", "int4"):
        return list(names)
    gemms = {n.name for n in model.graph.node if n.op_type == "Gemm"}
    return [m for n in names for m in ([n, f"{n}_MatMul"] if n in gemms else [n])]


@dataclass
class Local:
    """The computation standing for one fp32 node in a quantized graph: its nodes (in graph order), the fp32
    activations it reads (``inputs``), the tensor it produces (``output``) and the initializers it uses."""

    nodes: list
    inputs: list[str]
    output: str
    initializers: list[str]
    integer_weights: bool = False  # it reads 8- or 4-bit integer initializers (a lookup of quantized rows)

    @property
    def quantized(self) -> bool:
        return self.integer_weights or any(n.op_type in QUANT_OPS for n in self.nodes)


def activations(model) -> set[str]:
    """Tensors computed at run time in ``model``: its inputs and its nodes' outputs."""
    return {i.name for i in model.graph.input} | {o for n in model.graph.node for o in n.output if o}


def local(qmodel, output: str, stop: set[str], producers: dict | None = None) -> Local | None:
    """Walk back in ``qmodel`` from ``output`` to tensors in ``stop`` (the fp32 graph's activations): the nodes on
    the way are the local computation. None when ``output`` is missing or the walk leaves the node's neighbourhood
    (more than ``MAX_LOCAL_NODES`` nodes, or a run-time tensor the fp32 graph never had)."""
    producers = producers if producers is not None else {o: n for n in qmodel.graph.node for o in n.output}
    inits = {i.name: i.data_type for i in qmodel.graph.initializer}
    if output not in producers:
        return None
    seen, nodes, inputs, used = set(), [], [], []
    todo = [producers[output]]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        if len(nodes) > MAX_LOCAL_NODES:
            return None
        for name in node.input:
            if not name or name in used or name in inputs:
                continue
            if name in inits:
                used.append(name)
            elif name in stop:
                inputs.append(name)
            elif name in producers:
                todo.append(producers[name])
            else:
                return None
    order = {id(n): k for k, n in enumerate(qmodel.graph.node)}
    nodes.sort(key=lambda n: order[id(n)])
    return Local(nodes=nodes, inputs=inputs, output=output, initializers=used,
                 integer_weights=any(inits[name] in LOW_BIT for name in used))
