"""Accuracy of a variant against the fp32 reference (ONNX Runtime, ``fp32``) on the same inputs, with the
family's task metric: embeddings/logits by cosine similarity and max abs difference, generated tokens by
agreement (the share of positions that match, over the longer sequence), transcripts by word error rate.

The reference is ONNX Runtime fp32 because every package has it and its parity with PyTorch is recorded in
the manifest; a compressed variant (int8, int4...) is then judged by what users see, not by graph parity.
"""

from __future__ import annotations

import numpy as np

REFERENCE = {"engine": "onnxruntime", "variant": "fp32"}


def _embeddings(outputs: dict, reference: dict) -> dict:
    per_output = {}
    for name in reference:
        a, b = np.asarray(outputs[name], np.float64).ravel(), np.asarray(reference[name], np.float64).ravel()
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        per_output[name] = {"cosine": float(a @ b / denom) if denom else float(np.array_equal(a, b)),
                            "max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0}
    return {"metric": "cosine", "value": min(v["cosine"] for v in per_output.values()),
            "max_abs_diff": max(v["max_abs_diff"] for v in per_output.values()), "per_output": per_output}


def _tokens(outputs: dict, reference: dict) -> dict:
    a, b = outputs["tokens"], reference["tokens"]
    longest = max(len(a), len(b))
    same = sum(x == y for x, y in zip(a, b))
    return {"metric": "token_agreement", "value": same / longest if longest else 1.0, "exact": a == b,
            "text_equal": outputs.get("text") == reference.get("text")}


def word_error_rate(hypothesis: str, reference: str) -> float:
    """Word-level Levenshtein distance over the reference's word count (0 for two empty transcripts)."""
    hyp, ref = hypothesis.lower().split(), reference.lower().split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref) if ref else float(bool(hyp))


def _transcript(outputs: dict, reference: dict) -> dict:
    wer = word_error_rate(outputs["text"], reference["text"])
    return {"metric": "wer", "value": wer, "exact": outputs["text"] == reference["text"]}


METRICS = {"embeddings": _embeddings, "tokens": _tokens, "transcript": _transcript}


def compare(kind: str, outputs: dict, reference: dict) -> dict:
    """The task metric of ``outputs`` against ``reference`` (both from the same workload ``kind``)."""
    return {"available": True, "reference": f"{REFERENCE['engine']}/{REFERENCE['variant']}",
            **METRICS[kind](outputs, reference)}


def unavailable(reason: str) -> dict:
    return {"available": False, "reference": f"{REFERENCE['engine']}/{REFERENCE['variant']}", "reason": reason}
