"""`mmedge optimize`: distill -> prune -> export -> quantize -> validate -> package in one command, with the
choices the device profile makes when the user does not."""

from __future__ import annotations

import json

import pytest

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.exporter.families import write_tiny_model
from mmedge.runtime.package import open_package


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return write_tiny_model("llama", tmp_path_factory.mktemp("llama") / "model")


def test_distill_prune_export_quantize_in_one_command(tiny_llama, tmp_path, capsys):
    out, summary = tmp_path / "pkg", tmp_path / "summary.json"
    argv = ["optimize", str(tiny_llama), str(out), "--device", "rpi5", "--formats", "onnx",
            "--distill", "layers=1/2,steps=4,batch=2,eval_every=2", "--prune", "ffn=0.25",
            "--quantize", "int8", "--budget", "agreement>=0.5", "--limit", "3", "--json", str(summary)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "distill: student vs teacher on 3 samples" in text and "prune: ffn=0.25" in text and "export:" in text and "onnx: dynamic-int8" in text
    steps = json.loads(summary.read_text())["steps"]
    assert [s["step"] for s in steps] == ["distill", "prune", "export", "student vs teacher", "quantize"]
    versus = steps[3]
    assert 0.0 <= versus["metrics"]["agreement"] <= 1.0 and versus["latency_ms"]["candidate"] > 0
    assert versus["package_bytes"]["candidate"] < versus["package_bytes"]["reference"]
    distilled, pruned = steps[0]["report"], steps[1]["report"]
    assert distilled["student_params"] < distilled["teacher_params"] and pruned["params_after"] < pruned["params_before"]
    manifest = open_package(out).manifest
    assert {v for f, v, _p, _s in manifest.variants()} == {"fp32", "int8"}
    art = manifest.components["decoder"].find("onnx", "int8")
    assert art.parity["budget"]["holds"] and art.parity["budget"]["text"] == "agreement>=0.5"
    pipe = runtime.load(out, engine="onnxruntime", variant="int8")
    assert pipe.generate("hello", max_new_tokens=3, do_sample=False).tokens
    # a rerun resumes distillation from its checkpoint instead of training again
    assert main(argv) == 0
    assert "resumed" in capsys.readouterr().out.lower()


def test_auto_quantization_follows_the_device(tiny_llama, tmp_path, capsys):
    out = tmp_path / "pi4"
    assert main(["optimize", str(tiny_llama), str(out), "--device", "rpi4", "--formats", "onnx", "--limit", "2"]) == 0
    text = capsys.readouterr().out
    assert "quantize: auto -> none" in text and "Raspberry Pi 4" in text
    assert {p for _f, _v, p, _s in open_package(out).manifest.variants()} == {"fp32"}


def test_bad_specs_fail_before_any_work(tiny_llama, tmp_path, capsys):
    assert main(["optimize", str(tiny_llama), str(tmp_path / "x"), "--device", "rpi5", "--prune", "ffn=2"]) == 2
    assert "ffn" in capsys.readouterr().err
    assert main(["optimize", str(tiny_llama), str(tmp_path / "y"), "--device", "toaster"]) != 0
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_distilled_and_pruned_model_exports_to_every_format(tiny_llama, tmp_path):
    out = tmp_path / "all"
    assert main(["optimize", str(tiny_llama), str(out), "--device", "x86-cpu", "--formats", "onnx,openvino,tflite",
                 "--distill", "layers=1/2,steps=2,batch=2,eval_every=2", "--prune", "ffn=0.25,heads=0.5",
                 "--quantize", "none", "--limit", "2"]) == 0
    runs = {(f, v) for f, v, _p, _s in open_package(out).manifest.variants()}
    assert {("onnx", "fp32"), ("openvino", "fp32"), ("tflite", "fp32-static")} <= runs
    tokens = [runtime.load(out, engine=engine, variant=variant,
                           options={"INFERENCE_PRECISION_HINT": "f32"} if engine == "openvino" else None)
              .generate("hello there", max_new_tokens=5, do_sample=False).tokens
              for engine, variant in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("litert", "fp32-static"))]
    assert tokens[0] == tokens[1] == tokens[2] and len(tokens[0]) == 5
