"""ONNX weights stored once per artifact (``exporter.converters.onnx_weights``) and read in place at run time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmedge.exporter.converters.onnx_weights import ALIGN, DATA_FILE, share_weights, untie_transposed

VOCAB, WIDTH = 300, 16


def _tied_lm(path: Path, seed: int) -> Path:
    """ids [B, T] -> embedding lookup -> hidden * 2 -> logits = hidden @ W^T, with W shared: the tied-head
    pattern torch.onnx writes (Gather + Transpose of one initializer); a second weight differs per seed."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((VOCAB, WIDTH)).astype(np.float32), "embed.weight")
    scale = numpy_helper.from_array(np.full((WIDTH,), 2.0 + seed, np.float32), f"scale_{seed}")
    nodes = [helper.make_node("Gather", ["embed.weight", "ids"], ["hidden"], axis=0),
             helper.make_node("Mul", ["hidden", scale.name], ["scaled"]),
             helper.make_node("Transpose", ["embed.weight"], ["head_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["scaled", "head_t"], ["logits"], name="lm_head")]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", VOCAB])],
                              [table, scale])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _run(path: Path, ids: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]


def test_graphs_share_one_data_file_and_give_the_same_logits(tmp_path):
    paths = [_tied_lm(tmp_path / f"g{seed}.onnx", seed) for seed in (0, 1)]
    ids = np.array([[1, 5, 299], [7, 0, 42]], np.int64)
    before = [_run(p, ids) for p in paths]
    data = share_weights(paths, tmp_path / DATA_FILE)
    assert data == tmp_path / DATA_FILE
    # the 300x16 table once (it is in both graphs), each graph's own scale vector is too small to move
    assert data.stat().st_size == VOCAB * WIDTH * 4
    for path, expected in zip(paths, before):
        model = onnx.load(str(path), load_external_data=False)
        assert [n.op_type for n in model.graph.node if "embed.weight" in n.input] == ["Gather", "Gemm"]
        table = next(t for t in model.graph.initializer if t.name == "embed.weight")
        assert table.data_location == TensorProto.EXTERNAL and not table.raw_data
        entries = {e.key: e.value for e in table.external_data}
        assert entries["location"] == DATA_FILE and int(entries["offset"]) % ALIGN == 0
        np.testing.assert_allclose(_run(path, ids), expected, rtol=1e-5, atol=1e-5)


def test_untie_leaves_other_transposes_alone(tmp_path):
    model = onnx.load(str(_tied_lm(tmp_path / "g.onnx", 0)))
    model.graph.node.append(helper.make_node("Identity", ["head_t"], ["extra"]))  # the transpose is used elsewhere
    model.graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [WIDTH, VOCAB]))
    assert untie_transposed(model) == 0
    assert "Transpose" in [n.op_type for n in model.graph.node]


def test_nothing_to_move_writes_no_data_file(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "small",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    assert share_weights([path], tmp_path / DATA_FILE) is None
    assert not (tmp_path / DATA_FILE).exists()


@pytest.mark.parametrize("variant", ["fp32", "fp32-static"])
def test_whisper_decoder_weights_are_stored_once_and_read_in_place(whisper_package, variant):
    """The static decoder's decode + prefill graphs point into one data file and their sessions read it in place
    (no pre-packed copy per graph); a dynamic decoder pre-packs (faster) unless the plan asks for lean memory.
    The runtime reports the choice."""
    from mmedge import runtime
    from mmedge.runtime.package import open_package

    artifact = open_package(whisper_package, verify=False).manifest.components["decoder"].find("onnx", variant)
    data_files = [f for f in artifact.files() if f.endswith(DATA_FILE)]
    assert len(data_files) == 1
    graphs = {s.file for s in artifact.signatures.values()}
    assert len(graphs) == (3 if variant == "fp32-static" else 1)
    data_size = (whisper_package / data_files[0]).stat().st_size
    assert all((whisper_package / g).stat().st_size < data_size / 50 for g in graphs)
    def prepacks(**options) -> tuple[bool, bool]:
        """(encoder, decoder) pre-pack their weights, as the runtime reports it."""
        pipe = runtime.load(whisper_package, engine="onnxruntime", variant=variant, options=options)
        components = pipe.ran.to_dict()["components"]
        return tuple(components[c]["options"].get("prepack_weights", True) for c in ("encoder", "decoder"))

    assert prepacks() == (True, variant == "fp32")
    assert prepacks(lean_memory=True) == (False, False)
    assert prepacks(prepack_weights=True) == (True, True)  # the user's word wins


def test_every_matmul_of_a_transposed_weight_is_rewritten_even_unnamed(tmp_path):
    model = onnx.load(str(_tied_lm(tmp_path / "g.onnx", 0)))
    for node in model.graph.node:
        node.name = ""  # exporters may leave names empty: the new nodes' names must still be unique
    model.graph.node.append(helper.make_node("MatMul", ["hidden", "head_t"], ["raw_logits"]))
    model.graph.output.append(helper.make_tensor_value_info("raw_logits", TensorProto.FLOAT, ["B", "T", VOCAB]))
    ids = np.array([[3, 4]], np.int64)
    path = tmp_path / "two.onnx"
    onnx.save(model, str(path))
    before = ort.InferenceSession(str(path)).run(None, {"ids": ids})
    assert untie_transposed(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node].count("Gemm") == 2
    new = [n.name for n in model.graph.node if n.name]  # named, uniquely, so profiles can tell them apart
    assert len(new) == len(set(new)) == 12
    onnx.save(model, str(path))
    for got, expected in zip(ort.InferenceSession(str(path)).run(None, {"ids": ids}), before):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_sharing_again_keeps_the_weights(tmp_path):
    """Graphs that already point at the data file can be shared again (the old file is read before it is replaced)."""
    paths = [_tied_lm(tmp_path / f"g{seed}.onnx", seed) for seed in (0, 1)]
    ids = np.array([[2, 9]], np.int64)
    share_weights(paths, tmp_path / DATA_FILE)
    before = [_run(p, ids) for p in paths]
    share_weights(paths, tmp_path / DATA_FILE)
    assert not list(tmp_path.glob("*.partial"))
    for path, expected in zip(paths, before):
        np.testing.assert_array_equal(_run(path, ids), expected)
