"""The slim runtime on an emulated Raspberry Pi 4 and Pi 5 (aarch64 under qemu-user, scripts/emulated-pi.sh).

On the host: export a tiny CLIP and a tiny GPT-2 (ONNX + fixed-shape TFLite), build a wheel of mmedge and run
``pi_check.py`` for the x86 reference. Inside the emulated Pi: install the PyPI aarch64 engine wheels and mmedge's
wheel (``--no-deps``: only what the slim runtime needs is there), run the same ``pi_check.py`` and compare: same
numbers within fp32 tolerance, identical greedy tokens, XNNPACK really applied on LiteRT, the board detected from
the Pi's cpuinfo and the planner's choice for it. Emulation is ~400-800x slower than native, hence tiny models and
one checker run per Pi. Needs root and binfmt_misc (first run: ~5 min for the rootfs under .cache/pi-rootfs).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.arm

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "emulated-pi.sh"
CHECKER = Path(__file__).with_name("pi_check.py")
#: The aarch64 wheels the slim runtime needs for these packages: the engines plus what the CLIP and GPT-2 pipelines
#: import (tokenizers; Pillow for image pre-processing). protobuf only pins onnxruntime's dependency to the host's
#: version. openvino is installed to prove its aarch64 wheel installs with the rest, but not run: under qemu-user its
#: CPU plugin segfaults at start-up (after logging that hwloc finds no sysfs CPU topology), a fact of the emulator.
ENGINE_WHEELS = ("numpy", "onnxruntime", "ai-edge-litert", "openvino", "tokenizers", "pillow")
PINNED_ONLY = ("protobuf",)
#: Runtime unit tests that need neither torch nor the exporter (detection and plans from fake roots, audio in numpy),
#: run inside the Pi 5 with the same pytest as the host.
UNIT_TESTS = ("test_devices.py", "test_audio.py")
PIS = {"rpi4": "cortex-a72", "rpi5": "cortex-a76"}
ATOL = 1e-5            # fp32, same engine and graph on x86 and aarch64
SKIP_CODE = 77         # emulated-pi.sh: this host cannot emulate


def _skip_reason() -> str | None:
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "the emulated Pi runs on an x86_64 Linux host"
    if os.geteuid() != 0:
        return "needs root (chroot, bind mounts, binfmt_misc) to run the emulated Pi"
    if not Path("/proc/sys/fs/binfmt_misc").is_dir():
        return "the kernel has no binfmt_misc: qemu-user cannot run aarch64 binaries here"
    return None


def _run(cmd: list, *, timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _emulated(work: Path, cpu: str, pip_args: str, *command: str, timeout: int) -> None:
    proc = _run([SCRIPT, work, pip_args, *command], timeout=timeout, env={"QEMU_CPU": cpu})
    if proc.returncode == SKIP_CODE:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"emulated Pi ({cpu}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _pins() -> tuple[list[str], list[str]]:
    """(install specs pinned to constraints.txt, the constraints lines for them and the pinned-only dependencies)."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name = line.split("==")[0].strip().lower()
        if name in ENGINE_WHEELS + PINNED_ONLY:
            pins[name] = line.strip()
    return [pins.get(name, name) for name in ENGINE_WHEELS], list(pins.values())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Host side: packages, the x86 reference, mmedge's wheel and the checker, all in the dir mounted in the Pi."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("arm-check")
    cli = [sys.executable, "-m", "mmedge.cli.main"]
    for family in ("clip", "gpt2"):
        for cmd in ([*cli, "tiny-model", family, work / f"tiny-{family}"],
                    [*cli, "export", work / f"tiny-{family}", work / family, "--formats", "onnx,tflite", "--static"]):
            proc = _run(cmd, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
        shutil.rmtree(work / f"tiny-{family}")
    shutil.copy(CHECKER, work / CHECKER.name)
    proc = _run([sys.executable, work / CHECKER.name, "--clip", work / "clip", "--gpt2", work / "gpt2",
                 "--out", work / "x86.json"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The wheel is built from a copy of the checkout's files (tracked and not ignored): setuptools builds in place and
    # would pack whatever a stale build/lib still holds, e.g. a module deleted since.
    source = tmp_path_factory.mktemp("mmedge-src")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, source / rel)
    proc = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "wheels", source], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


@pytest.fixture(scope="module")
def emulated_venv(work) -> str:
    """Installs the engine wheels (cached in the rootfs between runs) and this checkout's mmedge into the Pi's venv.
    One venv serves both Pis: same aarch64 binaries, only the emulated CPU differs."""
    specs, constraints = _pins()
    (work / "constraints.txt").write_text("\n".join(constraints) + "\n")
    wheel = next((work / "wheels").glob("mmedge-*.whl"))
    pytest_spec = f"pytest=={importlib.metadata.version('pytest')}"
    _emulated(work, PIS["rpi5"], " ".join(["-c", "/mnt/work/constraints.txt", *specs, pytest_spec]),
              "/opt/venv/bin/pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--force-reinstall",
              f"/mnt/work/wheels/{wheel.name}", timeout=3600)
    return "/opt/venv/bin/python"


@pytest.fixture(scope="module")
def reference(work) -> dict:
    return json.loads((work / "x86.json").read_text())


@pytest.fixture(scope="module", params=sorted(PIS))
def pi(request, work, emulated_venv) -> tuple[str, dict]:
    """(profile, what pi_check.py reported inside that emulated Pi): one checker run per Pi."""
    name = request.param
    _emulated(work, PIS[name], "", emulated_venv, f"/mnt/work/{CHECKER.name}", "--clip", "/mnt/work/clip",
              "--gpt2", "/mnt/work/gpt2", "--out", f"/mnt/work/{name}.json", timeout=1800)
    return name, json.loads((work / f"{name}.json").read_text())


ENGINES = ("onnxruntime", "litert")


@pytest.mark.parametrize("engine", ENGINES)
def test_clip_numbers_match_x86(pi, reference, engine):
    _, got = pi
    for key in ("probs", "image_embeds", "text_embeds"):
        np.testing.assert_allclose(got["clip"][engine][key], reference["clip"][engine][key], atol=ATOL, rtol=0,
                                   err_msg=f"CLIP {key} on {engine}")


@pytest.mark.parametrize("engine", ENGINES)
def test_gpt2_greedy_tokens_match_x86(pi, reference, engine):
    _, got = pi
    assert got["gpt2"][engine]["tokens"] == reference["gpt2"][engine]["tokens"]


def test_engines_and_xnnpack(pi):
    name, got = pi
    for family in ("clip", "gpt2"):
        for engine in ENGINES:
            ran = got[family][engine]["ran"]
            assert ran["engine"] == engine and ran["device"] == name, ran
        litert = got[family]["litert"]["ran"]
        # the real state, as the engine reports it: the delegate was applied (its nodes replaced the graph's)
        assert all(c["delegate"] == "xnnpack" and c["delegated_nodes"] > 0 for c in litert["components"].values()), \
            litert["components"]
        assert not any(f["what"] == "xnnpack" for f in litert["fallbacks"]), litert["fallbacks"]


def test_device_detected_as_the_pi(pi):
    name, got = pi
    device = got["device"]
    assert device["profile"] == name and device["arch"] == "aarch64", device
    assert device["model"].startswith(f"Raspberry Pi {name[-1]}"), device
    assert device["has_int8_dot"] is (name == "rpi5"), device      # asimddp only on the Cortex-A76


def test_plan_for_the_pi(pi):
    """With only fp32 packages both Pis plan LiteRT fp32 first; on the Pi 5 int8 ranks ahead of fp32 on the route
    (dot product) but the package has none, so fp32 is its #2 precision."""
    name, got = pi
    for family, choices in got["plan"].items():
        first = choices[0]
        assert (first["engine"], first["format"], first["precision"]) == ("litert", "tflite", "fp32"), (family, first)
        assert first["options"]["delegate"] == "xnnpack", first
        assert f"fp32 is precision #{2 if name == 'rpi5' else 1}" in first["reason"], first["reason"]
        assert {c["engine"] for c in choices} == {"litert", "onnxruntime"}, choices


def test_runtime_unit_tests_inside_the_pi(work, emulated_venv):
    unit = work / "unit"
    unit.mkdir(exist_ok=True)
    for name in ("conftest.py", *UNIT_TESTS):
        shutil.copy(REPO / "tests" / name, unit / name)
    _emulated(work, PIS["rpi5"], "", emulated_venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", "/mnt/work/unit",
              timeout=900)
