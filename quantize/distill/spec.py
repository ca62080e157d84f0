"""The ``--distill`` spec: how to shrink the teacher and how to train the student, as one ``key=value`` string.

Why a string: it is what ``mmedge optimize --distill`` takes, and one parser with one error message (naming
the valid form) serves the CLI and the Python API alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from mmedge.errors import UsageError
from mmedge.quantize.spec_text import key_values

FORM = ("comma-separated key=value pairs, e.g. 'layers=1/2,ffn=0.5,steps=200'. Keys: layers=K/N (keep K of every "
        "N layers, maximally spaced, first and last kept), layers=M (keep M layers) or layers=I+J+... (keep these "
        "layer indices); ffn=F (remove the fraction F, 0 <= F < 1, of FFN neurons, keeping the largest-norm ones); "
        "steps=N or epochs=N; lr=X; batch=N; patience=N (held-out evaluations without improvement before stopping "
        "early, 0 = never); eval_every=N and save_every=N (steps; default one epoch); temperature=X; output=X and "
        "hidden=X (loss weights); holdout=X (held-out fraction, 0 < X <= 0.5); max_len=N (tokens); seed=N; "
        "threads=N (torch CPU threads, 0 = leave as is)")

#: Keys that may change between a run and its resumption (they do not change what one step computes).
RESUMABLE_KEYS = ("steps", "epochs", "patience", "save_every", "threads")


@dataclass(frozen=True)
class DistillSpec:
    """What to distil. ``layers`` is kept as written (``"1/2"``, ``"3"``, ``"0+5+11"``); ``keep_layers(n)``
    resolves it for a stack of ``n`` layers. Exactly one of ``steps``/``epochs`` is set (``steps`` by default)."""

    layers: str = "1/2"
    ffn: float = 0.0
    steps: int | None = 200
    epochs: int | None = None
    lr: float = 1e-4
    batch: int = 4
    patience: int = 5
    eval_every: int | None = None
    save_every: int | None = None
    temperature: float = 2.0
    output: float = 1.0
    hidden: float = 1.0
    holdout: float = 0.2
    max_len: int = 64
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        _layer_rule(self.layers)  # raises on a malformed value
        checks = [(0.0 <= self.ffn < 1.0, "ffn must be in [0, 1)"),
                  ((self.steps is None) != (self.epochs is None), "give exactly one of steps= and epochs="),
                  (self.steps is None or self.steps > 0, "steps must be > 0"),
                  (self.epochs is None or self.epochs > 0, "epochs must be > 0"),
                  (self.lr >= 0 and math.isfinite(self.lr), "lr must be a finite number >= 0"),
                  (self.batch > 0, "batch must be > 0"), (self.patience >= 0, "patience must be >= 0"),
                  (self.eval_every is None or self.eval_every > 0, "eval_every must be > 0"),
                  (self.save_every is None or self.save_every > 0, "save_every must be > 0"),
                  (self.temperature > 0, "temperature must be > 0"),
                  (self.output >= 0 and self.hidden >= 0 and self.output + self.hidden > 0,
                   "output= and hidden= must be >= 0 and not both 0"),
                  (0.0 < self.holdout <= 0.5, "holdout must be in (0, 0.5]"), (self.max_len > 1, "max_len must be > 1"),
                  (self.threads >= 0, "threads must be >= 0")]
        for ok, why in checks:
            if not ok:
                raise UsageError(f"bad distill spec: {why}; expected {FORM}")

    def keep_layers(self, n: int) -> list[int]:
        """The teacher layer indices the student keeps, out of ``n``, ascending. Fractions and counts are spread
        as evenly as possible with the first and last layer kept (as distil-whisper initialises its decoder)."""
        kind, value = _layer_rule(self.layers)
        if kind == "indices":
            bad = [i for i in value if i >= n]
            if bad:
                raise UsageError(f"layers={self.layers} names layer {bad[0]} but the model has {n} layers (0..{n - 1})")
            return list(value)
        count = max(1, math.floor(n * value[0] / value[1] + 0.5)) if kind == "fraction" else value
        if count > n:
            raise UsageError(f"layers={self.layers} keeps {count} layers but the model has only {n}")
        return [int(math.floor(x + 0.5)) for x in np.linspace(0, n - 1, count)]

    def to_dict(self) -> dict:
        return asdict(self)


def _layer_rule(text: str) -> tuple[str, tuple[int, ...] | int]:
    """``("fraction", (k, n))``, ``("count", m)`` or ``("indices", (i, j, ...))``."""
    try:
        if "/" in text:
            k, n = (int(p) for p in text.split("/"))
            if 0 < k <= n:
                return "fraction", (k, n)
        elif "+" in text:
            indices = tuple(sorted({int(p) for p in text.split("+")}))
            if indices[0] >= 0:
                return "indices", indices
        elif int(text) > 0:
            return "count", int(text)
    except ValueError:
        pass
    raise UsageError(f"bad distill spec: layers={text!r} is not K/N (0 < K <= N), a count M > 0 or indices "
                     f"I+J+...; expected {FORM}")


def parse_distill_spec(text: str) -> DistillSpec:
    """Parse ``"layers=1/2,ffn=0.5,steps=200"`` into a ``DistillSpec``; unknown keys and bad values are a
    ``UsageError`` that names the valid form. ``epochs=`` replaces the default ``steps=``."""
    types = {f.name: f.type for f in fields(DistillSpec)}
    values: dict[str, object] = {key: _convert(key, raw, types[key], text)
                                 for key, raw in key_values(text, "distill", types, FORM).items()}
    if "epochs" in values and "steps" not in values:
        values["steps"] = None
    return DistillSpec(**values)


def _convert(key: str, raw: str, annotation: str, text: str) -> object:
    if key == "layers":
        return raw
    try:
        return float(raw) if annotation == "float" else int(raw)
    except ValueError:
        kind = "a number" if annotation == "float" else "an integer"
        raise UsageError(f"bad distill spec {text!r}: {key}={raw!r} is not {kind}; expected {FORM}") from None
