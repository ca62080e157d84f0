"""Soak, short: hundreds of pipeline calls per engine, each engine in its own process (bench/soak.py's worker),
and the resident memory after warm-up must not grow by 5 % or more. The full 10 000-call run is
``python bench/soak.py`` (see bench/README.md for measured numbers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"
CALLS = 600


def test_rss_probe_sees_memory_that_is_held():
    """The probe the soak relies on: touching 64 MB shows up, releasing it is seen too. In a fresh interpreter, as
    the soak's workers are: in a long test process the allocator may keep a freed block mapped."""
    code = f"""
import sys, numpy as np
sys.path.insert(0, {str(SOAK.parent)!r})
import soak
before = soak.settled_rss()
held = np.ones(64 * 2**20, np.uint8)
grown = soak.settled_rss()
del held
print(before, grown, soak.settled_rss())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    before, grown, after = map(int, out.stdout.split())
    assert grown - before >= 60 * 2**20
    assert after < grown - 50 * 2**20


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino", "litert"])
def test_rss_stays_flat_after_warmup(clip_package, engine):
    done = subprocess.run([sys.executable, str(SOAK), "--worker", "--engines", engine, "--package",
                           str(clip_package), "--calls", str(CALLS), "--warmup-share", "0.1", "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["ran"] == engine and r["calls"] == CALLS
    assert not r["torch_imported"]
    trend_mb = [round((t - r["rss_after_warmup"]) / 2**20, 2) for t in r["rss_trend"]]
    assert r["growth"] < 0.05, (f"{engine}: RSS grew {r['growth']:.2%} after warm-up "
                                f"({r['rss_after_warmup']} -> {r['rss_end']} bytes; trend MB {trend_mb})")
