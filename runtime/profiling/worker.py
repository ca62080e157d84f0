"""Measures ONE variant on ONE engine in a fresh process: ``python -m mmedge.runtime.profiling.worker SPEC``.

A fresh process per variant is what makes peak RSS honest (a high-water mark never goes down, so a second
variant loaded in the same process would inherit the first one's peak) and what makes "cold first inference"
really cold. The process imports only the slim runtime; the modules it saw are reported (``heavy_modules``)
so a test can prove no torch crept in. ``SPEC`` is a JSON object (see ``profiler._spec``); the result is one
JSON line on stdout, progress goes to stderr, and an ``MmedgeError`` travels back as ``{"error": ...}`` so the
parent re-raises the same typed error.
"""

from __future__ import annotations

import json
import sys
import time

from mmedge.errors import MmedgeError
from mmedge.runtime.profiling import operators, workloads
from mmedge.runtime.profiling.measure import current_rss_bytes, files_size, latency_stats, peak_memory
from mmedge.runtime.profiling.progress import Progress

HEAVY = ("torch", "transformers", "optimum", "diffusers", "tensorflow", "mmedge.exporter", "mmedge.quantize")


def _ms_since(start: float) -> float:
    return 1000 * (time.perf_counter() - start)


def _load(spec: dict, options: dict):
    from mmedge.runtime import open_package
    from mmedge.runtime.loader import load_runners
    from mmedge.runtime.pipelines import pipeline_class

    package = open_package(spec["package"], verify=False)
    runners, ran = load_runners(package, engine=spec["engine"], device=spec["device"], variant=spec["variant"],
                                options=options)
    pipe = pipeline_class(package.manifest.family)(package, runners, ran)
    return pipe, runners, workloads.build(pipe, runners)


def _operators(spec: dict, pipe, runners, workload) -> dict:
    calls, top = spec["operator_calls"], spec.get("top_nodes", operators.TOP_NODES)
    if calls <= 0:  # the caller asked for no per-operator profile (a benchmark timing only the task)
        return {"available": False, "source": "none", "reason": "not asked for (operator_calls=0)"}
    engine = pipe.ran.engine
    if engine == "onnxruntime":
        return operators.profile_onnxruntime(runners, workload.run, calls, top_nodes=top)
    if engine == "openvino":  # counters must be on at compile time: a second, counting load of the same variant
        _, counted, counted_workload = _load({**spec, "engine": engine, "variant": pipe.ran.variant},
                                             {**spec["options"], "PERF_COUNT": "YES"})
        return operators.profile_openvino(counted, counted_workload.run, calls, top_nodes=top)
    return operators.describe_litert(runners)


def _generation(timings: list[dict]) -> dict | None:
    if not timings:
        return None

    def median(key: str) -> float | None:
        values = sorted(t[key] for t in timings if t.get(key) is not None)
        return values[len(values) // 2] if values else None

    return {"time_to_first_token_ms": median("time_to_first_token_ms"), "tokens_per_s": median("tokens_per_s"),
            "new_tokens": timings[-1].get("new_tokens"), "source": timings[-1]["source"], "runs": len(timings)}


def measure(spec: dict) -> dict:
    """Load, cold call, warmup, timed calls, peak memory, then (separately) per-operator profiling."""
    baseline = current_rss_bytes()
    start = time.perf_counter()
    pipe, runners, workload = _load(spec, spec["options"])
    load_ms = _ms_since(start)
    start = time.perf_counter()
    result = workload.run()
    cold_ms = _ms_since(start)
    outputs = workload.outputs(result)
    if spec["reference_only"]:
        return {"kind": workload.kind, "outputs": outputs}
    label = f"{pipe.ran.engine}/{pipe.ran.variant}"
    bar = Progress(f"{label} warmup", spec["warmup"], enabled=spec["progress"])
    for _ in range(spec["warmup"]):
        workload.run()
        bar.step()
    bar.close()
    samples, timings = [], []
    bar = Progress(f"{label} timed", spec["runs"], enabled=spec["progress"])
    for _ in range(spec["runs"]):
        start = time.perf_counter()
        result = workload.run()
        samples.append(_ms_since(start))
        if (t := workload.timings(result)) is not None:
            timings.append(t)
        bar.step()
    bar.close()
    latency = latency_stats(samples)
    memory = {**peak_memory(), "baseline_rss_bytes": baseline}  # before the profiling loads below
    ran = pipe.ran
    manifest = pipe.package.manifest
    paths = [p for c in manifest.components.values() if (a := c.find(ran.format, ran.variant)) for p in a.files()]
    return {
        "engine": ran.engine, "variant": ran.variant, "format": ran.format, "precision": ran.precision,
        "device": ran.device, "workload": workload.inputs, "kind": workload.kind,
        "ran": ran.to_dict(), "fallbacks": ran.fallbacks, "files": files_size(pipe.package, paths),
        "load_ms": load_ms, "cold_ms": cold_ms, "latency_ms": latency, "throughput_per_s": 1000 / latency["mean"],
        "memory": memory, "generation": _generation(timings),
        "operators": _operators(spec, pipe, runners, workload),
        "heavy_modules": sorted(m for m in sys.modules if m in HEAVY), "outputs": outputs,
    }


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    try:
        out = measure(spec)
    except MmedgeError as e:
        out = {"error": {"type": type(e).__name__, "message": str(e)}}
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
