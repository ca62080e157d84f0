"""Turns a package + device plan into loaded component runners, recording every fallback on the way.

The planner (``mmedge.devices``) orders the (format, variant, engine, options) choices for the device;
here each choice is tried in turn until every component of the package loads on it. Each choice that
fails is kept in ``RunInfo.fallbacks`` with the reason, so a result can always say what really ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmedge.devices import ArtifactRef, DetectedDevice, detect, plan
from mmedge.errors import EngineUnavailableError, PackageError
from mmedge.runtime.accelerators import FileContext, file_options
from mmedge.runtime.engines.base import open_session
from mmedge.runtime.package import Package
from mmedge.runtime.runner import ComponentRunner


@dataclass
class RunInfo:
    """What ran: the device profile, engine, format, variant, and per component what the engine reports."""

    device: str
    engine: str
    format: str
    variant: str
    precision: str
    options: dict
    components: dict[str, dict] = field(default_factory=dict)
    fallbacks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"device": self.device, "engine": self.engine, "format": self.format, "variant": self.variant,
                "precision": self.precision, "options": self.options, "components": self.components,
                "fallbacks": self.fallbacks}


def _component_options(engine: str, artifact, options: dict) -> dict:
    """Engine options for one component. ONNX Runtime pre-packs every MatMul weight into a copy in each session's
    heap: worth it for speed (a Whisper tiny.en decode step 5 %, a Qwen2.5-0.5B step 20 % faster), at the cost of
    a second copy of the weights. So components read their weights in place from the package's files when the
    device plan asks for ``lean_memory`` (small-memory boards and phones), and a KV-cache step graph (it takes
    ``past_keys``) does so whenever its artifact has several graphs (static ``decode`` + ``prefill_N``: one
    packed copy per graph otherwise). A user's explicit ``prepack_weights`` wins."""
    if engine != "onnxruntime" or "prepack_weights" in options:
        return options
    per_token = any(t.name == "past_keys" for t in artifact.inputs)
    several_graphs = len({s.file for s in artifact.signatures.values()}) > 1
    if options.get("lean_memory") or (per_token and several_graphs):
        return {**options, "prepack_weights": False}
    return options


def load_runners(package: Package, *, engine: str | None = None, device: str | None = None,
                 variant: str | None = None, options: dict | None = None,
                 verify: bool = False) -> tuple[dict[str, ComponentRunner], RunInfo]:
    """Load every component of ``package`` on the first workable choice of the device plan.

    ``options`` are merged over the planner's options for the chosen engine (e.g. a user's
    ``INFERENCE_PRECISION_HINT``, ``num_threads``, ``cache_dir`` or ``dla``); accelerator routes then get
    per-file options (``runtime.accelerators``: TensorRT shape profiles and caches, NPU static shapes and cache).
    ``verify`` checks the sha256 of a choice's files before loading them; a damaged file is a ``ChecksumError``,
    never a silent fallback to another variant.
    """
    target = device if device is not None else detect()  # a DetectedDevice carries cores and the CPU's int8 ISA
    device_name = device or target.profile
    refs = [ArtifactRef(format=f, variant=v, precision=p, static=s) for f, v, p, s in package.manifest.variants()]
    if variant and variant not in {r.variant for r in refs}:
        raise PackageError(f"variant '{variant}' is not in this package (has: "
                           f"{', '.join(sorted({r.variant for r in refs}))}); export it or pick another")
    the_plan = plan(refs, target, engine=engine, variant=variant)
    fallbacks = [{"what": what, "why": why} for what, why in the_plan.skipped]
    the_plan.require()
    failures: list[Exception] = []
    for choice in the_plan.choices:
        merged = {**choice.to_dict()["options"], **(options or {})}
        runners: dict[str, ComponentRunner] = {}
        if verify:
            package.check(rel for component in package.manifest.components.values()
                          if (a := component.find(choice.format, choice.variant)) is not None for rel in a.files())
        try:
            for name, component in package.manifest.components.items():
                artifact = component.find(choice.format, choice.variant)
                if artifact is None:
                    raise PackageError(f"component '{name}' has no {choice.format}/{choice.variant} artifact")
                component_options = _component_options(choice.engine, artifact, merged)
                context = FileContext.of(package, name, target if isinstance(target, DetectedDevice) else None)
                sessions = {sig.file: open_session(choice.engine, package.file_path(sig.file),
                                                   precision=artifact.precision,
                                                   options=file_options(choice.engine, component_options, artifact,
                                                                        sig, context))
                            for sig in artifact.signatures.values()}
                runners[name] = ComponentRunner(name, artifact, sessions)
        except (EngineUnavailableError, PackageError) as e:
            failures.append(e)
            where = f" ({merged['device']})" if merged.get("device") else ""  # OpenVINO: NPU, GPU or CPU
            fallbacks.append({"what": f"{choice.format}/{choice.variant} on {choice.engine}{where}", "why": str(e)})
            continue
        info = RunInfo(device=device_name, engine=choice.engine, format=choice.format, variant=choice.variant,
                       precision=choice.precision, options=merged,
                       components={n: r.session.info for n, r in runners.items()}, fallbacks=fallbacks)
        for n, r in runners.items():
            info.fallbacks.extend({"component": n, **f} for f in r.session.info.get("fallbacks", []))
        return runners, info
    # Only damaged files: a package problem (re-export); otherwise the engines/devices are the problem.
    error = PackageError if all(isinstance(e, PackageError) for e in failures) else EngineUnavailableError
    raise error("no choice of the device plan could load this package: "
                + "; ".join(f"{f['what']}: {f['why']}" for f in fallbacks))
