"""Which layers hurt most when quantized, and how far a quantized graph is from fp32, measured on the
calibration calls recorded from the real pipeline (``quantize.calibration``).

The score of a layer: the backend's own ``layer_errors`` where it has one (ONNX: the error each node adds, the
node cut out and fed fp32 activations), else the output error of the graph with one chunk of the candidate layers
quantized and the rest float (OpenVINO, TFLite: ``CHUNKS`` quantize-and-run passes per graph file; every layer
of a chunk shares its score). ``variant`` below is ``quantize.compress``'s try in progress: its package, staging
folder, scheme, backend, recorded calls and source artifacts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from mmedge.quantize import calibration as calib
from mmedge.runtime.engines.base import open_session
from mmedge.runtime.manifest import Artifact

CHUNKS = 8  # generic sensitivity: candidate layers are scored in this many chunks per graph file
Log = Callable[[str], None]


def graph_files(art: Artifact) -> list[str]:
    return list(dict.fromkeys(s.file for s in art.signatures.values()))


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norm = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / norm) if norm else float(np.linalg.norm(a - b))


def graph_error(fmt: str, reference: Path, candidate: Path, calls: list[calib.Call]) -> dict:
    """Output error of ``candidate`` vs ``reference`` (same graph interface) on recorded calls: the mean and worst
    relative L2 error over calls and float outputs, and the smallest cosine."""
    engine = calib.ENGINE_OF_FORMAT[fmt]
    options = calib.EXACT_OPTIONS.get(engine)
    ref, cand = open_session(engine, reference, options=options), open_session(engine, candidate, options=options)
    errors, cosines = [], []
    for key, feeds in calls:
        want, got = ref.run(feeds, key), cand.run(feeds, key)
        for name, w in want.items():
            if np.asarray(w).dtype.kind != "f":
                continue
            errors.append(_relative_error(got[name], w))
            x, y = np.asarray(got[name], np.float64).ravel(), np.asarray(w, np.float64).ravel()
            denom = np.linalg.norm(x) * np.linalg.norm(y)
            cosines.append(float(x @ y / denom) if denom else 1.0)
    if not errors:
        return {"calls": len(calls), "relative_error_mean": None}
    return {"calls": len(calls), "relative_error_mean": float(np.mean(errors)),
            "relative_error_max": float(np.max(errors)), "cosine_min": float(np.min(cosines))}


def _chunk_scores(variant, candidates: dict[str, list[str]], log: Log) -> dict[str, float]:
    """Generic sensitivity: per graph file, quantize one chunk of its candidate layers at a time (the rest float)
    and score every layer of the chunk by the graph's output error."""
    scores: dict[str, float] = {}
    scratch = variant.stage / ".sensitivity"
    for rel, layers in candidates.items():
        calls = variant.calls.get(rel, [])
        if not layers or not calls:
            continue
        src = variant.pkg.file_path(rel)
        for i, chunk in enumerate(np.array_split(np.array(layers, dtype=object), min(CHUNKS, len(layers)))):
            shutil.rmtree(scratch, ignore_errors=True)
            dst = scratch / src.name
            dst.parent.mkdir(parents=True)
            keep = set(chunk.tolist())
            variant.backend.quantize_graph(src, dst, variant.scheme.for_component(_component_of(variant, rel)),
                                           calibration=calib.feeds_of(calls) if variant.scheme.calibrated else None,
                                           exclude=[x for x in layers if x not in keep])
            err = graph_error(variant.scheme.format, src, dst, calls)["relative_error_mean"] or 0.0
            log(f"sensitivity {rel} chunk {i + 1}: error {err:.4g}")
            scores.update({name: err for name in keep})
    shutil.rmtree(scratch, ignore_errors=True)
    return scores


def sensitivity(variant, candidates: dict[str, list[str]], log: Log) -> list[tuple[str, float]]:
    """Candidate layers of every graph, worst first, with their error scores."""
    if hasattr(variant.backend, "layer_errors"):
        scores: dict[str, float] = {}
        for rel, layers in candidates.items():
            calls = variant.calls.get(rel, [])
            if layers and calls:
                log(f"sensitivity: {rel}")
                scores.update(variant.backend.layer_errors(variant.pkg.file_path(rel),
                                                           variant.target(_component_of(variant, rel), rel),
                                                           calib.feeds_of(calls), layers))
    else:
        scores = _chunk_scores(variant, candidates, log)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _component_of(variant, rel: str) -> str:
    return next(c for c, a in variant.sources.items() if rel in graph_files(a))


