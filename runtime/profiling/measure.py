"""The numbers every engine shares: latency statistics over timed runs, peak resident memory, file sizes.

Percentiles use numpy's linear interpolation over the raw samples, so p50 <= p90 <= p99 always holds and
the raw samples travel in the JSON for the report's distributions. Peak memory is read two ways because
neither is everywhere: ``getrusage`` (POSIX; kilobytes on Linux, bytes on macOS) and ``VmHWM`` from
``/proc/self/status`` (Linux, Android). Both are per-process high-water marks, which is why the profiler
measures each variant in a fresh process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

try:
    import resource
except ImportError:  # Windows has no getrusage; VmHWM is Linux-only too, so the peak is then unknown
    resource = None


def latency_stats(samples_ms: list[float]) -> dict:
    """p50/p90/p99/mean/std/min/max (ms) of the timed runs, the run count and the samples themselves."""
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    return {"runs": int(a.size), "p50": p50, "p90": p90, "p99": p99, "mean": float(a.mean()),
            "std": float(a.std()), "min": float(a.min()), "max": float(a.max()),
            "samples": [round(float(v), 4) for v in a]}


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def current_rss_bytes() -> int | None:
    return _status_bytes("VmRSS")


def peak_memory() -> dict:
    """This process's peak resident set size so far, by every source this OS offers."""
    ru = None
    if resource is not None:
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    hwm = _status_bytes("VmHWM")
    known = [v for v in (ru, hwm) if v]
    return {"peak_rss_bytes": max(known) if known else None, "ru_maxrss_bytes": ru, "vm_hwm_bytes": hwm}


def files_size(package, paths: list[str]) -> dict:
    """Bytes on disk of a variant's files (each counted once: static buckets may share a data file)."""
    unique = list(dict.fromkeys(paths))
    return {"bytes": sum(package.path(p).stat().st_size for p in unique), "count": len(unique), "paths": unique}
