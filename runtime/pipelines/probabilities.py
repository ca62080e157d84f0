"""Class probabilities from logits, shared by the classification pipelines (CLIP zero-shot, image classification,
face expression, audio classification). Computed in float64 from the engines' float32 logits, so they are the
same on every engine up to the logits' own differences."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (stable: the max is subtracted first)."""
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(logits: np.ndarray, activation: str = "softmax") -> np.ndarray:
    """Softmax (single-label heads) or sigmoid (multi-label heads) over the last axis, in float64."""
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    return softmax(logits)
