"""The weights of an artifact's ONNX graphs, stored once in one external data file beside them.

Why not torch.onnx's own files: every graph of a static artifact (a decoder's ``decode`` and ``prefill_N``)
holds the same weights, and a file per graph loaded three copies of them (Whisper tiny.en: 3 x 114 MB). Here
each distinct initializer is written once into ``weights.onnx_data`` at a page-aligned offset and every graph
points at it, so the package holds the weights once and ONNX Runtime maps them from the file (shared by all
sessions of the artifact, paged in on use) instead of copying each graph's into its own heap. The 2 GB
protobuf limit of single-file ONNX stops mattering on the way.

``untie_transposed`` also removes a copy that the engines would otherwise make at load: a tied LM head is
exported as ``MatMul(x, Transpose(W))`` of the token-embedding table ``W``, which ONNX Runtime and OpenVINO fold
into a second, transposed table (+80 MB for Whisper tiny.en's 51864 x 384 vocabulary).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

DATA_FILE = "weights.onnx_data"
ALIGN = 4096  # page-aligned offsets: each tensor can be mapped in place
MIN_BYTES = 1024  # smaller constants (shapes, scalars) stay inside the graph


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _perm(node) -> list[int]:
    from onnx import helper

    return next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), [])


def untie_transposed(model) -> int:
    """``MatMul(x, Transpose(W))`` for a 2-D weight ``W`` becomes ``Gemm(x, W, transB=1)`` (x flattened to 2-D
    around it), so the engines read ``W`` as stored instead of folding a transposed copy of it. Returns how many
    weights were rewritten. Done in the graph rather than in the torch wrapper because every family with a tied
    LM head exports this pattern (measured: same step time on ONNX Runtime and OpenVINO, one table fewer)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    users = _consumers(graph)
    rewritten = 0
    for init in list(graph.initializer):
        transposes = [n for n in users.get(init.name, []) if n.op_type == "Transpose" and _perm(n) == [1, 0]]
        if len(init.dims) != 2 or len(transposes) != 1:
            continue
        transpose = transposes[0]
        matmuls = users.get(transpose.output[0], [])
        if not matmuls or any(n.op_type != "MatMul" or n.input[1] != transpose.output[0] for n in matmuls):
            continue
        rows, width = init.dims
        for k, matmul in enumerate(matmuls):
            # p: unique even when the MatMul is unnamed; it also names the new nodes (profiles name nodes)
            p, x = f"{matmul.name or init.name + '_matmul'}__{k}", matmul.input[0]
            for name, value in ((f"{p}__2d", [-1, width]), (f"{p}__rows", [rows]), (f"{p}__zero", [0]),
                                (f"{p}__last", [-1])):
                graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
            nodes = [helper.make_node("Reshape", [x, f"{p}__2d"], [f"{p}__x2d"], name=f"{p}__reshape_in"),
                     helper.make_node("Gemm", [f"{p}__x2d", init.name], [f"{p}__y2d"], name=f"{p}__gemm", transB=1),
                     helper.make_node("Shape", [x], [f"{p}__xshape"], name=f"{p}__shape"),
                     helper.make_node("Slice", [f"{p}__xshape", f"{p}__zero", f"{p}__last"], [f"{p}__lead"],
                                      name=f"{p}__slice"),
                     helper.make_node("Concat", [f"{p}__lead", f"{p}__rows"], [f"{p}__yshape"], name=f"{p}__concat", axis=0),
                     helper.make_node("Reshape", [f"{p}__y2d", f"{p}__yshape"], [matmul.output[0]], name=f"{p}__reshape_out")]
            at = list(graph.node).index(matmul)
            graph.node.remove(matmul)
            for k, node in enumerate(nodes):
                graph.node.insert(at + k, node)
        graph.node.remove(transpose)
        rewritten += 1
    return rewritten


def share_weights(paths: list[Path], data_file: Path) -> Path | None:
    """Rewrite the ONNX graphs ``paths`` (in ``data_file``'s folder) so that their initializers live once in
    ``data_file``; external data files the exporter wrote before are removed. Returns ``data_file``, or None
    when no initializer was big enough to move (the file is then not written)."""
    import onnx
    from onnx import numpy_helper

    offsets: dict[bytes, int] = {}
    old_files: set[Path] = set()
    # Written under another name and renamed at the end: the graphs may still point at a file of that name.
    partial = data_file.with_name(data_file.name + ".partial")
    with open(partial, "wb") as data:
        for path in paths:
            model = onnx.load(str(path), load_external_data=False)
            old_files.update(path.parent / e.value for t in model.graph.initializer for e in t.external_data
                             if e.key == "location")
            onnx.load_external_data_for_model(model, str(path.parent))
            untie_transposed(model)
            for init in model.graph.initializer:
                if init.data_location == onnx.TensorProto.EXTERNAL or not init.HasField("raw_data"):
                    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init), init.name))
                raw = init.raw_data
                if len(raw) < MIN_BYTES:
                    continue
                digest = hashlib.sha256(f"{init.data_type}:{list(init.dims)}:".encode())
                digest.update(raw)  # not concatenated: a large table would be copied once more
                key = digest.digest()
                if key not in offsets:
                    data.write(b"\0" * (-data.tell() % ALIGN))
                    offsets[key] = data.tell()
                    data.write(raw)
                init.ClearField("raw_data")
                del init.external_data[:]
                init.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (("location", data_file.name), ("offset", str(offsets[key])), ("length", str(len(raw)))):
                    entry = init.external_data.add()
                    entry.key, entry.value = k, v
            path.write_bytes(model.SerializeToString())
    for old in old_files - {data_file}:
        old.unlink(missing_ok=True)
    if not offsets:
        partial.unlink()
        return None
    partial.replace(data_file)
    return data_file
