"""Phone exports (mmedge export --device android|ios): .ort files that run like their ONNX graphs, the
required-operators config, the compatibility report, delegate options through the manifest, Kotlin/Swift
examples naming the real tensors, and a package that verifies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import UnknownDeviceError, UsageError
from mmedge.runtime import open_package
from mmedge.runtime.manifest import Manifest


@pytest.fixture(scope="module")
def android_package(tiny_clip_dir, tmp_path_factory) -> Path:
    from mmedge.exporter.export import export

    return export(tiny_clip_dir, tmp_path_factory.mktemp("phone") / "clip-android", device="android")


def test_ort_files_match_the_onnx_graphs(android_package):
    import onnxruntime as ort

    pkg = open_package(android_package)
    mobile = pkg.manifest.mobile
    assert set(mobile.ort) == {"text", "vision"}
    rng = np.random.default_rng(0)
    for name, entry in mobile.ort.items():
        assert entry["parity"]["passed"] and entry["parity"]["reference"] == "pytorch"
        static = pkg.manifest.components[name].find("onnx", "fp32-static")
        for sig, rel in entry["signatures"].items():
            assert rel.endswith(".ort")
            spec = static.signatures[sig]
            feeds = {t.bound_name: (rng.integers(0, 50, t.shape) if t.dtype == "int64"
                                    else rng.standard_normal(t.shape)).astype(t.dtype) for t in spec.inputs}
            got = ort.InferenceSession(str(pkg.file_path(rel))).run(None, feeds)
            want = ort.InferenceSession(str(pkg.file_path(spec.file))).run(None, feeds)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, atol=1e-5)


def test_required_operators_config_lists_the_ops(android_package):
    m = open_package(android_package).manifest
    lines = [ln for ln in (android_package / m.mobile.required_operators).read_text().splitlines()
             if not ln.startswith("#")]
    ops = {op for ln in lines for op in ln.split(";")[2].split(",")}
    assert all(ln.startswith("ai.onnx;") for ln in lines)
    assert {"MatMul", "Softmax", "Conv", "Gather"} <= ops
    assert str(android_package.parent) not in (android_package / m.mobile.required_operators).read_text()


def test_compatibility_report_has_coverage(android_package):
    m = open_package(android_package).manifest
    report = json.loads((android_package / m.mobile.report).read_text())
    graph = report["onnxruntime_mobile"]["vision"]["default"]
    for ep in ("nnapi", "coreml_neuralnetwork", "coreml_mlprogram"):
        e = graph[ep]
        assert 0 < e["supported_nodes"] <= e["nodes"] and 0 < e["coverage_pct"] <= 100
        assert e["verdict"] in ("YES", "MAYBE", "NO") and e["partitions"] == len(e["partition_sizes"])
    assert graph["dynamic_inputs"] == []  # the fixed-shape variant
    gpu = report["litert_gpu"]
    assert gpu["available"] is False and "TensorFlow" in gpu["reason"]
    assert "FULLY_CONNECTED" in gpu["files"]["text"]["ops"] or gpu["files"]["text"]["op_count"] > 0


def test_delegate_options_round_trip_and_v1_readers_ignore_them(android_package):
    m = open_package(android_package).manifest
    eps = [ep["name"] for ep in m.mobile.delegates["onnxruntime"]["execution_providers"]]
    assert {"NnapiExecutionProvider", "QNNExecutionProvider", "XnnpackExecutionProvider"} <= set(eps)
    assert m.mobile.delegates["litert"]["delegates"][0]["name"] == "gpu"
    again = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again.mobile == m.mobile and again.to_dict() == m.to_dict()
    plain = m.to_dict()
    plain.pop("mobile")
    assert Manifest.from_dict(plain).mobile is None and "mobile" not in Manifest.from_dict(plain).to_dict()
    assert set(m.mobile.files()) <= set(m.files)


def test_snippets_name_the_real_tensors(android_package):
    m = open_package(android_package).manifest
    kotlin = (android_package / "mobile/Example.kt").read_text()
    swift = (android_package / "mobile/Example.swift").read_text()
    for name in ("input_ids", "attention_mask", "text_embeds"):
        assert f'"{name}"' in kotlin and f'"{name}"' in swift
    assert "NNAPIFlags.USE_FP16" in kotlin and "GpuDelegate" in kotlin and "longArrayOf(1, 77)" in kotlin
    assert "appendCoreMLExecutionProvider" in swift and "[1, 77]" in swift
    assert m.mobile.ort["text"]["signatures"]["default"] in kotlin
    assert {"mobile/README.md", "mobile/Example.kt", "mobile/Example.swift"} == set(m.mobile.snippets)


def test_package_verifies_and_cli_summary(android_package):
    assert open_package(android_package).verify() == []
    out = subprocess.run([sys.executable, "-m", "mmedge.cli.main", "info", str(android_package), "--verify"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from mmedge.exporter.mobile import summary

    lines = summary(android_package)
    assert "nnapi" in "\n".join(lines) and "LiteRT GPU" in lines[-1]


def test_unknown_device_names_the_choices(tiny_clip_dir, tmp_path):
    from mmedge.exporter.export import export

    with pytest.raises(UnknownDeviceError, match="android.*ios|ios.*android"):
        export(tiny_clip_dir, tmp_path / "x", device="nokia")
    out = subprocess.run([sys.executable, "-m", "mmedge.cli.main", "export", str(tiny_clip_dir), str(tmp_path / "y"),
                          "--device", "nokia"], capture_output=True, text=True)
    assert out.returncode == 2 and "known devices" in out.stderr
    with pytest.raises(UsageError, match="onnx"):
        export(tiny_clip_dir, tmp_path / "z", device="ios", formats=["tflite"])
