"""examples/text_to_image.py as a user runs it: the first run builds a tiny Stable Diffusion package into its work
folder and writes one PNG per prompt, each equal to diffusers' image on the weights it wrote (same initial latents:
numpy's, from the prompt's seed); a second run reuses the package on the slim runtime (no torch) and starts from an
image; a prompt too long for the text encoder is skipped, bad options stop with the CLI's exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPT = EXAMPLES / "text_to_image.py"
PHOTO = EXAMPLES / "data" / "photos" / "horse.jpg"
PROMPTS = ("a red bicycle", "a lighthouse at dusk, oil painting")


def _run(*args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + [str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _images(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """No package given: the tiny one is built into the work folder (ONNX only)."""
    work, out = tmp_path_factory.mktemp("t2i-work"), tmp_path_factory.mktemp("t2i-out")
    done = _run(*PROMPTS, "--work", str(work), "--out", str(out), "--steps", "4", "--seed", "10", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return work, out, done


def test_first_run_builds_the_package_and_equals_diffusers(first_run):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    work, out, done = first_run
    assert "building a tiny random-weight Stable Diffusion package" in done.stderr
    images = _images(done.stdout)
    assert [Path(i["file"]).name for i in images] == ["00-a-red-bicycle.png", "01-a-lighthouse-at-dusk-oil-painting.png"]
    assert [i["seed"] for i in images] == [10, 11] and all(i["ran"]["engine"] == "onnxruntime" for i in images)
    reference = StableDiffusionPipeline.from_pretrained(work / "tiny-stable-diffusion", safety_checker=None,
                                                        requires_safety_checker=False)
    reference.scheduler = DPMSolverMultistepScheduler.from_config(reference.scheduler.config)  # the package default
    reference.set_progress_bar_config(disable=True)
    for prompt, info in zip(PROMPTS, images):
        latents = np.random.default_rng(info["seed"]).standard_normal((1, 4, 16, 16), dtype=np.float32)
        expected = reference(prompt, num_inference_steps=4, latents=torch.from_numpy(latents),
                             output_type="np").images[0]
        written = np.asarray(Image.open(info["file"])).astype(np.int16)
        assert np.abs(written - (expected * 255).round()).max() <= 1, prompt  # 8-bit rounding of a ~1e-6 difference


def test_second_run_reuses_the_package_on_the_slim_runtime(first_run, tmp_path):
    work, _, _ = first_run
    done = _run("a horse", "a horse " * 60, "--package", str(work / "stable-diffusion-pkg"), "--out", str(tmp_path),
                "--steps", "4", "--image", str(PHOTO), "--strength", "0.5", importtime=True)
    assert done.returncode == 1, done.stderr[-3000:]  # the second prompt is too long: reported, the first done
    assert not re.search(r"\|\s+(torch|transformers|diffusers|mmedge\.exporter)(\.|\s*$)", done.stderr, re.M)
    assert "FAILED: the prompt is too long for the text encoder" in done.stderr and "limit is 77" in done.stderr
    [line] = done.stdout.splitlines()
    assert re.match(rf"{re.escape(str(tmp_path))}/00-a-horse\.png  seed 0  [\d.]+ s  onnxruntime onnx/fp32  'a horse'",
                    line)
    assert Image.open(tmp_path / "00-a-horse.png").size == tuple(s // 4 * 4 for s in Image.open(PHOTO).size)


def test_bad_options_stop_with_a_message(first_run, tmp_path):
    work, _, _ = first_run
    package = str(work / "stable-diffusion-pkg")
    none = _run("--package", package, "--out", str(tmp_path))
    assert none.returncode == 2 and "give at least one prompt" in none.stderr
    bad = _run("a cat", "--package", package, "--out", str(tmp_path), "--steps", "0")
    assert bad.returncode == 5 and "steps must be a positive integer" in bad.stderr
    missing = _run("a cat", "--package", package, "--image", str(tmp_path / "nope.png"))
    assert missing.returncode == 5 and "not found" in missing.stderr
