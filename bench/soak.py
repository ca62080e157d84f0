"""Soak: does the runtime's memory stay flat over thousands of inferences? (tiny CLIP package, per engine)

Each engine runs in a fresh process of its own (this script with ``--worker``), so one engine's allocator and
libraries never mix with another's numbers. The worker loads the package on that engine, makes ``--calls``
calls of the same kind, and reads its resident set size (RSS) after the warm-up (the first ``--warmup-share``
of the calls: engine arenas, lazily built kernels and caches settle there) and at the end, with samples in
between for the trend. Python's cyclic garbage is collected before every reading, so only memory that stays
reachable (or is never given back to the OS) counts.

    pipeline   pipe.zero_shot(image, labels): pre-processing, text tokenizer, both towers, softmax (default)
    runner     pipe.vision(pixel_values=x): the ComponentRunner call alone (contract checks, engine, copies)

Target: RSS growth after warm-up < 5 % (``--max-growth``). Unlike the other benchmarks this one is a check: it
exits 1 when an engine grows by the target or more (or its worker fails), 0 otherwise.

    python bench/soak.py                                   # builds a tiny CLIP package in a temp dir (~20 s)
    python bench/soak.py --calls 2000 --engines onnxruntime --json soak.json
    python bench/soak.py --package clip-pkg/ --call runner

RSS is psutil's ``memory_info().rss`` when psutil is installed, else ``VmRSS`` from ``/proc/self/status`` (what
the profiler reads). Only the slim runtime and one engine are imported in a worker.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = 0.05
#: engine -> variant soaked (LiteRT has fixed-shape files only)
CASES = {"onnxruntime": "fp32", "openvino": "fp32", "litert": "fp32-static"}
LABELS = ["a photo of a cat", "a photo of a dog", "a rocket on a launch pad", "a cup of coffee"]
SAMPLES = 20  # RSS readings between the warm-up and the end


def rss_bytes() -> int:
    """This process's resident set size now."""
    try:
        import psutil
    except ImportError:
        from mmedge.runtime.profiling.measure import current_rss_bytes

        rss = current_rss_bytes()
        if rss is None:
            sys.exit("cannot read this process's RSS: install psutil (pip install psutil)")
        return rss
    return int(psutil.Process().memory_info().rss)


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


# --------------------------------------------------------------------------------------------- worker


def soak(package: Path, engine: str, calls: int, warmup_share: float, call: str, threads: int | None) -> dict:
    """Load ``package`` on ``engine`` and make ``calls`` calls, reading RSS as it goes (runs in the worker)."""
    from mmedge import runtime

    options = {"INFERENCE_PRECISION_HINT": "f32"} if engine == "openvino" else {}
    if threads:
        options.update({"onnxruntime": {"intra_op_num_threads": threads},
                        "openvino": {"INFERENCE_NUM_THREADS": threads}, "litert": {"num_threads": threads}}[engine])
    before_load = rss_bytes()
    pipe = runtime.load(package, engine=engine, variant=CASES[engine], device="x86-cpu", options=options)
    image = np.random.default_rng(0).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    if call == "pipeline":
        def step() -> None:
            pipe.zero_shot(image, LABELS)
    else:
        x = pipe.image_preprocessor([image])

        def step() -> None:
            pipe.vision(pixel_values=x)

    warmup = max(1, round(calls * warmup_share))
    every = max(1, (calls - warmup) // SAMPLES)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    after_warmup = settled_rss()
    trend = []
    for i in range(warmup, calls):
        step()
        if (i + 1 - warmup) % every == 0 and i + 1 < calls:
            trend.append(settled_rss())
    end = settled_rss()
    seconds = time.perf_counter() - start
    return {"engine": engine, "variant": pipe.ran.variant, "ran": pipe.ran.engine, "call": call, "calls": calls,
            "warmup_calls": warmup, "rss_before_load": before_load, "rss_after_warmup": after_warmup,
            "rss_end": end, "rss_peak_sampled": max([after_warmup, end, *trend]), "rss_trend": trend,
            "growth": (end - after_warmup) / after_warmup,
            "bytes_per_call": (end - after_warmup) / max(1, calls - warmup), "seconds": seconds,
            "torch_imported": "torch" in sys.modules}


def run_worker(args: argparse.Namespace, engine: str, package: Path) -> dict:
    """One engine in a fresh process; its JSON result (or the failure)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--engines", engine, "--package", str(package),
           "--calls", str(args.calls), "--warmup-share", str(args.warmup_share), "--call", args.call]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"engine": engine, "failed": done.stderr.strip()[-2000:] or f"exit code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- report


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    mb = 2 ** 20
    print(f"mmedge soak: {args.calls} calls per engine ({args.call} call), warm-up {args.warmup_share:.0%}, "
          f"one process per engine; RSS in MB")
    head = (f"{'engine':12s} {'variant':12s} {'load':>7s} {'warm-up':>8s} {'end':>8s} {'peak':>8s} "
            f"{'growth':>8s} {'B/call':>8s} {'calls/s':>8s}  target")
    print(head)
    print("-" * len(head))
    for r in results:
        if "failed" in r:
            print(f"{r['engine']:12s} FAILED: {r['failed']}")
            continue
        flag = "ok" if r["growth"] < args.max_growth else "ABOVE"
        print(f"{r['engine']:12s} {r['variant']:12s} {(r['rss_after_warmup'] - r['rss_before_load']) / mb:+7.1f} "
              f"{r['rss_after_warmup'] / mb:8.1f} {r['rss_end'] / mb:8.1f} {r['rss_peak_sampled'] / mb:8.1f} "
              f"{r['growth']:+8.2%} {r['bytes_per_call']:+8.0f} {r['calls'] / r['seconds']:8.0f}  "
              f"<{args.max_growth:.0%} {flag}")
    print("load = RSS added by loading and warming up; growth = (end - warm-up) / warm-up; B/call = that growth per "
          "call after warm-up; peak = the highest of the sampled readings")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--package", type=Path, help="a CLIP package (default: build a tiny one in a temp dir)")
    p.add_argument("--calls", type=int, default=10_000, help="calls per engine (default 10000)")
    p.add_argument("--warmup-share", type=float, default=0.05, help="share of the calls before the first reading")
    p.add_argument("--engines", default=",".join(CASES), help=f"comma list (default {','.join(CASES)})")
    p.add_argument("--call", choices=("pipeline", "runner"), default="pipeline", help="what one call is")
    p.add_argument("--threads", type=int, help="engine threads (default: the engine's own default)")
    p.add_argument("--max-growth", type=float, default=TARGET, help=f"fail at this growth or more (default {TARGET})")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in args.engine_list if e not in CASES]
    if bad:
        p.error(f"unknown engine(s) {bad}; choose from {', '.join(CASES)}")
    if args.calls < 2 or not 0 < args.warmup_share < 1:
        p.error("--calls must be >= 2 and --warmup-share between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        print(json.dumps(soak(args.package, args.engine_list[0], args.calls, args.warmup_share, args.call,
                              args.threads)))
        return 0
    with tempfile.TemporaryDirectory(prefix="mmedge-soak-") as tmp:
        if args.package is None:
            from runtime_overhead import build_tiny_package  # bench/ is on sys.path when run as a script

            print("no --package given: building a tiny random-weight CLIP package (~20 s) ...", file=sys.stderr)
            package = build_tiny_package(Path(tmp))
        else:
            package = args.package
        results = [run_worker(args, engine, package) for engine in args.engine_list]
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "soak", "target_growth": args.max_growth,
                                         "cpu_count": os.cpu_count(), "results": results}, indent=2))
        print(f"\nwrote {args.json}")
    bad = [r["engine"] for r in results if "failed" in r or r["growth"] >= args.max_growth]
    if bad:
        print(f"\nFAILED: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
