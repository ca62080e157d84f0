"""Per-operator time and placement, from what each engine itself measures (no numbers are invented).

- ONNX Runtime: a profiling-enabled twin of each session (``SessionOptions.enable_profiling``); its JSON trace
  has one ``Node`` event per kernel call with the op type and the execution provider it ran on.
- OpenVINO: the package reloaded with ``PERF_COUNT=YES``; ``InferRequest.get_profiling_info()`` after every
  inference gives each node's real time, type, exec type (the kernel/ISA, e.g. ``jit_avx512_FP32``) and status.
- LiteRT: ``ai-edge-litert``'s Python interpreter exposes no per-operator timings, so ``available`` is false
  with the reason; the graph's op types are still listed (counts only, no time).

Totals are per task call (a generative call runs the decoder many times) and come with the wall time of the
same profiled calls, so the share of time spent inside kernels can be read directly. Profiling slows an
engine down: these numbers are measured on separate calls, never mixed into the latency statistics.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from mmedge.runtime.profiling.hooks import after_each_run, sessions_of

TOP_NODES = 25


class _Totals:
    """Accumulates (node, op type, placement, ms) records into per-type and per-node totals."""

    def __init__(self, top_nodes: int | None = TOP_NODES):
        self.top_nodes = top_nodes  # how many of the slowest nodes to keep (None: all, e.g. for the int8 advisor)
        self.by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        self.by_node: dict[tuple[str, str, str, str], float] = defaultdict(float)
        self.placement: dict[str, int] = defaultdict(int)

    def add(self, component: str, node: str, op_type: str, placed_on: str, ms: float, kernel_calls: int = 1) -> None:
        self.by_type[op_type][0] += ms
        self.by_type[op_type][1] += kernel_calls
        self.by_node[(component, node, op_type, placed_on)] += ms
        self.placement[placed_on] += kernel_calls

    def to_dict(self, source: str, calls: int, wall_ms: float) -> dict:
        total = sum(ms for ms, _ in self.by_type.values())
        by_type = sorted(({"op_type": t, "ms_per_call": ms / calls, "kernel_calls": n,
                           "share": ms / total if total else 0.0} for t, (ms, n) in self.by_type.items()),
                         key=lambda r: -r["ms_per_call"])
        by_node = sorted(({"component": c, "node": n, "op_type": t, "placed_on": p, "ms_per_call": ms / calls}
                          for (c, n, t, p), ms in self.by_node.items()), key=lambda r: -r["ms_per_call"])
        return {"available": True, "source": source, "profiled_calls": calls, "wall_ms_per_call": wall_ms / calls,
                "total_op_ms_per_call": total / calls, "by_op_type": by_type, "top_nodes": by_node[:self.top_nodes],
                "placement": dict(self.placement)}


def _timed(run: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return 1000 * (time.perf_counter() - start)


def _ort_events_after(trace: list[dict], skip_runs: int) -> list[dict]:
    """The kernel events of a session's trace after its first ``skip_runs`` runs (the warmup call's)."""
    runs = sorted(e["ts"] + e.get("dur", 0) for e in trace if e.get("name") == "model_run")
    cutoff = runs[skip_runs - 1] if 0 < skip_runs <= len(runs) else -1
    return [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
            and e.get("ts", 0) > cutoff]


def profile_onnxruntime(runners: dict, run: Callable[[], object], calls: int, *,
                        top_nodes: int | None = TOP_NODES) -> dict:
    """Swap each session's ``InferenceSession`` for a profiling twin built with the same options and providers;
    the twin's first task call (allocations, first-run kernel setup) is left out of the totals."""
    import onnxruntime as ort

    totals, tmp = _Totals(top_nodes), Path(tempfile.mkdtemp(prefix="mmedge-ort-profile-"))
    sessions = sessions_of(runners)
    warm_runs: dict[int, int] = defaultdict(int)
    for i, (_, session) in enumerate(sessions):
        old = session._session
        options = old._sess_options or ort.SessionOptions()
        options.enable_profiling, options.profile_file_prefix = True, str(tmp / f"session{i}")
        session._session = ort.InferenceSession(old._model_path, sess_options=options, providers=old.get_providers())
        after_each_run(session, lambda s: warm_runs.__setitem__(id(s), warm_runs[id(s)] + 1))
    run()
    counted = dict(warm_runs)
    wall = _timed(run, calls)
    for component, session in sessions:
        trace = json.loads(Path(session._session.end_profiling()).read_text())
        for event in _ort_events_after(trace, counted.get(id(session), 0)):
            args = event.get("args", {})
            totals.add(component, event["name"][: -len("_kernel_time")], args.get("op_name", "?"),
                       args.get("provider", "?"), event.get("dur", 0) / 1000)
    return totals.to_dict("onnxruntime SessionOptions.enable_profiling", calls, wall)


def _openvino_totals(session, runs: int) -> dict[tuple[str, str, str], float]:
    """ms per executed node over all ``runs`` inferences so far: the CPU plugin reports each node's *average*
    over every inference of the request (not the last one's time), so the average is scaled back up."""
    return {(p.node_name, p.node_type, p.exec_type): p.real_time.total_seconds() * 1000 * runs
            for p in session._request.get_profiling_info() if p.status == p.Status.EXECUTED}


def profile_openvino(runners: dict, run: Callable[[], object], calls: int, *,
                     top_nodes: int | None = TOP_NODES) -> dict:
    """``runners`` must be compiled with ``PERF_COUNT=YES``. The counters are read after a first task call and
    after the profiled calls; the difference is what the profiled calls cost."""
    totals = _Totals(top_nodes)
    sessions = sessions_of(runners)
    runs: dict[int, int] = defaultdict(int)
    for _, session in sessions:
        after_each_run(session, lambda s: runs.__setitem__(id(s), runs[id(s)] + 1))
    run()  # the first inference (allocations, kernel setup) is left out, as for ONNX Runtime
    before = {id(s): _openvino_totals(s, runs[id(s)]) for _, s in sessions}
    runs_before = dict(runs)
    wall = _timed(run, calls)
    for component, session in sessions:
        device = ",".join(session.info.get("execution_devices") or [session.info.get("device", "?")])
        for (node, op_type, exec_type), ms in _openvino_totals(session, runs[id(session)]).items():
            totals.add(component, node, op_type, f"{device}:{exec_type}",
                       ms - before[id(session)].get((node, op_type, exec_type), 0.0),
                       runs[id(session)] - runs_before[id(session)])
    return totals.to_dict("openvino PERF_COUNT / InferRequest.get_profiling_info", calls, wall)


def describe_litert(runners: dict) -> dict:
    """No timings: LiteRT's Python API has no op profiler. Op types of each graph are listed (counts only);
    the ops a delegate (XNNPACK) took over appear as ``DELEGATE`` nodes, which is all the placement it shows."""
    counts: dict[str, int] = defaultdict(int)
    for _, session in sessions_of(runners):
        for op in session._interpreter._get_ops_details():
            counts[op.get("op_name", "?")] += 1
    return {"available": False, "source": "ai-edge-litert Interpreter",
            "reason": "ai-edge-litert's Python interpreter exposes no per-operator timings; run LiteRT's "
                      "benchmark_model tool with --enable_op_profiling=true for them",
            "op_types": dict(counts)}
