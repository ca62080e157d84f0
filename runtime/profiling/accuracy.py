"""Accuracy of a variant against the fp32 reference (ONNX Runtime, ``fp32``) on the same inputs, with the
family's task metric: embeddings/logits by cosine similarity and max abs difference, generated tokens by
agreement (the share of positions that match, over the longer sequence), transcripts by word error rate, speech
waveforms by cosine similarity and SNR, class labels by top-1 agreement, top-k overlap and probability cosine,
images by PSNR.

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


def _waveform(outputs: dict, reference: dict) -> dict:
    """Speech: cosine similarity and signal-to-noise ratio (dB; None when identical) over the common length, and
    whether the lengths agree (a duration rounded the other way changes the length by a frame)."""
    a, b = np.asarray(outputs["waveform"], np.float64), np.asarray(reference["waveform"], np.float64)
    n = min(len(a), len(b))
    x, y = a[:n], b[:n]
    denom = np.linalg.norm(x) * np.linalg.norm(y)
    error = float(np.sum((x - y) ** 2))
    return {"metric": "waveform_cosine", "value": float(x @ y / denom) if denom else float(np.array_equal(x, y)),
            "snr_db": 10 * float(np.log10(np.sum(y ** 2) / error)) if error and np.any(y) else None,
            "max_abs_diff": float(np.abs(x - y).max()) if n else 0.0, "same_length": len(a) == len(b)}


def _labels(outputs: dict, reference: dict) -> dict:
    """Classifiers (one label and probability vector per item: an image, a face, a clip): the share of items whose
    top-1 label agrees (over the larger item count: a face found by one variant only counts as a disagreement),
    and the cosine of the probability vectors of the items both have."""
    a, b = outputs["labels"], reference["labels"]
    longest, common = max(len(a), len(b)), min(len(a), len(b))
    agree = sum(x == y for x, y in zip(a, b))
    probs = _embeddings({"probs": outputs["probs"][:common]}, {"probs": reference["probs"][:common]})
    result = {"metric": "top1_agreement", "value": agree / longest if longest else 1.0,
              "probs_cosine": probs["value"], "max_abs_diff": probs["max_abs_diff"], "same_count": len(a) == len(b)}
    if "top_k" in outputs and "top_k" in reference:  # ranked class ids per item (image classification)
        overlaps = [len(set(x) & set(y)) / len(y) for x, y in zip(outputs["top_k"], reference["top_k"]) if y]
        result["topk_overlap"] = float(np.mean(overlaps)) if overlaps else 1.0
    return result


#: PSNR reported for identical images (their PSNR is infinite; ``exact`` says so).
PSNR_CAP_DB = 100.0


def _image(outputs: dict, reference: dict) -> dict:
    """Images (super-resolution, text-to-image): PSNR in dB over the pixels at the images' peak value (capped at ``PSNR_CAP_DB``
    when identical), the cosine of the pixel vectors and the largest pixel difference."""
    a, b = np.asarray(outputs["pixels"], np.float64), np.asarray(reference["pixels"], np.float64)
    if a.shape != b.shape:
        return {"metric": "psnr_db", "value": 0.0, "exact": False, "same_shape": False}
    mse = float(np.mean((a - b) ** 2)) if a.size else 0.0
    psnr = min(10 * float(np.log10(float(reference["peak"]) ** 2 / mse)), PSNR_CAP_DB) if mse else PSNR_CAP_DB
    cosine = _embeddings({"pixels": a}, {"pixels": b})
    return {"metric": "psnr_db", "value": psnr, "exact": mse == 0.0, "same_shape": True,
            "cosine": cosine["value"], "max_abs_diff": cosine["max_abs_diff"]}


METRICS = {"embeddings": _embeddings, "tokens": _tokens, "transcript": _transcript, "waveform": _waveform,
           "labels": _labels, "image": _image}


def compare(kind: str, outputs: dict, reference: dict) -> dict:
    """The task metric of ``outputs`` against ``reference`` (both from the same workload ``kind``)."""
    return {"available": True, "reference": f"{REFERENCE['engine']}/{REFERENCE['variant']}",
            **METRICS[kind](outputs, reference)}


def unavailable(reason: str) -> dict:
    return {"available": False, "reference": f"{REFERENCE['engine']}/{REFERENCE['variant']}", "reason": reason}
