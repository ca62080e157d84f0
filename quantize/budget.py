"""Accuracy budgets: ``wer+1.0`` (at most 1.0 WER point worse than fp32), ``agreement>=0.98``, ``cosine>=0.995``,
``psnr>=35``, ``topk>=0.9``, ``perplexity+0.5`` (decoder LMs), ``agreement-0.02`` (at most 0.02 below fp32's own
agreement, which is 1).

The metric names are those ``quantize.evaluation.score`` returns for the family's task; a budget naming a metric
the family does not have is refused before any quantization runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mmedge.errors import UsageError

#: metric -> (better direction, fp32's own value or the metrics key holding it)
METRICS = {"wer": ("lower", "wer_fp32"), "agreement": ("higher", 1.0), "exact": ("higher", 1.0),
           "topk": ("higher", 1.0), "cosine": ("higher", 1.0), "psnr": ("higher", None),
           "perplexity": ("lower", "perplexity_fp32")}
#: which metrics each task kind (``quantize.tasks.Task.kind``) produces
KIND_METRICS = {"transcript": {"wer"}, "tokens": {"agreement", "exact"}, "lm": {"agreement", "exact", "perplexity"},
                "labels": {"agreement", "topk", "cosine"},
                "image": {"psnr", "cosine"}, "waveform": {"cosine"}, "embeddings": {"cosine"}}
_FORM = re.compile(r"^\s*([a-z]+)\s*(>=|<=|\+|-)\s*([0-9]*\.?[0-9]+)\s*$")


@dataclass(frozen=True)
class Budget:
    metric: str
    op: str  # ">=", "<=" (absolute bounds) or "+", "-" (allowed change from fp32)
    value: float

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def limit(self, metrics: dict[str, float]) -> float:
        """The bound the metric must meet, given the evaluation's metrics (for relative budgets)."""
        if self.op in (">=", "<="):
            return self.value
        base = METRICS[self.metric][1]
        base = metrics[base] if isinstance(base, str) else base
        return base + self.value if self.op == "+" else base - self.value

    def holds(self, metrics: dict[str, float]) -> bool:
        got, limit = metrics[self.metric], self.limit(metrics)
        lower_ok = self.op in ("<=", "+")
        return got <= limit + 1e-12 if lower_ok else got >= limit - 1e-12

    def describe(self, metrics: dict[str, float]) -> str:
        verdict = "holds" if self.holds(metrics) else "missed"
        return f"{self.metric} {metrics[self.metric]:.4g} vs limit {self.limit(metrics):.4g} ({self.text}): {verdict}"

    def to_dict(self) -> dict:
        return {"metric": self.metric, "op": self.op, "value": self.value, "text": self.text}


def parse_budget(text: str, kind: str | None = None) -> Budget:
    """``text`` as a Budget; with ``kind`` (the family's task kind) the metric must be one the task measures."""
    m = _FORM.match(text or "")
    if not m:
        raise UsageError(f"cannot read budget '{text}'; write METRIC>=VALUE, METRIC<=VALUE, METRIC+DELTA or "
                         f"METRIC-DELTA, e.g. wer+1.0 or agreement>=0.98 (metrics: {', '.join(METRICS)})")
    metric, op, value = m.group(1), m.group(2), float(m.group(3))
    if metric not in METRICS:
        raise UsageError(f"unknown budget metric '{metric}'; choose one of: {', '.join(METRICS)}")
    direction, base = METRICS[metric]
    if op in "+-" and base is None:
        raise UsageError(f"'{metric}' has no fp32 value to be relative to; use an absolute bound, e.g. {metric}>=35")
    if (op == "+" and direction == "higher") or (op == "-" and direction == "lower"):
        better = "lower" if direction == "lower" else "higher"
        raise UsageError(f"'{text}': {metric} is better when {better}, so its budget is "
                         f"{metric}{'+' if direction == 'lower' else '-'}DELTA")
    if metric in ("agreement", "exact", "topk", "cosine") and op in (">=", "<=") and not -1.0 <= value <= 1.0:
        raise UsageError(f"'{text}': {metric} lies between 0 and 1 (cosine: -1 and 1); e.g. {metric}>=0.98")
    if kind is not None and metric not in KIND_METRICS[kind]:
        raise UsageError(f"this family's task is scored by {', '.join(sorted(KIND_METRICS[kind]))}, not '{metric}'")
    return Budget(metric, op, value)
