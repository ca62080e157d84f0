"""The ``mmedge`` CLI end to end on a tiny CLIP: tiny-model, export, run (three engines), info, devices,
and the typed errors with their exit codes (no tracebacks)."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmedge.cli.main import main
from mmedge.runtime.manifest import MANIFEST_NAME


def mmedge(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mmedge")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mmedge.cli.main"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600)


def test_tiny_model_export_run_info_end_to_end(tmp_path, photos):
    model, pkg = tmp_path / "model", tmp_path / "pkg"
    proc = mmedge("tiny-model", "clip", str(model))
    assert proc.returncode == 0, proc.stderr
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
    proc = mmedge("export", str(model), str(pkg), "--formats", "onnx,tflite")
    assert proc.returncode == 0, proc.stderr
    assert "parity vs PyTorch" in proc.stderr
    assert json.loads((pkg / MANIFEST_NAME).read_text())["family"] == "clip"

    results = {}
    for engine in ("onnxruntime", "litert"):
        proc = mmedge("run", str(pkg), "--engine", engine, "--image", str(photos / "chelsea.jpg"),
                      "--labels", "a cat,a dog", "--json")
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["ran"]["engine"] == engine
        results[engine] = {r["label"]: r["prob"] for r in out["results"]}
        assert abs(sum(results[engine].values()) - 1) < 1e-5
    assert all(abs(results["onnxruntime"][k] - results["litert"][k]) <= 1e-4 for k in results["litert"])

    proc = mmedge("run", str(pkg), "--engine", "openvino", "--image", str(photos / "chelsea.jpg"), "--labels", "a,b")
    assert proc.returncode == 4 and "export with --formats openvino" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = mmedge("info", str(pkg), "--verify")
    assert proc.returncode == 0 and "all" in proc.stdout and "intact" in proc.stdout


def test_run_modes_human_output(clip_package, photos, capsys):
    assert main(["run", str(clip_package), "--device", "x86-cpu", "--engine", "openvino",
                 "--image", str(photos / "rocket.jpg"), "--labels", "a rocket,a cat"]) == 0
    out = capsys.readouterr().out
    assert "a rocket" in out and "ran: engine openvino" in out and "openvino/fp32" in out
    assert main(["run", str(clip_package), "--engine", "litert", "--image", str(photos / "rocket.jpg"),
                 "--labels", "a rocket,a cat"]) == 0
    assert re.search(r"ran: engine litert .* delegate xnnpack \([1-9]\d* nodes\)", capsys.readouterr().out)
    assert main(["run", str(clip_package), "--device", "x86-cpu", "--images", str(photos), "--query", "coffee",
                 "--top-k", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "text-to-image-retrieval" and len(result["results"]) == 2
    assert main(["run", str(clip_package), "--device", "x86-cpu", "--text", "hello", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["embedding"]) == 32


def test_info_verify_fails_on_tamper(package_copy, capsys):
    target = package_copy / "tokenizer" / "tokenizer.json"
    target.write_bytes(target.read_bytes() + b" ")
    assert main(["info", str(package_copy), "--verify"]) == 3
    assert "checksum mismatch: tokenizer/tokenizer.json" in capsys.readouterr().out
    assert main(["run", str(package_copy), "--text", "x"]) == 3
    assert "failed verification" in capsys.readouterr().err


def test_devices_with_a_fake_root(tmp_path, capsys):
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n\n" * 4)
    assert main(["devices", "--root", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["detected"]["profile"] == "rpi5" and info["detected"]["cores"] == 4
    assert main(["devices"]) == 0
    assert "x86-cpu" in capsys.readouterr().out
    assert main(["devices", "--root", str(tmp_path), "--profile", "intel-npu"]) == 0
    out = capsys.readouterr().out
    assert "detected: rpi5 (cores 4" in out and "routes of intel-npu" in out
    assert '1. openvino[npu] via NPU (static shapes only): precisions int8>fp16>fp32>int4' in out
    assert 'options device="NPU" PERFORMANCE_HINT="LATENCY"' in out


@pytest.mark.parametrize("argv, code, message", [
    (["tiny-model", "nosuchfamily", "x"], 2, "no tiny model 'nosuchfamily'"),
    (["run", "{pkg}", "--device", "toaster", "--text", "x"], 2, "toaster"),
    (["run", "{pkg}", "--variant", "int3", "--text", "x"], 3, "variant 'int3'"),
    (["run", "{pkg}", "--image", "{bad_image}", "--labels", "a,b"], 5, "not-an-image.jpg"),
    (["run", "{pkg}", "--image", "{missing}", "--labels", "a,b"], 5, "missing.jpg"),
    (["run", "{pkg}"], 2, "give task inputs"),
    (["run", "{tmp}/nowhere", "--text", "x"], 3, "not a model package directory"),
    (["export", "{tmp}/nowhere", "{tmp}/out"], 6, "neither an existing directory"),
    (["export", "{tmp}", "{tmp}/out"], 6, "no config.json"),
    (["export", "{model}", "{tmp}/out", "--formats", "onnx,coreml"], 2, "unknown format"),
    (["export", "{model}", "{tmp}/out", "--family", "whisperish"], 2, "unknown family"),
    (["export", "{model}", "{tmp}/out", "--device", "toaster"], 2, "toaster"),
])
def test_errors_are_typed_with_exit_codes(argv, code, message, clip_package, tiny_clip_dir, tmp_path, capsys):
    (tmp_path / "not-an-image.jpg").write_text("hello, I am text")
    subs = {"pkg": str(clip_package), "bad_image": str(tmp_path / "not-an-image.jpg"), "tmp": str(tmp_path),
            "missing": str(tmp_path / "missing.jpg"), "model": str(tiny_clip_dir)}
    assert main([a.format(**subs) for a in argv]) == code
    err = capsys.readouterr().err
    assert err.startswith("mmedge: error:") and message in err


def test_unknown_model_type_needs_family(tiny_clip_dir, tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(tiny_clip_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "mystery"
    (model / "config.json").write_text(json.dumps(config))
    assert main(["export", str(model), str(tmp_path / "out")]) == 2
    assert "pass --family" in capsys.readouterr().err


def test_export_help_names_every_bundled_model():
    """The help text is written out (building the parser must not import the exporter); it must not go stale."""
    from mmedge.cli.main import build_parser
    from mmedge.exporter.importers.bundled import BUNDLED

    help_text = build_parser()._subparsers._group_actions[0].choices["export"].format_help()
    assert all(name in "".join(help_text.split()) for name in BUNDLED)  # argparse wraps lines at hyphens too
