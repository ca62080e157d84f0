"""Add a compressed variant to a package: quantize every component's graphs with one ``Scheme``, measure graph
parity, file sizes and the family's task metric against fp32, enforce an accuracy budget with a sensitivity pass,
and write the result into the package atomically (the package is replaced only once the new one is complete).

The sensitivity pass, when the budget is missed: every candidate layer gets an error score
(``quantize.sensitivity``), then the worst 1, 3, 9, ... layers are kept in float until the budget holds. The
chosen scheme, the excluded layers and every try are recorded in the manifest; when the budget still fails with
``max_excluded`` of the layers kept in float, nothing is written and ``BudgetError`` says what was reached.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from mmedge.errors import BudgetError, UsageError
from mmedge.exporter.package_writer import commit, recover, staging
from mmedge.quantize import calibration as calib
from mmedge.quantize.budget import METRICS, Budget, parse_budget
from mmedge.quantize.evaluation import run_task, score
from mmedge.quantize.samples import Sample, samples as default_samples
from mmedge.quantize.scheme import MODES, Scheme
from mmedge.quantize.sensitivity import graph_error, graph_files, sensitivity
from mmedge.quantize.tasks import task_for
from mmedge.runtime.manifest import Artifact, Component
from mmedge.runtime.package import Package, open_package

Log = Callable[[str], None]


@dataclass
class Result:
    """What ``add_variant`` did: the package path, the variant, its metrics and the budget outcome."""

    package: Path
    variant: str
    scheme: Scheme
    metrics: dict[str, float]
    sizes: dict[str, dict]
    excluded: list[str]
    tries: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"package": str(self.package), "variant": self.variant, "format": self.scheme.format,
                "mode": self.scheme.mode, "precision": self.scheme.precision, "metrics": self.metrics,
                "sizes": self.sizes, "excluded": self.excluded, "tries": self.tries}


def backend(fmt: str):
    return importlib.import_module(f"mmedge.quantize.backends.{fmt}")


def source_artifact(component: Component, fmt: str, static: bool | None, variant: str | None = None) -> Artifact | None:
    """The fp32 artifact of ``fmt`` to quantize: ``variant`` if given, else an exported one (not a variant made
    from another, such as ``fp32-opt``), the dynamic one unless ``static`` (TFLite has only fixed shapes)."""
    fp32 = [a for a in component.artifacts if a.format == fmt and a.precision == "fp32"]
    if variant is not None:
        fp32 = [a for a in fp32 if a.variant == variant]
    else:
        fp32 = [a for a in fp32 if "quantization" not in a.parity]
    if static is not None:
        fp32 = [a for a in fp32 if a.static == static]
    return sorted(fp32, key=lambda a: a.static)[0] if fp32 else None


class _Variant:
    """The files of one try: every component's graphs quantized into ``<component>/<format>-<variant>/``."""

    def __init__(self, pkg: Package, stage: Path, scheme: Scheme, name: str, sources: dict[str, Artifact],
                 calls: dict[str, list[calib.Call]], log: Log):
        self.pkg, self.stage, self.scheme, self.name = pkg, stage, scheme, name
        self.sources, self.calls, self.log = sources, calls, log
        self.backend = backend(scheme.format)
        self._candidates: dict[str, list[str]] | None = None

    def folder(self, component: str) -> str:
        return f"{component}/{self.scheme.format}-{self.name}"

    def target(self, component: str, rel: str) -> Path:
        return self.stage / self.folder(component) / Path(rel).name

    def candidates(self) -> dict[str, list[str]]:
        """{source graph file: layer names the scheme would quantize} (computed once)"""
        if self._candidates is None:
            self._candidates = {rel: list(self.backend.layers(self.pkg.file_path(rel),
                                                              self.scheme.for_component(component)))
                                for component, art in self.sources.items() for rel in graph_files(art)}
        return self._candidates

    def write(self, exclude: Sequence[str]) -> tuple[dict[str, Artifact], dict[str, dict]]:
        """Quantize every graph (``exclude``: layer names kept in float); returns new artifacts and records."""
        artifacts, records = {}, {}
        for component, art in self.sources.items():
            shutil.rmtree(self.stage / self.folder(component), ignore_errors=True)
            renamed = {}
            for rel in graph_files(art):
                dst = self.target(component, rel)
                dst.parent.mkdir(parents=True, exist_ok=True)
                feeds = calib.feeds_of(self.calls.get(rel, [])) if self.scheme.fed else None
                self.log(f"{self.scheme.format} {self.scheme.mode}: {rel}")
                mine = set(self.candidates()[rel])  # each graph gets only its own layer names
                records[rel] = self.backend.quantize_graph(self.pkg.file_path(rel), dst,
                                                          self.scheme.for_component(component), calibration=feeds,
                                                          exclude=[x for x in exclude if x in mine])
                if records[rel].get("fallback"):
                    self.log(f"  fell back to {records[rel]['method']}: {records[rel]['fallback']}")
                renamed[rel] = f"{self.folder(component)}/{dst.name}"
            written = sorted(p.relative_to(self.stage).as_posix() for p in (self.stage / self.folder(component)).rglob("*")
                             if p.is_file())
            main = renamed.get(art.file, next(iter(renamed.values())))
            signatures = {n: replace(s, file=renamed[s.file]) for n, s in art.signatures.items()}
            artifacts[component] = replace(art, variant=self.name, precision=self.scheme.precision, file=main,
                                           signatures=signatures,
                                           extra_files=tuple(f for f in written if f not in renamed.values()))
        return artifacts, records

    def package(self, artifacts: dict[str, Artifact]) -> Package:
        manifest = self.pkg.manifest
        components = {n: replace(c, artifacts=(*c.artifacts, artifacts[n])) for n, c in manifest.components.items()}
        return Package(root=self.stage, manifest=replace(manifest, components=components))


def _sizes(pkg: Package, sources: dict[str, Artifact], artifacts: dict[str, Artifact]) -> dict[str, dict]:
    out = {}
    for name, art in artifacts.items():
        before = sum(pkg.file_path(r).stat().st_size for r in sources[name].files())
        after = sum((pkg.root / r).stat().st_size for r in art.files())
        out[name] = {"bytes": after, "fp32_bytes": before, "ratio": after / before if before else None}
    return out


def add_variant(package: str | Path, out_dir: str | Path, scheme: Scheme, *, name: str | None = None,
                budget: str | Budget | None = None, samples: Sequence[Sample] | None = None,
                calibration: Sequence[Sample] | None = None, static: bool | None = None,
                source: str | None = None, max_excluded: float = 0.5, log: Log | None = None) -> Result:
    """Write ``package`` plus a ``scheme`` variant of every component to ``out_dir`` (may be the package itself).

    ``samples`` are the real inputs the task metric is measured on (default: the family's defaults,
    ``quantize.samples``); ``calibration`` the inputs whose recorded feeds calibrate (default: ``samples``).
    ``source``: the fp32 variant to start from (e.g. ``fp32-opt``, to quantize the ORT-optimised graph; default:
    the exported fp32 variant). ``max_excluded``: the sensitivity pass gives up once this share of the candidate
    layers is kept in float.
    """
    log = log or (lambda _m: None)
    if scheme.format not in MODES or scheme.mode not in MODES[scheme.format]:
        known = "; ".join(f"{f}: {', '.join(m)}" for f, m in MODES.items())
        raise UsageError(f"unknown mode '{scheme.mode}' for {scheme.format} (known: {known})")
    recover(package)  # a write of this package killed mid-swap: its previous version is put back first
    pkg = open_package(package)
    manifest = pkg.manifest
    task = task_for(manifest.family, manifest.task)
    target = parse_budget(budget, task.kind) if isinstance(budget, str) else budget
    sources = {n: source_artifact(c, scheme.format, static, source) for n, c in manifest.components.items()}
    missing = [n for n, a in sources.items() if a is None]
    if missing and source is not None:
        offered = sorted({v for f, v, p, _s in manifest.variants() if f == scheme.format and p == "fp32"})
        raise UsageError(f"components {', '.join(missing)} have no fp32 {scheme.format} variant '{source}'"
                         f"{' with fixed shapes' if static else ''}; --source takes one of: "
                         f"{', '.join(offered) or 'none (export the package with --formats ' + scheme.format + ')'}")
    if missing:
        raise UsageError(f"components {', '.join(missing)} have no fp32 {scheme.format} artifact to quantize; "
                         f"export the package with --formats {scheme.format}")
    is_static = next(iter(sources.values())).static
    name = name or scheme.default_name + ("-static" if is_static else "")
    taken = {v for f, v, _, _ in manifest.variants() if f == scheme.format}
    if name in taken:
        raise UsageError(f"the package already has a {scheme.format} variant '{name}'; name this one with --name")
    source_variant = next(iter(sources.values())).variant
    evaluation = list(samples) if samples is not None else default_samples(task.modality)
    calibrating = list(calibration) if calibration is not None else evaluation
    calls, reference = calib.record(pkg, scheme.format, source_variant, calibrating, log=log)
    if calibration is not None:
        reference = run_task(pkg, scheme.format, source_variant, evaluation, log=log)
    with staging(out_dir) as stage:
        for rel in manifest.files:
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(pkg.path(rel), dst)  # copies: onnx refuses external data with several hard links
        work = Package(root=stage, manifest=manifest)
        variant = _Variant(work, stage, scheme, name, sources, calls, log)
        candidates = variant.candidates()
        ordered: list[tuple[str, float]] | None = None
        total = sum(len(v) for v in candidates.values())
        excluded: list[str] = []
        tries: list[dict] = []
        while True:
            artifacts, records = variant.write(excluded)
            trial = variant.package(artifacts)
            outputs = run_task(trial, scheme.format, name, evaluation, log=log)
            metrics = score(task.kind, outputs, reference, evaluation)
            holds = target.holds(metrics) if target else True
            tries.append({"excluded": len(excluded), "metrics": metrics, "holds": holds})
            log(f"{name}: {metrics}" + (f" -> {target.describe(metrics)}" if target else ""))
            if holds:
                break
            if ordered is None:
                ordered = sensitivity(variant, candidates, log)
            step = max(1, 2 * len(excluded))
            if not ordered or len(excluded) >= len(ordered) or len(excluded) + step > max_excluded * max(total, 1):
                best = (min if METRICS[target.metric][0] == "lower" else max)(
                    tries, key=lambda t: t["metrics"][target.metric])
                raise BudgetError(f"the {scheme.format} {scheme.mode} variant cannot meet the budget {target.text}: "
                                  f"best reached {best['metrics']} "
                                  f"with up to {len(excluded)} of {total} layers kept in float; loosen the budget, "
                                  "give more calibration samples (--calibration DIR) or pick a milder mode "
                                  "(int8 instead of int4, static-int8 with --option per_channel=true)")
            excluded = [n for n, _ in ordered[:len(excluded) + step]]
        sizes = _sizes(trial, sources, artifacts)
        final = {}
        for comp, art in artifacts.items():
            graphs = {rel: graph_error(scheme.format, pkg.file_path(rel), variant.target(comp, rel), calls.get(rel, []))
                      for rel in graph_files(sources[comp])}
            final[comp] = replace(art, parity={
                "quantization": {"format": scheme.format, "mode": scheme.mode, "options": scheme.options,
                                 "source_variant": source_variant,
                                 "records": {r: records[r] for r in graph_files(sources[comp])},
                                 "excluded": [x for x in excluded if any(x in candidates[r]
                                                                         for r in graph_files(sources[comp]))],
                                 "calibration": {"samples": [s.name for s in calibrating],
                                                 "used": scheme.calibrated}},
                "graph_vs_fp32": graphs, "size": sizes[comp],
                "task_metric": {"metrics": metrics, "samples": [s.name for s in evaluation],
                                "reference": f"{scheme.format}/{source_variant} on the same engine"},
                "budget": {**target.to_dict(), "holds": True, "tries": tries} if target else None})
        new = variant.package(final).manifest
        path = commit(stage, out_dir, new)
    return Result(path, name, scheme, metrics, sizes, excluded, tries)
