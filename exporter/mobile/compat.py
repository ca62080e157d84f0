"""The phone compatibility report: how much of each fixed-shape graph NNAPI and CoreML can take (ORT's mobile
usability checker), and what LiteRT can say about its GPU delegate.

ORT: ``onnxruntime.tools.check_onnx_model_mobile_usability`` only logs prose and returns a yes/no, so this
module calls the functions it is built from (``mobile_helpers.usability_checker``: shape inference, then the
partitioning check against ORT's own NNAPI / CoreML supported-op tables) on the graph optimized to ORT's basic
level, as the checker does, and keeps the numbers: nodes, supported nodes, partitions, unsupported ops, the
verdict (YES / MAYBE / NO).

LiteRT: ai-edge-litert ships the TFLite model analyzer (``_pywrap_analyzer_wrapper.ModelAnalyzer``) with a GPU
compatibility flag, but its build lacks the GPU delegate's compatibility checker: probed with ai-edge-litert
2.3.0, it called a CUMSUM + TOPK_V2 graph (ops the GPU delegate does not run) "compatible with GPU delegate".
Its verdict is therefore not reported; the report says so and lists the ops of each file, which is what the
analyzer does get right. TensorFlow's ``tf.lite.experimental.Analyzer`` (full TensorFlow) or a run with the GPU
delegate on the phone gives the real answer.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import tempfile
from pathlib import Path

from mmedge.errors import ExportError

LITERT_GPU_UNAVAILABLE = (
    "no working LiteRT GPU compatibility analyzer is installable without TensorFlow: ai-edge-litert's model "
    "analyzer accepts gpu_compatibility=True but its build lacks the GPU delegate checker (it reports ops the GPU "
    "delegate does not run, e.g. CUMSUM and TOPK_V2, as compatible), so no GPU verdict is given. Check with "
    "TensorFlow's tf.lite.experimental.Analyzer.analyze(model_path=..., gpu_compatibility=True) or by running the "
    "file with the GPU delegate on the phone.")
EPS = {"nnapi": None, "coreml_neuralnetwork": "coreml_supported_neuralnetwork_ops.md",
       "coreml_mlprogram": "coreml_supported_mlprogram_ops.md"}


def _partitions(info) -> dict:
    """The numbers of one ``PartitioningInfo`` (ORT's checker), plus its verdict."""
    return {
        "nodes": info.num_nodes, "supported_nodes": info.num_supported_nodes,
        "coverage_pct": round(100.0 * info.num_supported_nodes / max(info.num_nodes, 1), 1),
        "partitions": info.num_partitions, "partition_sizes": [len(g) for g in info.supported_groups],
        "unsupported_ops": sorted(info.unsupported_ops),
        "nodes_unsupported_due_to_op": info.nodes_unsupported_due_to_op,
        "nodes_unsupported_due_to_dynamic_shape": info.nodes_unsupported_due_to_dynamic_input,
        "ops_with_unsupported_rank": sorted(info.ops_with_unsupported_rank),
        "caveats": info.supported_ops_checker.get_caveats(), "verdict": info.suitability().name}


def ort_mobile_usability(onnx_file: Path) -> dict:
    """NNAPI and CoreML (NeuralNetwork, MLProgram) partition coverage of one ONNX graph."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / onnx_file.name
        try:
            optimize_model(onnx_file, optimized, use_external_initializers=True)
            model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        except Exception as e:  # ORT and onnx raise their own types
            raise ExportError(f"ORT's mobile usability check cannot read {onnx_file.name}: {e}; report it") from None
        dynamic_inputs, _ = uc.check_shapes(model.graph, logging.getLogger("mmedge.mobile"))
        report = {"dynamic_inputs": [i.name for i in dynamic_inputs]}
        for ep, ops_table in EPS.items():
            info = (uc.check_nnapi_partitions(model, require_fixed_input_sizes=True) if ops_table is None
                    else uc.check_coreml_partitions(model, True, ops_table))
            report[ep] = _partitions(info)
    return report


def litert_ops(tflite_file: Path) -> dict:
    """The operators of one TFLite file, read with LiteRT's model analyzer (see the module docstring)."""
    from ai_edge_litert import _pywrap_analyzer_wrapper

    text = _pywrap_analyzer_wrapper.ModelAnalyzer(str(tflite_file), True, False)
    ops = re.findall(r"^\s*Op#\d+ (\w+)\(", text, flags=re.MULTILINE)
    return {"ops": sorted(set(ops)), "op_count": len(ops)}


def report(device: str, onnx_graphs: dict[str, dict[str, Path]], tflite_files: dict[str, Path],
           relative_to: Path) -> dict:
    """The compatibility report of a phone export: per component and graph, ORT Mobile's NNAPI / CoreML
    analysis; per component, the LiteRT file's ops and the GPU analyzer's (un)availability."""
    def rel(p: Path) -> str:
        return p.relative_to(relative_to).as_posix()
    return {
        "device": device,
        "tools": {name: _version(name) for name in ("onnxruntime", "ai-edge-litert")},
        "onnxruntime_mobile": {comp: {sig: {"file": rel(f), **ort_mobile_usability(f)} for sig, f in graphs.items()}
                               for comp, graphs in onnx_graphs.items()},
        "litert_gpu": {"available": False, "reason": LITERT_GPU_UNAVAILABLE,
                       "files": {comp: {"file": rel(f), **litert_ops(f)} for comp, f in tflite_files.items()}},
    }


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def summary(rep: dict) -> list[str]:
    """A few lines for people: per graph, NNAPI and CoreML coverage and verdict, then the LiteRT GPU note."""
    lines = [f"phone compatibility ({rep['device']}):"]
    for comp, graphs in rep["onnxruntime_mobile"].items():
        for sig, r in graphs.items():
            lines.append(f"  {comp}/{sig}:")
            for ep in EPS:
                e = r[ep]
                unsupported = ", ".join(op.split(":")[-1] for op in e["unsupported_ops"])
                lines.append(f"    {ep}: {e['coverage_pct']:.0f}% of {e['nodes']} nodes in {e['partitions']} "
                             f"partition(s) -> {e['verdict']}" + (f" (unsupported: {unsupported})" if unsupported else ""))
    lines.append("  LiteRT GPU delegate: not analyzed (no working analyzer installable without TensorFlow; "
                 "see the report)")
    return lines
