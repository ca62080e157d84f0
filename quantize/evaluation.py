"""The family's task metric over a set of real samples, for one variant against the fp32 reference on the same
engine (so the numbers measure what compression changed, not engine differences).

Metrics, by what the task returns:
- transcript: ``wer`` in percent (word edits over reference words, pooled over the clips). When every clip has
  a known transcript both variants are scored against it and the budget compares the two WERs (``wer+1.0`` =
  at most one point worse than fp32); otherwise the fp32 transcript is the reference (fp32's WER is then 0).
- tokens: ``agreement``, the mean share of generated tokens equal to fp32's (position by position).
- lm (decoder LMs): the tokens metrics plus ``perplexity`` of the sample sentences themselves (teacher-forced,
  pooled over their tokens) and ``perplexity_fp32``: ``perplexity+0.5`` allows half a point above fp32's.
- labels: ``agreement``, the share of items (images, faces, clips) with fp32's top-1 label; ``topk`` overlap
  and the probability ``cosine`` where the task gives them.
- waveform: ``cosine`` (mean over sentences); image: ``psnr`` in dB (mean), ``cosine``; embeddings: ``cosine``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mmedge.quantize.calibration import load_pipeline
from mmedge.quantize.samples import Sample
from mmedge.quantize.tasks import task_for
from mmedge.runtime.profiling.accuracy import METRICS


def _edits(hyp: str, ref: str) -> tuple[int, int]:
    """(word edit distance, reference word count), case-insensitive, punctuation ignored."""
    def words(s: str) -> list[str]:
        return "".join(c if c.isalnum() or c in " '" else " " for c in s.lower()).split()
    h, r = words(hyp), words(ref)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[-1], len(r)


def _wer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    pairs = [_edits(h, r) for h, r in zip(hyps, refs)]
    words = sum(n for _, n in pairs)
    return 100.0 * sum(e for e, _ in pairs) / words if words else 0.0


@dataclass
class Scores:
    """Task outputs of one variant on the samples (``outputs``) and its metrics against the reference."""

    variant: str
    outputs: list[dict]
    metrics: dict[str, float] = field(default_factory=dict)


def run_task(package, fmt: str, variant: str, samples: Sequence[Sample], *,
             log: Callable[[str], None] | None = None, times_ms: list[float] | None = None) -> list[dict]:
    """The comparable outputs of the family's task on each sample, with ``variant`` on ``fmt``'s engine
    (``times_ms``, when given, gets each task call's wall time)."""
    task = task_for(package.manifest.family, package.manifest.task)
    pipe, _ = load_pipeline(package, fmt, variant)
    out = []
    for i, sample in enumerate(samples, 1):
        if log:
            log(f"evaluate {fmt}/{variant} {i}/{len(samples)}: {sample.name}")
        start = time.perf_counter()
        result = task.call(pipe, sample)
        if times_ms is not None:
            times_ms.append((time.perf_counter() - start) * 1000)
        out.append(task.outputs(pipe, result))
    return out


def compare_packages(candidate, reference, samples: Sequence[Sample], *, fmt: str = "onnx",
                     log: Callable[[str], None] | None = None) -> dict:
    """A smaller model (a distilled student, a pruned copy) against the one it came from, both fp32 on ``fmt``'s
    engine: the task metrics of the candidate against the reference's outputs, the median task-call latency
    (after one untimed warm-up call each) and the package sizes."""
    kind = task_for(candidate.manifest.family, candidate.manifest.task).kind
    times: dict[str, list[float]] = {"candidate": [], "reference": []}
    outputs = {}
    for role, pkg in (("reference", reference), ("candidate", candidate)):
        run_task(pkg, fmt, "fp32", samples[:1])
        outputs[role] = run_task(pkg, fmt, "fp32", samples, log=log, times_ms=times[role])
    sizes = {role: sum(p.stat().st_size for p in pkg.root.rglob("*") if p.is_file())
             for role, pkg in (("candidate", candidate), ("reference", reference))}
    return {"metrics": score(kind, outputs["candidate"], outputs["reference"], samples),
            "latency_ms": {role: float(np.median(t)) for role, t in times.items()},
            "package_bytes": sizes, "samples": [s.name for s in samples], "engine_format": fmt}


def _perplexity(outputs: list[dict], reference: list[dict]) -> dict[str, float]:
    """Perplexity over every sample token (exp of the pooled mean negative log-likelihood), and fp32's."""
    def ppl(rows: list[dict]) -> float:
        count = sum(r["count"] for r in rows)
        return float(np.exp(sum(r["nll"] for r in rows) / count)) if count else 1.0
    return {"perplexity": ppl(outputs), "perplexity_fp32": ppl(reference)}


def score(kind: str, outputs: list[dict], reference: list[dict], samples: Sequence[Sample]) -> dict[str, float]:
    """The metrics of ``outputs`` against ``reference`` (both from ``run_task`` on the same samples)."""
    if kind == "transcript":
        known = [s.reference for s in samples]
        if all(k is not None for k in known):
            return {"wer": _wer([o["text"] for o in outputs], known),
                    "wer_fp32": _wer([r["text"] for r in reference], known),
                    "wer_vs_fp32": _wer([o["text"] for o in outputs], [r["text"] for r in reference])}
        wer = _wer([o["text"] for o in outputs], [r["text"] for r in reference])
        return {"wer": wer, "wer_fp32": 0.0, "wer_vs_fp32": wer}
    if kind == "lm":
        return {**score("tokens", outputs, reference, samples), **_perplexity(outputs, reference)}
    per = [METRICS[kind](o, r) for o, r in zip(outputs, reference)]
    if kind == "tokens":
        return {"agreement": float(np.mean([p["value"] for p in per])),
                "exact": float(np.mean([p["exact"] for p in per]))}
    if kind == "labels":
        items = [max(len(o["labels"]), len(r["labels"])) for o, r in zip(outputs, reference)]
        agree = sum(p["value"] * n for p, n in zip(per, items))
        result = {"agreement": agree / sum(items) if sum(items) else 1.0,
                  "cosine": float(np.mean([p["probs_cosine"] for p in per]))}
        if all("topk_overlap" in p for p in per):
            result["topk"] = float(np.mean([p["topk_overlap"] for p in per]))
        return result
    if kind == "image":
        return {"psnr": float(np.mean([p["value"] for p in per])),
                "cosine": float(np.mean([p.get("cosine", 0.0) for p in per]))}
    return {"cosine": float(np.mean([p["value"] for p in per]))}  # waveform, embeddings
