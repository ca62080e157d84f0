"""Parity of an exported file against PyTorch, through the same runtime path users run.

Each artifact is loaded with ``mmedge.runtime`` on its own engine (OpenVINO pinned to f32 inference) and
fed the spec's sample inputs: at the export shape and at a second shape for dynamic graphs (this is what
catches a dimension the exporter silently fixed), at the fixed shape with two different seeds for static
ones. The numbers go into the manifest; a miss beyond the spec's tolerance is a ``ParityError``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmedge.errors import MmedgeError, ParityError
from mmedge.exporter.families.base import ComponentSpec
from mmedge.runtime.engines.base import open_session
from mmedge.runtime.manifest import Artifact
from mmedge.runtime.runner import ComponentRunner

ENGINE_OF_FORMAT = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}
REFERENCE_OPTIONS = {"openvino": {"INFERENCE_PRECISION_HINT": "f32"}}


def check(spec: ComponentSpec, artifact: Artifact, files: dict[str, Path]) -> dict:
    """Run every signature of the artifact against the torch module; return the parity record or raise.

    ``files`` maps each signature's package-relative file to where it lies now (the staging directory).
    """
    engine = ENGINE_OF_FORMAT[artifact.format]
    sessions = {}
    for rel, path in files.items():
        try:
            sessions[rel] = open_session(engine, path, precision=artifact.precision, options=REFERENCE_OPTIONS.get(engine))
        except MmedgeError as e:
            raise ParityError(f"{spec.name} {artifact.format}/{artifact.variant}: cannot load for the parity check: {e}") from None
    runner = ComponentRunner(spec.name, artifact, sessions)
    checks = []
    for name, signature in runner.signatures.items():
        cases = ([(spec.static_signatures[name], 0), (spec.static_signatures[name], 1)] if artifact.static
                 else [(spec.export_sizes, 0), (spec.second_sizes, 1)]
                 + [(sizes, 2 + i) for i, sizes in enumerate(spec.more_sizes)])
        for sizes, seed in cases:
            sample = spec.sample(sizes, seed)
            with torch.no_grad():
                expected = spec.module(**sample)
            got = signature(**{k: v.numpy() for k, v in sample.items()})
            diffs = {out: float(np.max(np.abs(got[out].astype(np.float64) - expected[out].numpy().astype(np.float64))))
                     for out in expected}
            checks.append({"signature": name, "sizes": dict(sizes), "seed": seed, "max_abs_diff": diffs,
                           "passed": all(d <= spec.atol for d in diffs.values())})
    record = {"reference": "pytorch", "engine": engine, "metric": "max_abs_diff", "tolerance": spec.atol,
              "checks": checks, "passed": all(c["passed"] for c in checks)}
    if not record["passed"]:
        worst = max(max(c["max_abs_diff"].values()) for c in checks)
        raise ParityError(f"{spec.name} {artifact.format}/{artifact.variant} differs from PyTorch by {worst:.3g} "
                          f"(tolerance {spec.atol}) on {engine}; the conversion is wrong: report it with the model "
                          "config, or try another --formats")
    return record
