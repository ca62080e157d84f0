"""Crash safety (issue 7, part 2): ``mmedge export`` / ``quantize`` / ``optimize`` killed with SIGKILL at known
steps never leave a folder that opens as a package, never damage the package they were replacing, and a rerun of
the same command completes; a failed update leaves the package byte-identical; distillation resumes from its
checkpoint after a SIGKILL and ends where an uninterrupted run ends.

Where a kill lands is made exact by ``fixtures/kill_at.py`` (an audit hook in the child kills it just before a
named file-system step: the first graph written in the staging folder, the manifest, each rename of the swap);
the slow tests add kills from outside after polling the file system and at time offsets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from mmedge.errors import BudgetError, PackageError, ParityError
from mmedge.exporter import package_writer, parity
from mmedge.runtime.manifest import MANIFEST_NAME
from mmedge.runtime.package import SCRATCH_DIR, open_package

KILL_AT = Path(__file__).parent / "fixtures" / "kill_at.py"
CLI = [sys.executable, "-m", "mmedge.cli.main"]


# --------------------------------------------------------------------------------------------- helpers


def run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def killed_at(event: str, regex: str, args: list[str], nth: int = 1) -> None:
    """Run ``mmedge ARGS`` (or ``-c CODE``) and SIGKILL it just before the NTH ``event`` matching ``regex``."""
    proc = run([sys.executable, str(KILL_AT), event, regex, str(nth), "--", *args])
    assert proc.returncode == -signal.SIGKILL, f"the kill point was not reached (exit {proc.returncode}):\n" \
                                               f"{proc.stderr[-3000:]}"


def killed_when(args: list[str], ready: Callable[[], bool], timeout: float = 600, may_finish: bool = False) -> bool:
    """Start ``args`` and SIGKILL it from outside as soon as ``ready()`` (polled every 5 ms) is true.

    Returns whether the kill landed. A run that ends first fails the test, unless ``may_finish`` (kills at time
    offsets: how long a run takes varies from machine to machine, and a clean finish is a valid outcome too).
    """
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                assert may_finish and proc.returncode == 0, \
                    f"finished before the kill point (exit {proc.returncode}): {proc.stderr.read()[-2000:]}"
                return False
            assert time.monotonic() < deadline, "kill point not reached in time"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        return True
    finally:
        proc.wait()  # reaped: a zombie would still count as a live writer
        proc.stderr.close()


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (the byte-level identity of a package)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def scratch(target: Path) -> list[Path]:
    return [p for p in target.parent.iterdir() if (m := SCRATCH_DIR.match(p.name)) and m["name"] == target.name]


def assert_no_other_package(root: Path, keep: set[Path]) -> None:
    """No folder under ``root`` opens as a package, except the ``keep`` ones (and what lies inside them)."""
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        if any(folder == k or k in folder.parents for k in keep):
            continue
        with pytest.raises(PackageError):
            open_package(folder, verify=True)


def assert_state(target: Path, before: dict[str, str], expect: str, keep: set[Path]) -> dict[str, str]:
    """After a kill: ``old`` (the package as it was, intact), ``missing`` (mid-swap: no target, the old package
    whole in one ``.old-`` folder) or ``new`` (the new package complete); no other folder opens as a package.
    Returns the target's snapshot (the "before" of the next step)."""
    assert_no_other_package(target.parent, keep | {target})
    if expect == "missing":
        assert not target.exists()
        aside = [p / "pkg" for p in scratch(target) if ".old-" in p.name]
        assert len(aside) == 1 and snapshot(aside[0]) == before
        return before
    after = snapshot(target)
    assert (after == before) if expect == "old" else (after != before)
    open_package(target, verify=True)
    return after


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory) -> Path:
    from mmedge.exporter.families import write_tiny_model

    return write_tiny_model("clip", tmp_path_factory.mktemp("crash-model") / "clip")


@pytest.fixture(scope="module")
def onnx_package(clip_model, tmp_path_factory) -> Path:
    """The tiny CLIP exported to ONNX only (fast): the package that the kills try to replace or update."""
    from mmedge.exporter.export import export

    return export(clip_model, tmp_path_factory.mktemp("crash-pkg") / "pkg", formats=["onnx"])


@pytest.fixture
def work(onnx_package, tmp_path) -> Path:
    """A fresh copy of the package at ``tmp_path/pkg``, alone in its folder."""
    shutil.copytree(onnx_package, tmp_path / "pkg")
    return tmp_path / "pkg"


# --------------------------------------------------------------------------------------------- export

# (what is on disk when the kill lands, audit event, regex over its path(s), the target afterwards)
STAGED_GRAPH = ("a graph half-written in the staging folder", "open", r"/\.pkg\.staging-\d+-[^/]+/.*\.onnx$", "old")
MANIFEST_OPEN = ("every file staged, the manifest not yet written", "open", r"mmedge\.json\.tmp$", "old")
MANIFEST_RENAME = ("the manifest written, not yet renamed", "os.rename", r"mmedge\.json\.tmp -> ", "old")
OLD_ASIDE = ("the old package about to be set aside", "os.rename", r"/pkg -> .*/\.pkg\.old-\d+-[^/]+/pkg$", "old")
MID_SWAP = ("the old package set aside, the new one not in place", "os.rename", r"\.staging-[^/]+ -> .*\.final-",
            "missing")
FINAL_MOVE = ("the complete new package about to move in", "os.rename", r"\.final-[^/]+ -> .*/pkg$", "missing")
OLD_REMOVAL = ("the new package in place, the old one not yet removed", "shutil.rmtree", r"/\.pkg\.old-", "new")
EVERY_STEP = [STAGED_GRAPH, MANIFEST_OPEN, MANIFEST_RENAME, OLD_ASIDE, MID_SWAP, FINAL_MOVE, OLD_REMOVAL]


@pytest.mark.parametrize("steps", [pytest.param([MID_SWAP], id="mid-swap"),  # quantize's test kills a staged write
                                   pytest.param(EVERY_STEP, id="every-step", marks=pytest.mark.slow)])
def test_export_killed_at_each_step_keeps_the_old_package_and_reruns(clip_model, work, steps):
    """Kills follow one another (each run first cleans up after the previous one), then a rerun completes."""
    command = [*CLI, "export", str(clip_model), str(work), "--formats", "onnx"]
    before = snapshot(work)
    for what, event, regex, expect in steps:
        killed_at(event, regex, command[3:])
        before = assert_state(work, before, expect, {clip_model})
        if expect == "missing":  # what the next run does first: the old package goes back, byte for byte
            package_writer.recover(work)
            assert snapshot(work) == before and not scratch(work)
    proc = run(command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(work) != before and open_package(work, verify=True).manifest.family == "clip"
    assert not scratch(work)  # the rerun removed what the killed runs left


@pytest.mark.slow
def test_export_killed_from_outside_when_graphs_appear_and_at_time_offsets(clip_model, work):
    command = [*CLI, "export", str(clip_model), str(work), "--formats", "onnx"]
    before = snapshot(work)

    def staged_graph() -> bool:
        return any(p.suffix == ".onnx" for s in scratch(work) for p in s.rglob("*"))

    killed_when(command, staged_graph)
    assert_state(work, before, "old", {clip_model})
    start = time.monotonic()  # an uninterrupted run sets the offsets: a fixed number of seconds missed on CI
    proc = run(command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    duration = time.monotonic() - start
    landed = 0
    for fraction in (0.2, 0.5, 0.8):
        start = time.monotonic()
        landed += killed_when(command, lambda: time.monotonic() - start > fraction * duration, may_finish=True)
        if not work.exists():
            package_writer.recover(work)
        assert_no_other_package(work.parent, {clip_model, work})
        open_package(work, verify=True)  # whichever side of the swap the kill fell on, a whole package is there
    assert landed >= 2, f"only {landed} of 3 kills landed before the run ended ({duration:.1f} s uninterrupted)"
    proc = run(command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    open_package(work, verify=True)
    assert not scratch(work)


def test_export_failing_parity_leaves_the_package_byte_identical(clip_model, work, monkeypatch):
    from mmedge.exporter.export import export

    real_check = parity.check  # no tolerance can hold: every graph fails its parity check, as a wrong one would

    def failing_check(spec, *args, **kwargs):
        return real_check(dataclasses.replace(spec, atol=-1.0), *args, **kwargs)

    monkeypatch.setattr(parity, "check", failing_check)
    before = snapshot(work)
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export(clip_model, work, formats=["onnx"])
    assert snapshot(work) == before and not scratch(work)


# --------------------------------------------------------------------------------------------- quantize


def test_quantize_killed_mid_write_and_mid_swap_then_rerun_completes(work):
    command = ["quantize", str(work), "--mode", "int8", "--formats", "onnx", "--limit", "2"]
    before = snapshot(work)
    killed_at("os.rename", r" -> .*/\.pkg\.staging-\d+-[^/]+/vision/onnx-int8/", command)  # text's int8 staged
    assert_state(work, before, "old", set())
    killed_at("os.rename", r"\.staging-[^/]+ -> .*\.final-", command)
    assert_state(work, before, "missing", set())  # the rerun's first step puts it back (cmd_quantize -> recover)
    proc = run([*CLI, *command])
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = snapshot(work)
    package = open_package(work, verify=True)
    assert {v for _f, v, _p, _s in package.manifest.variants()} == {"fp32", "int8"}
    assert {k: v for k, v in after.items() if k != MANIFEST_NAME} == {
        **{k: v for k, v in before.items() if k != MANIFEST_NAME},
        **{k: v for k, v in after.items() if "/onnx-int8/" in k}}  # the fp32 files came through unchanged
    assert not scratch(work)


def test_quantize_over_budget_leaves_the_package_byte_identical(work):
    from mmedge.quantize.compress import add_variant
    from mmedge.quantize.samples import samples
    from mmedge.quantize.scheme import Scheme

    before = snapshot(work)
    with pytest.raises(BudgetError, match="cannot meet the budget"):
        add_variant(work, work, Scheme("onnx", "dynamic-int8"), budget="cosine>=0.99999999",
                    samples=samples("image", limit=2), max_excluded=0.0)
    assert snapshot(work) == before and not scratch(work)


# --------------------------------------------------------------------------------------------- optimize


@pytest.mark.slow
def test_optimize_killed_in_prune_export_and_quantize_then_rerun_completes(tmp_path):
    from mmedge.exporter.families import write_tiny_model

    model = write_tiny_model("gpt2", tmp_path / "gpt2")
    out = tmp_path / "pkg"
    command = ["optimize", str(model), str(out), "--device", "x86-cpu", "--prune", "ffn=0.5", "--quantize", "int8",
               "--formats", "onnx", "--limit", "2"]
    work_dir = tmp_path / ".pkg.work"
    killed_at("open", r"/\.pkg\.work/\.pruned\.[^/]+/config\.json$", command)  # the pruned model half-saved
    assert not out.exists()
    killed_at("open", r"/\.pkg\.staging-\d+-[^/]+/.*\.onnx$", command)  # exporting
    assert not out.exists()
    assert_no_other_package(tmp_path, {model, work_dir})
    killed_at("os.rename", r"\.staging-[^/]+ -> .*\.final-", command, nth=2)  # the int8 variant's swap
    assert_no_other_package(tmp_path, {model, work_dir, out})
    package_writer.recover(out)
    fp32_only = open_package(out, verify=True)  # the exported package, back in place, without int8
    assert {v for _f, v, _p, _s in fp32_only.manifest.variants()} == {"fp32"}
    proc = run([*CLI, *command])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {v for _f, v, _p, _s in open_package(out, verify=True).manifest.variants()} == {"fp32", "int8"}
    assert not scratch(out)


# --------------------------------------------------------------------------------------------- scratch folders


def test_stale_scratch_of_dead_writers_is_removed_and_live_ones_are_kept(work):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        folders = {kind: work.parent / f".pkg.{kind}-{pid}-x" for kind, pid in
                   (("staging", live.pid), ("final", dead.pid), ("old", dead.pid))}
        shutil.copytree(work, folders["staging"])  # a concurrent writer's complete stage
        shutil.copytree(work, folders["final"])
        (folders["old"] / "pkg").mkdir(parents=True)
        for folder in (folders["staging"], folders["final"], folders["old"] / "pkg"):
            with pytest.raises(PackageError, match="scratch folder.*rerun"):
                open_package(folder)
        package_writer.recover(work)
        assert [p.name for p in scratch(work)] == [folders["staging"].name]
        assert open_package(work, verify=True)
    finally:
        live.kill()
        live.wait()


def test_an_interrupted_swap_is_rolled_back_to_the_previous_package(work):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    before = snapshot(work)
    aside = work.parent / f".pkg.old-{dead.pid}-y"
    aside.mkdir()
    os.replace(work, aside / "pkg")
    shutil.copytree(aside / "pkg", work.parent / f".pkg.final-{dead.pid}-z")  # the new one, never moved in
    package_writer.recover(work)
    assert snapshot(work) == before and not scratch(work)


# --------------------------------------------------------------------------------------------- distillation

SPEC = "steps=6,eval_every=2,lr=3e-3,batch=4,threads=1"  # checkpoints at steps 2, 4, 6 (save_every = eval_every)
DISTILL = f"""
import sys
from mmedge.quantize.distill import default_inputs, distill, parse_distill_spec
teacher, student, ckpt = sys.argv[1:4]
report = distill(teacher, student, default_inputs("causal-lm")[:12], parse_distill_spec("{SPEC}"),
                 checkpoint_dir=ckpt, progress=False)
print("RESUMED", report.resumed_from, "STEP", report.step)
"""


def test_distillation_killed_after_a_checkpoint_resumes_from_its_step(tmp_path):
    import torch
    from safetensors.torch import load_file

    from mmedge.exporter.families import write_tiny_model
    from mmedge.quantize.distill import default_inputs, distill, parse_distill_spec

    teacher = write_tiny_model("gpt2", tmp_path / "teacher")
    ckpt = tmp_path / "ckpt"
    killed_when([sys.executable, "-c", DISTILL, str(teacher), str(tmp_path / "student"), str(ckpt)],
                lambda: (ckpt / "checkpoint.pt").is_file())
    saved = torch.load(ckpt / "checkpoint.pt", weights_only=True)["step"]
    assert 2 <= saved < 6 and saved % 2 == 0  # killed before the run ended
    resumed = run([sys.executable, "-c", DISTILL, str(teacher), str(tmp_path / "student"), str(ckpt)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"RESUMED {saved} STEP 6" in resumed.stdout
    whole = distill(teacher, tmp_path / "whole", default_inputs("causal-lm")[:12], parse_distill_spec(SPEC),
                    checkpoint_dir=tmp_path / "ckpt-whole", progress=False)
    assert whole.resumed_from is None and whole.step == 6
    final, reference = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("student", "whole"))
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in final)
