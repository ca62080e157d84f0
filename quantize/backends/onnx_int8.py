"""ONNX Runtime int8 for one graph: dynamic (weights quantized offline, activations at run time by the graph) and
static QDQ (activation ranges calibrated on recorded feeds). The quantizers are onnxruntime's own
(``quantize_dynamic``/``quantize_static``); this module prepares their input and feeds the calibration.

Measured on the exported tiny models (ORT 1.32) and the reason for the defaults in ``quantize.backends.onnx``:
static int8 over every op type ORT can quantize (its default) dropped the tiny ViT to cosine 0.96 against fp32
and broke GPT-2 per-channel (a per-axis scale on the embedding Gather's output); Conv/MatMul/Gemm only gives
0.9999 on both.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from mmedge.quantize.backends import onnx_graph

QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8", "int16": "QInt16", "uint16": "QUInt16"}
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def working_copy(src: Path, tmp: Path, pre_process: bool, keep: Sequence[str]) -> tuple[Path, str]:
    """``src`` in ``tmp`` with its weights beside it, for the quantizers to read (they write files next to their
    input; the package stays untouched). With ``pre_process``, ORT's ``quant_pre_process`` (symbolic shape
    inference + basic graph optimisation) first; its optimisation is skipped where it fails or would rename a node
    of ``keep`` (the candidates: exclusions and the record refer to them by name). Returns the path and what ran:
    "shape inference + optimization", "shape inference" or "none"."""
    import onnx

    out = tmp / "input.onnx"
    if pre_process:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        for skip in (False, True):
            try:
                quant_pre_process(str(src), str(out), skip_optimization=skip, save_as_external_data=True,
                                  all_tensors_to_one_file=True, external_data_location="input.onnx.data")
            except Exception:  # noqa: BLE001 - ORT's optimizer and shape inference raise assorted errors; retried
                continue
            names = {n.name for n in onnx.load(str(out), load_external_data=False).graph.node}
            if all(k in names for k in keep):
                return out, "shape inference" if skip else "shape inference + optimization"
    onnx.save(onnx.load(str(src)), str(out), save_as_external_data=True, location="input.onnx.data")
    return out, "none"


class _Feeds:
    """The calibration feeds, given to ORT one at a time (``set_range`` with ``CalibStridedMinMax=1``): its
    histogram calibrators (entropy, percentile) stack all collected outputs into one array, which fails on feeds
    of different shapes (a prefill and a decode step); collected one by one, the histograms are merged instead."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self.set_range(0, len(feeds))

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def __len__(self) -> int:
        return len(self._feeds)


def _tool_output(work: Path, dst: Path) -> Path:
    """Where a quantizer writes: a temporary folder, under ``dst``'s name (a large graph's ``.data`` file is
    named after it and referenced by that name from inside the graph)."""
    out = work.parent / "out" / dst.name
    out.parent.mkdir(exist_ok=True)
    return out


def _move(out: Path, dst: Path) -> list[str]:
    """Move the quantizer's files (graph and ``.data``) to ``dst``'s folder; returns their names."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    files = onnx_graph.written(out)
    for name in files:
        shutil.move(str(out.with_name(name)), str(dst.with_name(name)))
    return files


def dynamic(work: Path, dst: Path, opts: dict, exclude: list[str], large: bool) -> dict:
    """Dynamic int8 of ``work`` into ``dst``; ``exclude`` in the quantizer's own names. Returns the record part."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = _tool_output(work, dst)
    quantize_dynamic(str(work), str(out), op_types_to_quantize=list(opts["op_types"]),
                     per_channel=opts["per_channel"], reduce_range=opts["reduce_range"],
                     weight_type=getattr(QuantType, QUANT_TYPES[opts["weight_type"]]), nodes_to_exclude=exclude,
                     use_external_data_format=large,
                     extra_options={"MatMulConstBOnly": opts["matmul_const_b_only"], **opts["extra_options"]})
    granularity = "per channel" if opts["per_channel"] else "per tensor"
    return {"method": "onnxruntime quantize_dynamic", "weights": f"{opts['weight_type']} {granularity}",
            "activations": "uint8 per tensor, quantized at run time", "op_types": list(opts["op_types"]),
            "files": _move(out, dst)}


def static(work: Path, dst: Path, opts: dict, exclude: list[str], large: bool,
           calibration: list[dict[str, np.ndarray]]) -> dict:
    """Static QDQ int8 (or 16-bit activations) of ``work`` into ``dst``, calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    act, weight = opts["activation_type"], opts["weight_type"]
    # Dedicated QDQ pairs when excluding: with shared ones, an excluded node reading the same tensor as quantized
    # nodes (Q/K/V) would still read it quantized (measured on the tiny ViT).
    extra = {"CalibStridedMinMax": 1, "MatMulConstBOnly": opts["matmul_const_b_only"],
             "DedicatedQDQPair": bool(exclude)}
    method = opts["calibrate_method"]
    if method == "percentile":
        extra["CalibPercentile"] = opts["percentile"]
    out = _tool_output(work, dst)
    quantize_static(str(work), str(out), _Feeds(calibration), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(opts["op_types"]), per_channel=opts["per_channel"],
                    reduce_range=opts["reduce_range"], activation_type=getattr(QuantType, QUANT_TYPES[act]),
                    weight_type=getattr(QuantType, QUANT_TYPES[weight]), nodes_to_exclude=exclude,
                    use_external_data_format=large, calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                    extra_options={**extra, **opts["extra_options"]})
    granularity = "per channel" if opts["per_channel"] else "per tensor"
    how = f"{method} {opts['percentile']}" if method == "percentile" else method
    record = {"method": "onnxruntime quantize_static QDQ", "weights": f"{weight} {granularity}",
              "activations": f"{act} per tensor, calibrated ({how}) on {len(calibration)} feeds",
              "preset": {("int8", "int8"): "S8S8", ("uint8", "int8"): "U8S8"}.get((act, weight)),
              "op_types": list(opts["op_types"]), "files": _move(out, dst)}
    if act in ("int16", "uint16"):
        record["note"] = ("16-bit activations: ORT upgrades the graph to opset 21 (standard QuantizeLinear/"
                          "DequantizeLinear with 16-bit types)")
    return record
