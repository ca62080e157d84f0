"""The planner: match what a package offers against a device's routes → an ordered list of runnable choices.

A plan is the device's routes (in profile order) crossed with the package's artifacts (in the route's precision
order), minus what cannot run here. Nothing is dropped silently: every artifact/route pair that is not a choice
lands in ``skipped`` with the reason, and ``fixes`` says what would make it run (an extra to install, a format
to export). The runtime tries ``choices[0]`` and falls back down the list, reporting what really ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mmedge.errors import EngineUnavailableError, UsageError

from .detect import DetectedDevice, available_engines
from .profiles import EXTRA_OF_ENGINE, FORMAT_OF_ENGINE, THREAD_OPTIONS, DeviceProfile, Route, profile, thaw


@dataclass(frozen=True)
class ArtifactRef:
    """What a package offers, one per (format, variant) of a component set (the manifest's Artifact fits too)."""

    format: str             # onnx | openvino | tflite
    variant: str            # e.g. "fp32", "fp32-static", "int8"
    precision: str          # fp32 | fp16 | int8 | int4
    static: bool


@dataclass(frozen=True)
class PlanChoice:
    """One runnable way: this artifact on this engine with these options, and why it sits where it does."""

    format: str
    variant: str
    precision: str
    engine: str
    options: dict[str, Any]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "variant": self.variant, "precision": self.precision, "engine": self.engine,
                "options": thaw(self.options), "reason": self.reason}


@dataclass
class Plan:
    """Ordered choices (try the first, fall back down the list), what was skipped and why, and the fixes."""

    device: str
    choices: list[PlanChoice]
    skipped: list[tuple[str, str]]
    fixes: list[str] = field(default_factory=list)    # what would make more (or anything) runnable
    # Artifacts no considered route runs (another format, or excluded by --engine): not fallbacks, just unused.
    unused: list[tuple[str, str]] = field(default_factory=list)

    def require(self) -> Plan:
        """This plan if it has a choice; otherwise ``EngineUnavailableError`` saying what to install or export."""
        if self.choices:
            return self
        fixes = "; or ".join(self.fixes) or "export the model for this device"
        raise EngineUnavailableError(f"nothing in this package can run on '{self.device}': {fixes}")

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "choices": [c.to_dict() for c in self.choices],
                "skipped": [list(s) for s in self.skipped], "fixes": list(self.fixes),
                "unused": [list(s) for s in self.unused]}


def precision_order(route: Route, prof: DeviceProfile) -> list[str]:
    """The route's precision order, with int8 first on CPU routes of CPUs that have int8 dot product."""
    order = list(route.precisions)
    if route.target == "cpu" and prof.has_int8_dot and "int8" in order:
        order.remove("int8")
        order.insert(0, "int8")
    return order


def route_options(route: Route, cores: int | None) -> dict[str, Any]:
    """The route's engine options with unset thread counts set to ``cores`` (left unset when ``cores`` is None:
    the device is not this machine, so its core count is unknown)."""
    options = thaw(route.options)
    for key in THREAD_OPTIONS:
        if cores is not None and key in options and options[key] is None:
            options[key] = cores
    return options


def _reason(prof: DeviceProfile, route: Route, art: Any, rank: int, forced: list[str]) -> str:
    why = [f"{prof.title}: {art.format}/{art.variant} on {route.engine} ({route.accelerator}, {route.target})",
           f"{art.precision} is precision #{rank + 1} on this route"]
    if route.target == "cpu" and art.precision == "int8":
        why.append("int8 first: the CPU has int8 dot product" if prof.has_int8_dot
                   else "int8 after float: the CPU has no int8 dot product")
    if route.static_only:
        why.append("static shapes, as this accelerator requires")
    return "; ".join(why + [f"forced by {f}" for f in forced])


def _device(device: DeviceProfile | DetectedDevice | str, cores: int | None) -> tuple[DeviceProfile, int]:
    if isinstance(device, DetectedDevice):
        return device.device_profile(), cores or device.cores or os.cpu_count() or 1
    prof = profile(device) if isinstance(device, str) else device
    return prof, cores or os.cpu_count() or 1


def plan(artifacts: Sequence[ArtifactRef], device: DeviceProfile | DetectedDevice | str, *,
         engine: str | None = None, variant: str | None = None, available: Mapping[str, bool] | None = None,
         cores: int | None = None) -> Plan:
    """Order the package's artifacts for ``device``: routes in profile order, precisions in route order.

    ``engine`` keeps only that engine's routes, ``variant`` only that variant; ``available`` is the engine
    availability (default: ``available_engines()``); ``cores`` fills unset thread counts (default: the
    detected device's cores, else ``os.cpu_count()``). An empty ``choices`` is not an error here: call
    ``Plan.require()`` to raise one that names the fix.
    """
    prof, cores = _device(device, cores)
    if engine is not None and engine not in FORMAT_OF_ENGINE:
        raise UsageError(f"unknown engine '{engine}'; engines: {', '.join(FORMAT_OF_ENGINE)}")
    if variant is not None and variant not in {a.variant for a in artifacts}:
        offered = sorted({a.variant for a in artifacts})
        raise UsageError(f"variant '{variant}' is not in the package; it offers: {', '.join(offered) or 'nothing'}")
    avail = available_engines() if available is None else available
    forced = [f for f, v in (("--engine", engine), ("--variant", variant)) if v is not None]
    routes = [r for r in prof.preferred if engine is None or r.engine == engine]
    arts = [a for a in artifacts if variant is None or a.variant == variant]
    result = Plan(device=prof.name, choices=[], skipped=[])
    fixes: dict[str, None] = {}     # ordered set
    used: set[int] = set()

    for route in routes:
        for rank, precision in enumerate(precision_order(route, prof)):
            matching = [a for a in arts if a.format == route.format and a.precision == precision]
            # Static artifacts first where the device prefers static shapes, dynamic first elsewhere.
            for art in sorted(matching, key=lambda a: a.static != prof.static_shapes):
                what = f"{art.format}/{art.variant} on {route.engine} ({route.accelerator})"
                used.add(id(art))
                if route.static_only and not art.static:
                    result.skipped.append((what, f"{route.accelerator} compiles static shapes only: "
                                                 f"export a static variant of {art.precision} {art.format}"))
                    fixes[f"export a static-shape {route.format} variant for {route.accelerator}"] = None
                    continue
                options, reason = route_options(route, cores), _reason(prof, route, art, rank, forced)
                if not avail.get(route.engine):
                    hint = f"pip install 'mmedge[{EXTRA_OF_ENGINE[route.engine]}]'"
                    if route.engine == "litert" and avail.get("tflite_runtime") and art.precision in ("fp32", "fp16"):
                        options["runtime"] = "tflite_runtime"    # works for float files; wrong numbers on int8
                        reason += "; on tflite_runtime (ai-edge-litert missing; float files only)"
                    else:
                        result.skipped.append((what, f"engine not installed: {hint}"))
                        fixes[hint] = None
                        continue
                result.choices.append(PlanChoice(format=art.format, variant=art.variant, precision=art.precision,
                                                 engine=route.engine, options=options, reason=reason))

    for art in arts:
        if id(art) not in used:
            result.unused.append((f"{art.format}/{art.variant}",
                                  f"no {engine or ''}{' ' if engine else ''}route of {prof.name} runs "
                                  f"{art.precision} {art.format}"))
    if not result.choices:
        missing = [r for r in routes if not any(a.format == r.format for a in arts)]
        wanted = [r.format for r in missing if avail.get(r.engine)] or [r.format for r in missing]
        if wanted:
            fixes[f"export with --formats {','.join(dict.fromkeys(wanted))}"] = None
        if not routes:
            fixes[f"drop --engine {engine}: {prof.name} has no {engine} route "
                  f"(engines: {', '.join(dict.fromkeys(r.engine for r in prof.preferred))})"] = None
    result.fixes = list(fixes)
    return result
