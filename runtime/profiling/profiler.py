"""Profiles a package: every (engine, variant) measured in its own fresh process, then compared for accuracy
with the ONNX Runtime fp32 reference. The options are checked here, before any process starts, so a typo
is a typed error naming the fix rather than a failure deep inside a worker.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from mmedge import __version__, errors
from mmedge.errors import EngineUnavailableError, MmedgeError, UsageError
from mmedge.runtime.engines.base import ENGINES, FORMAT_OF_ENGINE
from mmedge.runtime.package import open_package
from mmedge.runtime.profiling import accuracy
from mmedge.runtime.profiling.operators import TOP_NODES
from mmedge.runtime.profiling.schema import SCHEMA_VERSION


def _spec(package: Path, engine: str | None, variant: str, device: str | None, options: dict, *, runs: int,
          warmup: int, operator_calls: int, progress: bool, reference_only: bool = False,
          top_nodes: int | None = TOP_NODES) -> dict:
    return {"package": str(package), "engine": engine, "variant": variant, "device": device, "options": options,
            "runs": runs, "warmup": warmup, "operator_calls": operator_calls, "progress": progress,
            "reference_only": reference_only, "top_nodes": top_nodes}


def _run_worker(spec: dict) -> dict:
    """One fresh process; its stderr (progress bars) goes straight to ours; its typed errors are re-raised."""
    proc = subprocess.run([sys.executable, "-m", "mmedge.runtime.profiling.worker", json.dumps(spec)],
                          stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise EngineUnavailableError(
            f"the profiling process for {spec['engine'] or 'planned engine'}/{spec['variant']} exited with code "
            f"{proc.returncode} (messages above); reproduce with `mmedge run {spec['package']} --variant "
            f"{spec['variant']}`")
    out = json.loads(lines[-1])
    if "error" in out:
        cls = getattr(errors, out["error"]["type"], MmedgeError)
        raise (cls if isinstance(cls, type) and issubclass(cls, MmedgeError) else MmedgeError)(out["error"]["message"])
    return out


def _check(package: Path, engines: list[str | None], variants: list[str] | None, runs: int, warmup: int):
    pkg = open_package(package, verify=False)  # PackageError (naming the fix) when it is not a package
    for engine in engines:
        if engine is not None and engine not in ENGINES:
            raise UsageError(f"unknown engine '{engine}'; choose from: {', '.join(ENGINES)}")
    offered = pkg.manifest.variants()
    names = list(dict.fromkeys(v for _, v, _, _ in offered))
    for variant in variants or []:
        if variant not in names:
            raise UsageError(f"variant '{variant}' is not in this package (has: {', '.join(names)}); "
                             "pick from those with --variants or export it")
    if runs < 1 or warmup < 0:
        raise UsageError("--runs must be at least 1 and --warmup at least 0")
    return pkg, offered, names


def _variants_for(engine: str | None, offered: list[tuple], names: list[str], wanted: list[str] | None) -> list[str]:
    """The requested variants, or every variant the engine's format has (all of them with no engine)."""
    if wanted:
        return wanted
    if engine is None:
        return names
    return list(dict.fromkeys(v for f, v, _, _ in offered if f == FORMAT_OF_ENGINE[engine]))


def _host() -> dict:
    return {"machine": platform.machine(), "system": platform.system(), "cores": os.cpu_count(),
            "python": platform.python_version()}


def _add_accuracy(results: list[dict], reference: dict | None, why_not: str) -> None:
    for r in results:
        outputs = r.pop("outputs")
        r["accuracy"] = (accuracy.compare(r["kind"], outputs, reference["outputs"]) if reference
                         else accuracy.unavailable(why_not))


def profile(package: str | Path, *, engines: list[str | None] | None = None, device: str | None = None,
            variants: list[str] | None = None, runs: int = 20, warmup: int = 3, operator_calls: int = 3,
            options: dict | None = None, progress: bool = True, top_nodes: int | None = TOP_NODES) -> dict:
    """Measure each (engine, variant) of ``package`` and return the profile dict (schema: ``schema.py``).

    ``engines``: engine names (``None`` in the list = the device plan's choice); ``variants``: default all the
    engine's variants; ``runs``/``warmup``: timed and untimed task calls; ``operator_calls``: extra calls with
    the engine's own profiler on; ``options``: engine options as for ``runtime.load``; ``top_nodes``: how many of
    the slowest nodes each result lists (None: every node).
    """
    root = Path(package)
    engines = list(engines or [None])
    pkg, offered, names = _check(root, engines, variants, runs, warmup)
    opts = dict(options or {})
    results = []
    for engine in engines:
        for variant in _variants_for(engine, offered, names, variants):
            results.append(_run_worker(_spec(root, engine, variant, device, opts, runs=runs, warmup=warmup,
                                             operator_calls=operator_calls, progress=progress,
                                             top_nodes=top_nodes)))
    ref = accuracy.REFERENCE
    reference = next((r for r in results if r["engine"] == ref["engine"] and r["variant"] == ref["variant"]), None)
    why_not = ""
    if reference is None:
        try:
            reference = _run_worker(_spec(root, ref["engine"], ref["variant"], device, opts, runs=1, warmup=0,
                                          operator_calls=0, progress=False, reference_only=True))
        except MmedgeError as e:
            why_not = f"the reference {ref['engine']}/{ref['variant']} could not run: {e}"
    reference = dict(reference) if reference else None  # a copy: _add_accuracy pops each result's outputs
    _add_accuracy(results, reference, why_not)
    m = pkg.manifest
    return {"schema_version": SCHEMA_VERSION, "tool": f"mmedge {__version__}",
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": _host(),
            "package": {"path": str(root.resolve()), "family": m.family, "task": m.task, "source": m.source},
            "options": {"engines": engines, "device": device, "variants": variants, "runs": runs, "warmup": warmup,
                        "operator_calls": operator_calls, "options": opts},
            "results": results}
