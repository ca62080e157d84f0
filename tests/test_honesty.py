"""Honesty (issue 7, part 5): what ran is what the result says; the slim runtime never unpickles, never opens a
network connection and never writes outside the paths it is given.

* Forced engine failures on this CPU machine: the TensorRT/CUDA providers of a Jetson plan, an Intel NPU (and
  GPU) that do not exist, a variant file that one engine cannot load: each falls back to a route that runs, and
  the result's ``ran`` (and the CLI's ``fallback:`` lines) says what failed and why.
* A watched subprocess (``fixtures/audited_run.py``: audit hook + pickle/numpy/socket functions that raise) loads
  and runs packages (by default CLIP on the three engines and on two fallback plans; in the slow stage a tiny LM's
  generation, wav2vec2, VITS saving a WAV and the real Whisper tiny.en on two engines) with HOME, TMPDIR and the
  working folder pointed at empty folders; afterwards
  no unpickling, network or write event happened outside the output folder, those folders are still empty (which
  also catches writes from the engines' C++), and the packages are byte-identical. A control job in the same
  process proves each watch fires.
* A static scan of ``runtime/``'s source for pickle, ``torch.load``, ``np.load`` without ``allow_pickle=False``
  and network modules.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import ChecksumError

RUNTIME = Path(__file__).parents[1] / "runtime"
AUDITED_RUN = Path(__file__).parent / "fixtures" / "audited_run.py"
LABELS = ["a cat", "a rocket", "a cup of coffee"]
CPU = "CPUExecutionProvider"


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------- forced failures


def test_tensorrt_and_cuda_that_cannot_load_fall_back_to_the_cpu_and_the_result_says_so(clip_package, photos,
                                                                                          tmp_path, capsys):
    image = str(photos / "rocket.jpg")
    jetson = runtime.load(clip_package, device="jetson-orin", options={"cache_dir": str(tmp_path / "cache")})
    ran = jetson.zero_shot(image, LABELS).to_dict()["ran"]
    assert ran["device"] == "jetson-orin" and ran["engine"] == "onnxruntime"
    assert all(c["providers"] == [CPU] for c in ran["components"].values())  # what really ran
    missing = {(f["component"], f["what"]) for f in ran["fallbacks"] if "not in this onnxruntime build" in f["why"]}
    assert missing == {(c, p) for c in ran["components"] for p in ("TensorrtExecutionProvider",
                                                                    "CUDAExecutionProvider")}
    assert all("onnxruntime-gpu" in f["why"] for f in ran["fallbacks"])
    assert not (tmp_path / "cache").exists()  # no TensorRT cache folder for a TensorRT that never ran
    plain = runtime.load(clip_package, engine="onnxruntime", device="x86-cpu").zero_shot(image, LABELS)
    assert jetson.zero_shot(image, LABELS).to_dict()["results"] == plain.to_dict()["results"]

    assert main(["run", str(clip_package), "--device", "jetson-orin", "--image", image, "--labels", ",".join(LABELS),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ran"]["fallbacks"] == ran["fallbacks"]
    assert main(["run", str(clip_package), "--device", "jetson-orin", "--image", image, "--labels", "a,b"]) == 0
    out = capsys.readouterr().out
    assert f"providers {CPU}" in out and "fallback: text: TensorrtExecutionProvider: execution provider not in" in out


def test_an_npu_and_gpu_that_do_not_exist_fall_back_to_openvino_on_the_cpu(clip_package, photos, tmp_path):
    pipeline = runtime.load(clip_package, device="intel-npu",
                            options={"cache_dir": str(tmp_path / "cache"), "INFERENCE_PRECISION_HINT": "f32"})
    ran = pipeline.zero_shot(str(photos / "chelsea.jpg"), LABELS).to_dict()["ran"]
    assert ran["engine"] == "openvino" and ran["options"]["device"] == "CPU"
    assert all(c["execution_devices"] == ["CPU"] for c in ran["components"].values())
    whys = {f["what"]: f["why"] for f in ran["fallbacks"]}
    assert any("(NPU)" in what and "NPU driver" in why for what, why in whys.items()), whys
    assert any("(GPU)" in what and "'GPU' is not available" in why for what, why in whys.items()), whys
    assert not (tmp_path / "cache").exists()  # nor an NPU/GPU blob cache for devices that are not there


def test_a_file_one_engine_cannot_load_falls_back_to_the_next_route_and_says_so(package_copy, photos):
    broken = package_copy / "text" / "onnx-fp32" / "model.onnx"
    broken.write_bytes(b"not an onnx graph" + broken.read_bytes()[17:])
    with pytest.raises(ChecksumError, match="text/onnx-fp32/model.onnx"):  # verified: refused, never skipped
        runtime.load(package_copy, device="x86-cpu")
    pipeline = runtime.load(package_copy, device="x86-cpu", verify=False)
    ran = pipeline.zero_shot(str(photos / "coffee.jpg"), LABELS).to_dict()["ran"]
    assert (ran["format"], ran["variant"]) != ("onnx", "fp32")
    failed = [f for f in ran["fallbacks"] if f["what"] == "onnx/fp32 on onnxruntime"]
    assert len(failed) == 1 and "onnxruntime cannot load" in failed[0]["why"] and "model.onnx" in failed[0]["why"]


# --------------------------------------------------------------------------------------------- the watched run


def audited(jobs: list[dict], tmp_path: Path, packages: list[Path]) -> tuple[list[dict], list[dict]]:
    """Run ``jobs`` in the watched subprocess with HOME, TMPDIR and cwd in empty folders; check those folders and
    the packages afterwards. Returns (events, per-job results)."""
    home, tmp, cwd = (tmp_path / n for n in ("home", "tmp", "cwd"))
    for folder in (home, tmp, cwd):
        folder.mkdir()
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(jobs), encoding="utf-8")
    before = {p: snapshot(p) for p in packages}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMEDGE_", "XDG_"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, str(AUDITED_RUN), str(jobs_file)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(next(line[6:] for line in proc.stdout.splitlines() if line.startswith("AUDIT ")))
    assert report["heavy_modules"] == []
    for folder in (home, tmp, cwd):
        assert not [p for p in folder.rglob("*")], f"something was written under {folder}"
    assert {p: snapshot(p) for p in packages} == before
    return report["events"], report["results"]


def runtime_jobs_are_clean(events: list[dict], results: list[dict], jobs: list[dict], out: Path) -> None:
    for i, (job, result) in enumerate(zip(jobs, results)):
        if "exec" in job:
            continue
        assert "error" not in result, (job, result)
        mine = [e for e in events if e["job"] == i]
        assert not [e for e in mine if e["kind"] in ("pickle", "network", "process")], mine
        outside = [e for e in mine if e["kind"] == "write" and not Path(e["path"]).is_relative_to(out)]
        assert not outside, outside


def control_job(out_of_bounds: Path) -> dict:
    """Unpickles through numpy, connects a socket and writes a file: each must show up as an event."""
    return {"exec": "\n".join([
        "import numpy as np, socket, io",
        "try: np.load(io.BytesIO(b''), allow_pickle=True)",
        "except RuntimeError: pass",
        "import pickle",
        "try: pickle.loads(b'')",
        "except RuntimeError: pass",
        "try: socket.create_connection(('127.0.0.1', 9))",
        "except OSError: pass",
        "s = socket.socket(); s.close()",
        f"open({str(out_of_bounds)!r}, 'w').close()"])}


def test_the_runtime_never_unpickles_connects_or_writes_outside_its_paths(clip_package, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    zero_shot = {"call": "zero_shot", "args": [str(photos / "chelsea.jpg"), LABELS]}
    jobs = [
        {"package": str(clip_package), "engine": "onnxruntime", **zero_shot},
        {"package": str(clip_package), "engine": "openvino", "options": {"INFERENCE_PRECISION_HINT": "f32"},
         **zero_shot},
        {"package": str(clip_package), "engine": "litert", **zero_shot},
        {"package": str(clip_package), "device": "jetson-orin", **zero_shot},  # TensorRT/CUDA -> CPU: no caches
        {"package": str(clip_package), "device": "intel-npu", **zero_shot},  # NPU/GPU -> OpenVINO CPU: no caches
        control_job(tmp_path / "outside.txt"),
    ]
    events, results = audited(jobs, tmp_path, [clip_package])
    runtime_jobs_are_clean(events, results, jobs, out)
    assert [r["ran"]["engine"] for r in results[:5]] == ["onnxruntime", "openvino", "litert", "onnxruntime",
                                                         "openvino"]
    control = {e["event"] for e in events if e["job"] == len(jobs) - 1}
    assert {"numpy.load(allow_pickle=True)", "pickle.loads", "socket.create_connection", "socket.__new__",
            "open"} <= control, control


@pytest.mark.slow
def test_generation_speech_and_saved_results_stay_inside_their_paths(whisper_package, tiny_packages, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    audio = str(Path(__file__).parents[1] / "examples" / "data" / "audio" / "goforward.wav")
    jobs = [
        {"package": str(tiny_packages["gpt2"]), "call": "generate", "args": ["Hello there"],
         "kwargs": {"max_new_tokens": 6}},
        {"package": str(whisper_package), "engine": "onnxruntime", "call": "transcribe", "args": [audio]},
        {"package": str(whisper_package), "engine": "openvino", "call": "transcribe", "args": [audio],
         "options": {"INFERENCE_PRECISION_HINT": "f32"}},
        {"package": str(tiny_packages["wav2vec2"]), "call": "transcribe", "args": [audio]},
        {"package": str(tiny_packages["vits"]), "call": "speak", "args": ["hello there"],
         "save": str(out / "speech.wav")},
    ]
    packages = [whisper_package, *tiny_packages.values()]
    events, results = audited(jobs, tmp_path, packages)
    runtime_jobs_are_clean(events, results, jobs, out)
    assert (out / "speech.wav").stat().st_size > 44  # the one write, where it was asked for
    assert any(e["kind"] == "write" and e["path"] == str(out / "speech.wav") for e in events)


@pytest.fixture(scope="module")
def tiny_packages(tmp_path_factory) -> dict[str, Path]:
    """Tiny GPT-2 (generation), wav2vec2 (speech recognition) and VITS (speech, saved to a file), ONNX only."""
    from mmedge.exporter.export import export
    from mmedge.exporter.families import write_tiny_model

    root = tmp_path_factory.mktemp("honest-tiny")
    return {name: export(write_tiny_model(name, root / name), root / f"{name}-pkg", formats=["onnx"])
            for name in ("gpt2", "wav2vec2", "vits")}


# --------------------------------------------------------------------------------------------- static scan

UNPICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
NETWORK = {"socket", "ssl", "urllib", "http", "requests", "httpx", "aiohttp", "ftplib", "smtplib", "xmlrpc"}


def findings(path: Path) -> list[str]:
    """Every import of an unpickler or network module, ``torch.load`` and ``np.load`` without a literal
    ``allow_pickle=False`` in one source file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(node.lineno, f"import {n}") for n in names if n.split(".")[0] in UNPICKLERS | NETWORK]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            if node.func.attr == "load" and owner == "torch":
                found.append((node.lineno, "torch.load"))
            if node.func.attr in ("load", "loads") and owner in ("np", "numpy"):
                safe = any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
                           for k in node.keywords)
                if not safe:
                    found.append((node.lineno, "np.load without allow_pickle=False"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_static_scan_finds_no_unpickling_or_network_code_in_the_runtime(tmp_path):
    sources = sorted(RUNTIME.rglob("*.py"))
    assert len(sources) > 30
    problems = {str(p.relative_to(RUNTIME)): f for p in sources if (f := findings(p))}
    assert problems == {}
    bad = tmp_path / "bad.py"  # the scan itself sees what it looks for
    bad.write_text("import pickle\nimport urllib.request\nimport numpy as np\nimport torch\n"
                   "np.load('x.npy')\nnp.load('x.npy', allow_pickle=True)\ntorch.load('x.pt')\n"
                   "np.load('x.npy', allow_pickle=False)\n")
    assert findings(bad) == ["line 1: import pickle", "line 2: import urllib.request",
                             "line 5: np.load without allow_pickle=False",
                             "line 6: np.load without allow_pickle=False", "line 7: torch.load"]


def test_export_and_quantize_tools_send_no_openvino_or_nncf_telemetry(tmp_path):
    """`import openvino` starts openvino-telemetry (a client id and counters under ~/intel, a Google Analytics event)
    and NNCF reports through the same package; with mmedge imported first (as every mmedge command does) neither
    writes anything under HOME. Control: the same imports without mmedge do write there, so the check can fail."""
    code = "import time{}; import openvino, nncf; time.sleep(1)"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}  # telemetry skips CI
    homes = {}
    for name, first in (("mmedge", "; import mmedge.exporter.export, mmedge.quantize.compress"), ("bare", "")):
        home = homes[name] = tmp_path / name
        home.mkdir()
        subprocess.run([sys.executable, "-c", code.format(first)], env={**env, "HOME": str(home)},
                       capture_output=True, timeout=300, check=True)
    assert not list(homes["mmedge"].rglob("*"))
    assert (homes["bare"] / "intel").is_dir()
