"""examples/image_tools.py end to end, as a user runs it: the first run exports the real EfficientNet-Lite0 and
Real-ESRGAN x4 into its work folder, names the bundled photos (the cat a cat, the coffee an espresso) and writes
a 4x upscaled photo equal to what the runtime gives; a second run reuses the packages on the slim runtime (no
torch), skips an unreadable photo (exit 1), and swapped packages stop with the CLI's exit code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge import runtime

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPT = EXAMPLES / "image_tools.py"
PHOTOS = EXAMPLES / "data" / "photos"


def _run(*args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + [str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The default run: no packages given, so the real ones are exported into the work folder (~30 s)."""
    work = tmp_path_factory.mktemp("image-tools")
    done = _run("--work", str(work), "--json", "--upscale", str(PHOTOS / "chelsea.jpg"))
    assert done.returncode == 0, done.stderr[-3000:]
    return work, done


def test_first_run_classifies_and_upscales(first_run):
    work, done = first_run
    assert "exporting the real 'efficientnet-lite0'" in done.stderr
    assert "exporting the real 'realesr-animevideov3-x4'" in done.stderr
    *labelled, upscaled = _records(done.stdout)
    assert [Path(r["image"]).name for r in labelled] == sorted(p.name for p in PHOTOS.glob("*.jpg"))
    top = {Path(r["image"]).stem: r["labels"][0]["label"] for r in labelled}
    assert top["chelsea"] in {"tabby, tabby cat", "tiger cat", "Egyptian cat"} and top["coffee"] == "espresso"
    assert all(len(r["labels"]) == 3 and r["ran"] == "onnxruntime onnx/fp32" for r in labelled)
    out = Path(upscaled["out"])
    assert out == work / "chelsea-x4.png" and upscaled["output_size"] == [768, 512]
    expected = runtime.load(work / "realesr-animevideov3-x4-pkg", engine="onnxruntime",
                            device="x86-cpu").upscale(PHOTOS / "chelsea.jpg").pixels
    assert np.array_equal(np.asarray(Image.open(out)), expected)


def test_second_run_reuses_packages_on_the_slim_runtime(first_run, tmp_path):
    work, first = first_run
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PHOTOS / "coffee.jpg", folder / "coffee.jpg")
    (folder / "notes.jpg").write_text("not a picture")
    out = tmp_path / "up.png"
    done = _run(str(folder), "--work", str(work), "--top-k", "2", "--upscale", str(folder / "coffee.jpg"),
                "--out", str(out), importtime=True)
    assert done.returncode == 1, done.stderr[-3000:]  # one unreadable photo: reported, the rest done
    # -X importtime lists every module the process imported: with built packages, no torch or exporter
    assert not re.search(r"\|\s+(torch|transformers|mmedge\.exporter)(\.|\s*$)", done.stderr, re.M)
    assert "exporting" not in done.stderr and "skipped" in done.stderr and "notes.jpg" in done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("coffee.jpg"))
    assert re.match(r"coffee\.jpg\s+espresso 0\.\d\d \| \S.* \[onnxruntime onnx/fp32, \d+ ms\]$", line), line
    assert "upscaled coffee.jpg 192x128 -> 768x512 (1 model call(s))" in done.stdout and out.is_file()


def test_swapped_packages_stop_with_a_message(first_run):
    work, _ = first_run
    swapped = _run("--classifier", str(work / "realesr-animevideov3-x4-pkg"),
                   "--upscaler", str(work / "efficientnet-lite0-pkg"))
    assert swapped.returncode == 2 and "Traceback" not in swapped.stderr
    assert ("is a 'super-resolution' (image-to-image) package; --classifier needs a package of task "
            "image-classification") in swapped.stderr
