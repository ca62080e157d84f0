"""The slim runtime runs a package with torch, transformers, optimum and diffusers made unimportable,
and never imports them itself; a missing engine is a typed error naming the pip extra."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ["torch", "transformers", "optimum", "diffusers", "nncf", "litert_torch", "jax", "tensorflow"]

BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = set(sys.argv[1].split(","))
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked in this test: {name}")
            return None
    sys.meta_path.insert(0, Blocker())
    sys.argv = sys.argv[1:]
""")


def run_blocked(blocked: list[str], code: str, *args: str) -> subprocess.CompletedProcess:
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, ",".join(blocked), *args],
                          capture_output=True, text=True, timeout=300)


RUN_ALL_ENGINES = """
    import json, sys
    import numpy as np
    from mmedge import runtime
    out = {}
    for engine in ("onnxruntime", "openvino", "litert"):
        pipe = runtime.load(sys.argv[1], engine=engine, device="x86-cpu")
        image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
        out[engine] = pipe.zero_shot(image, ["a cat", "a dog"]).probs
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"probs": out, "heavy": heavy}))
"""


def test_runtime_runs_without_torch_and_friends(clip_package):
    proc = run_blocked(HEAVY, RUN_ALL_ENGINES, str(clip_package))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    probs = list(result["probs"].values())
    for p in probs[1:]:
        assert max(abs(a - b) for a, b in zip(p, probs[0])) <= 1e-4


def test_importing_runtime_imports_no_heavy_package():
    code = """
        import sys
        import mmedge.runtime, mmedge.runtime.pipelines.clip, mmedge.devices
        import mmedge.runtime.profiling.worker, mmedge.runtime.profiling.report
        print(",".join(sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED) | {"ok"})))
    """
    proc = run_blocked(["none"], code.replace("set(BLOCKED)", repr(set(HEAVY))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("engine, module, extra", [("onnxruntime", "onnxruntime", "ort"),
                                                    ("openvino", "openvino", "openvino"),
                                                    ("litert", "ai_edge_litert", "litert")])
def test_missing_engine_names_the_extra(clip_package, engine, module, extra):
    code = """
        import sys
        from mmedge import runtime
        from mmedge.errors import EngineUnavailableError
        try:
            runtime.load(sys.argv[1], engine=sys.argv[2], device="x86-cpu")
        except EngineUnavailableError as e:
            print("TYPED:", e)
    """
    proc = run_blocked([module, "tflite_runtime"], code, str(clip_package), engine)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TYPED:" in proc.stdout and f"mmedge[{extra}]" in proc.stdout


def test_fallback_to_next_engine_is_reported(clip_package):
    code = """
        import json, sys
        from mmedge import runtime
        pipe = runtime.load(sys.argv[1], device="x86-cpu")
        print(json.dumps(pipe.ran.to_dict()))
    """
    proc = run_blocked(["onnxruntime"], code, str(clip_package))
    assert proc.returncode == 0, proc.stderr[-2000:]
    ran = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ran["engine"] == "openvino"
    assert any("onnxruntime" in f["what"] and "mmedge[ort]" in f["why"] for f in ran["fallbacks"])


def test_rooms_install_under_the_mmedge_namespace_only(tmp_path):
    code = ("import importlib.util as u, mmedge.runtime, mmedge.devices, mmedge.exporter, mmedge.quantize, mmedge.cli;"
            "print([n for n in ('runtime', 'devices', 'exporter', 'quantize', 'cli') if u.find_spec(n)])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_subpackage_is_listed_for_installation():
    """setuptools installs only the packages pyproject.toml lists: a new room subfolder left out works in the
    editable checkout and is missing from a wheel (the emulated-Pi tier installs one)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {f"{name}.{'.'.join(init.parent.relative_to(root / folder).parts)}".rstrip(".")
             for name, folder in config["package-dir"].items()
             for init in (root / folder).rglob("__init__.py") if "__pycache__" not in init.parts}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
