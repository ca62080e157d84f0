"""The int8 advisor and the dynamic-int8 variant it measures: ISA classes from CPU flags and device profiles,
Amdahl's prediction, op coverage from profiled node names, the quantized variant written into a package
(loads, agrees with fp32, checksummed), and the whole advice on the tiny CLIP package, here and for a Pi 4."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import UsageError
from mmedge.quantize.advisor import (MARGIN, advise_int8, coverage, isa_class, measured_verdict, predicted_speedup,
                                     quantized_nodes, verdict)
from mmedge.quantize.onnx_dynamic import add_dynamic_int8
from mmedge.runtime.package import open_package


@pytest.mark.parametrize("arch, features, dot, from_profile, name, factor", [
    ("x86_64", {"avx2", "avx512f", "avx512_vnni", "amx_int8"}, True, False, "AMX", 4.0),
    ("x86_64", {"avx2", "avx_vnni"}, True, False, "VNNI", 2.5),
    ("x86_64", {"avx2", "avx512f"}, False, False, "AVX2", 1.6),
    ("x86_64", set(), False, False, "without AVX2", 1.0),
    ("x86_64", set(), True, True, "VNNI", 2.5),                 # intel-npu profile: no flags, int8 dot assumed
    ("aarch64", {"asimd", "asimddp", "i8mm"}, True, False, "SMMLA", 3.0),
    ("aarch64", {"asimd", "asimddp"}, True, False, "SDOT", 2.5),
    ("aarch64", {"asimd"}, False, False, "Cortex-A72", 1.2),
    ("aarch64", set(), False, True, "Cortex-A72", 1.2),         # rpi4 profile
    ("aarch64", set(), True, True, "SDOT", 2.5),                # rpi5 profile
])
def test_isa_class(arch, features, dot, from_profile, name, factor):
    isa = isa_class(arch, features, dot, from_profile=from_profile)
    assert name in isa.name and isa.gemm_speedup == factor
    assert isa.evidence.startswith("device profile" if from_profile else "cpu flags")


def test_prediction_is_amdahl_with_the_quantization_overhead():
    assert predicted_speedup(0.0, 2.5) == pytest.approx(1.0)
    assert predicted_speedup(1.0, 2.5) == pytest.approx(1 / (0.4 + 0.15))
    assert predicted_speedup(0.5, 2.5) == pytest.approx(1 / (0.5 + 0.5 * 0.55))
    # Without int8 dot product no coverage makes int8 clearly faster: the advisor never says "faster" on a Pi 4.
    assert all(verdict(predicted_speedup(f / 10, 1.2)) == "about the same" for f in range(11))
    assert verdict(MARGIN) == "faster" and verdict(1 / MARGIN) == "slower" and verdict(1.05) == "about the same"


def test_measured_verdict_needs_separated_distributions():
    fast, slow = {"p50": 1.0, "p90": 1.1}, {"p50": 2.0, "p90": 2.2}
    assert measured_verdict(slow, fast) == "faster" and measured_verdict(fast, slow) == "slower"
    noisy = {"p50": 1.0, "p90": 3.0}  # a 2x p50 gain whose spread reaches past fp32's median: not conclusive
    assert measured_verdict(slow, noisy) == "about the same"


def test_coverage_matches_fused_and_slash_names():
    quantized = {"text": {"/enc/layers.0/q_proj/MatMul", "node_Gemm_4"}, "vision": {"fc"}}
    nodes = [{"component": "text", "node": "/enc/layers.0/q_proj/MatMul", "op_type": "MatMul", "ms_per_call": 2.0},
             {"component": "text", "node": "node_Gemm_4/MatMulAddFusion/", "op_type": "Gemm", "ms_per_call": 1.0},
             {"component": "text", "node": "/enc/layers.0/MatMul", "op_type": "MatMul", "ms_per_call": 3.0},
             {"component": "vision", "node": "node_Gemm_4", "op_type": "Gemm", "ms_per_call": 1.0},  # other graph
             {"component": "vision", "node": "conv1", "op_type": "FusedConv", "ms_per_call": 1.0}]
    cov = coverage({"top_nodes": nodes, "wall_ms_per_call": 10.0}, quantized)
    assert cov["quantized_share"] == pytest.approx(0.3) and cov["conv_share"] == pytest.approx(0.1)
    assert cov["op_share"] == pytest.approx(0.8) and cov["quantized_nodes"] == 3


def test_quantized_nodes_are_weight_matmuls_only(clip_package):
    nodes = quantized_nodes(clip_package)
    text = nodes["text"]
    assert "/text_model/encoder/layers.0/self_attn/q_proj/MatMul" in text
    assert "/text_model/encoder/layers.0/mlp/fc2/MatMul" in text
    assert not any(n.endswith("self_attn/MatMul") or n.endswith("self_attn/MatMul_1") for n in text)  # q x k, p x v
    assert nodes["vision"]


@pytest.fixture(scope="module")
def int8_package(clip_package, tmp_path_factory):
    return add_dynamic_int8(clip_package, tmp_path_factory.mktemp("int8") / "clip-int8")


def test_dynamic_int8_variant_is_written_beside_the_others(clip_package, int8_package, photos):
    pkg = open_package(int8_package)  # verifies every checksum
    before = open_package(clip_package).manifest.variants()
    assert pkg.manifest.variants() == before + [("onnx", "int8", "int8", False)]
    art = pkg.manifest.components["text"].find("onnx", "int8")
    assert art.file == "text/onnx-int8/model.onnx" and art.parity["quantization"]["method"] == "onnxruntime dynamic"
    graph = onnx.load(pkg.path(art.file)).graph
    assert "MatMulInteger" in {n.op_type for n in graph.node}
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]
    assert len(int8_weights) == len(quantized_nodes(clip_package)["text"])  # one per weight MatMul (+ zero points)
    fp32 = runtime.load(int8_package, engine="onnxruntime", variant="fp32")
    int8 = runtime.load(int8_package, engine="onnxruntime", variant="int8")
    assert int8.ran.variant == "int8"
    images = sorted(photos.iterdir())[:3]
    a, b = fp32.embed_images(images), int8.embed_images(images)
    cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cosine.min() > 0.99 and not np.array_equal(a, b)


def test_dynamic_int8_refuses_a_taken_name_and_packages_without_onnx(int8_package, tmp_path):
    with pytest.raises(UsageError, match="already has a variant 'int8'"):
        add_dynamic_int8(int8_package, tmp_path / "again")
    no_onnx = tmp_path / "no-onnx"
    shutil.copytree(int8_package, no_onnx)
    manifest = json.loads((no_onnx / "mmedge.json").read_text())
    for comp in manifest["components"].values():
        comp["artifacts"] = [a for a in comp["artifacts"] if a["format"] != "onnx"]
    (no_onnx / "mmedge.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="no dynamic fp32 ONNX file"):
        add_dynamic_int8(no_onnx, tmp_path / "out", variant="q")
    assert not (tmp_path / "out").exists()


def test_advice_here_is_predicted_then_measured(clip_package):
    advice = advise_int8(clip_package, runs=5, warmup=1)
    assert advice.device == advice.measured_on
    assert 0 < advice.coverage["quantized_share"] < advice.coverage["op_share"] <= 1
    assert advice.predicted == verdict(advice.predicted_speedup)
    m = advice.measured
    assert m["speedup"] == pytest.approx(m["fp32_p50_ms"] / m["int8_p50_ms"])
    assert m["accuracy"]["metric"] == "cosine" and m["accuracy"]["value"] > 0.99
    assert m["size_ratio"] < 1 and isinstance(advice.agrees, bool)
    assert advice.recommendation and json.loads(json.dumps(advice.to_dict()))["agrees"] == advice.agrees


def test_advice_for_a_pi4_predicts_no_gain_and_says_where_it_measured(clip_package, tmp_path, capsys):
    out = tmp_path / "advice.json"
    assert main(["int8-advice", str(clip_package), "--device", "rpi4", "--runs", "3", "--warmup", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "device rpi4: Arm NEON without int8 dot product" in text and "predicted: about the same" in text
    assert "advice: int8 only for size" in text  # the device's prediction decides: the measurement is of x86
    advice = json.loads(out.read_text())
    assert advice["measured_on"] != "rpi4" and any("not on rpi4" in n for n in advice["notes"])
    assert main(["int8-advice", str(clip_package), "--device", "toaster", "--no-measure"]) == 2
