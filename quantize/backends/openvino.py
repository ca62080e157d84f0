"""OpenVINO IR compression with NNCF (``nncf.quantize``, ``nncf.compress_weights``) and OpenVINO's own fp16 IR.

Modes and their ``Scheme.options`` (defaults in ``OPTIONS``; an unknown key is a UsageError):

- ``static-int8``: int8 weights and activations, calibrated on ``calibration`` (all of it: subset_size = its
  length). ``preset``: "performance" (symmetric activations) or "mixed" (asymmetric activations); None lets NNCF
  choose, which is mixed for transformers and performance otherwise. ``model_type``: "transformer" (NNCF keeps
  the ops that break transformers in float: LayerNorm/softmax inputs, some Adds), None (generic CNN rules), or
  "auto" (default): transformer when the graph has attention, i.e. a ScaledDotProductAttention op or a MatMul of
  two activations, which CNNs never have. ``fast_bias_correction`` (default True).
- ``int8-weights``: weights int8 per output channel, activations stay float (weights are decompressed at run time).
  ``symmetric`` (default False: INT8_ASYM, NNCF's default and the more accurate of the two).
- ``int4-weights``: weights int4 in groups of ``group_size`` (default 128; -1: per channel), ``symmetric``
  (default True: INT4_SYM, as for ONNX where ORT rejects NNCF's asymmetric int4, and the format optimum-intel
  writes by default). NNCF always keeps the embeddings and the last MatMul in its int8 backup precision unless
  ``all_layers``. ``ratio`` (default 1.0) is the share of the other layers in int4, the rest int8: 1.0 gives the
  smallest file and a predictable size; lower it when int4 everywhere misses the budget (NNCF then ranks layers by
  weight-quantization error, or by activations when data-aware). ``group_size_fallback`` (default "adjust"): a
  layer whose input channels are not divisible by ``group_size`` gets the largest power-of-two group that divides
  them if that is >= 32, else the int8 backup; "ignore" leaves such layers in float; "error" refuses (NNCF's own
  default, InvalidGroupSizeError). Data-aware corrections ``awq``, ``scale_estimation``, ``gptq`` (default off)
  need ``calibration``; ``subset_size`` (default 128) caps the feeds they use.
- ``fp16``: the IR is saved with ``compress_to_fp16=True``: every float constant in fp16, about half the file.
  OpenVINO's CPU plugin decompresses the weights at load and still computes in fp32 or bf16 (per
  ``INFERENCE_PRECISION_HINT``), so this saves disk, not compute. The compression is all-or-nothing (OpenVINO's
  Python API cannot mark single constants as precise), so ``layers()`` offers nothing to exclude in this mode.

Layer names are the graph's node names (``op.get_friendly_name()``), which is what ``nncf.IgnoredScope(names=)``
matches; ``exclude`` takes those names or regular expressions (``quantize.backends.arguments``).
"""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import ExportError, InputError, UsageError
from mmedge.quantize.backends.arguments import options, select
from mmedge.quantize.scheme import Scheme

OPTIONS: dict[str, dict[str, Any]] = {
    "static-int8": {"preset": None, "model_type": "auto", "fast_bias_correction": True},
    "int8-weights": {"symmetric": False},
    "int4-weights": {"symmetric": True, "group_size": 128, "group_size_fallback": "adjust", "ratio": 1.0,
                     "all_layers": False, "awq": False, "scale_estimation": False, "gptq": False, "subset_size": 128},
    "fp16": {},
}
DATA_AWARE = ("awq", "scale_estimation", "gptq")
#: Ops whose input 1 is a weight NNCF quantizes (Gather, the embedding, has it at input 0).
WEIGHTED = ("MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData")
#: Ops NNCF puts between a weight constant and its layer (decompression chains, FakeQuantize); input 0 is the data.
WEIGHT_PATH = ("Convert", "Reshape", "Transpose", "Unsqueeze", "Subtract", "Multiply", "FakeQuantize", "FakeConvert")
QUANT_OPS = ("FakeQuantize", "FakeConvert")
INT_TYPES = ("u8", "i8", "u4", "i4")


def _core():
    import openvino as ov

    return ov.Core()


def _read(src: Path):
    src = Path(src)
    if src.suffix != ".xml" or not src.is_file():
        raise UsageError(f"{src} is not an OpenVINO IR file; give the fp32 .xml of the artifact (its .bin beside it)")
    try:
        return _core().read_model(src)
    except RuntimeError as e:
        raise InputError(f"OpenVINO cannot read {src}: {str(e).strip().splitlines()[0]}; re-export the package") from None


def _weight_source(op, index: int) -> tuple[Any | None, set[str]]:
    """The Constant feeding input ``index`` of ``op`` through decompression/quantization ops, and those ops' types
    (None when the input is an activation)."""
    node, path = op.input_value(index).get_node(), set()
    while node.get_type_name() in WEIGHT_PATH:
        path.add(node.get_type_name())
        node = node.input_value(0).get_node()
    return (node, path) if node.get_type_name() == "Constant" else (None, path)


def _has_weight(op, index: int) -> bool:
    """Input ``index`` is a weight: a float matrix, or one NNCF already stored as u8/i8/u4/i4."""
    const, _ = _weight_source(op, index)
    if const is None or len(const.get_output_shape(0)) < 2:
        return False
    kind = const.get_element_type()
    return kind.is_real() or kind.get_type_name() in INT_TYPES


def _weight_input(op) -> int:
    return 0 if op.get_type_name() == "Gather" else 1


def _weighted_layers(model) -> list:
    """Ops with a weight, in graph order: MatMul, convolutions, embedding Gathers."""
    return [op for op in model.get_ordered_ops()
            if op.get_type_name() in (*WEIGHTED, "Gather") and _has_weight(op, _weight_input(op))]


def _is_activation_matmul(op) -> bool:
    return op.get_type_name() == "MatMul" and not any(_has_weight(op, i) for i in (0, 1))


def _with_tied(ops: list, names: list[str]) -> list[str]:
    """``names`` plus the layers that share a weight constant with one of them (tied embeddings and LM head): NNCF
    compresses a shared constant when any of its consumers is not ignored, so a tied layer is kept float whole."""
    def weight_of(op):
        const, _ = _weight_source(op, _weight_input(op))
        return const.get_friendly_name() if const is not None else None

    tied = {weight_of(op) for op in ops if op.get_friendly_name() in names} - {None}
    return [op.get_friendly_name() for op in ops if op.get_friendly_name() in names or weight_of(op) in tied]


def _candidates(model, mode: str) -> list:
    if mode == "fp16":
        return []
    if mode == "static-int8":
        return [op for op in model.get_ordered_ops()
                if op.get_type_name() in WEIGHTED and (_has_weight(op, 1) or _is_activation_matmul(op))]
    return _weighted_layers(model)


def _check(scheme: Scheme) -> dict[str, Any]:
    """The scheme's options over the mode's defaults; UsageError for a wrong format, mode, key or value."""
    opts = options(scheme, "openvino", OPTIONS)
    choices = {"preset": (None, "performance", "mixed"), "model_type": (None, "auto", "transformer"),
               "group_size_fallback": ("adjust", "ignore", "error")}
    for key, allowed in choices.items():
        if key in opts and opts[key] not in allowed:
            raise UsageError(f"option {key}={opts[key]!r} is not one of {', '.join(map(repr, allowed))}")
    if "ratio" in opts and not (isinstance(opts["ratio"], (int, float)) and 0 < opts["ratio"] <= 1):
        raise UsageError(f"option ratio={opts['ratio']!r} must be a number in (0, 1]: the share of layers in int4")
    if "group_size" in opts and not (isinstance(opts["group_size"], int) and (opts["group_size"] > 0 or opts["group_size"] == -1)):
        raise UsageError(f"option group_size={opts['group_size']!r} must be a positive integer, or -1 for per channel")
    if "subset_size" in opts and not (isinstance(opts["subset_size"], int) and opts["subset_size"] > 0):
        raise UsageError(f"option subset_size={opts['subset_size']!r} must be a positive integer")
    return opts


def _feeds(model, calibration: list[dict[str, np.ndarray]] | None, why: str) -> list[dict[str, np.ndarray]]:
    if not calibration:
        raise UsageError(f"{why} needs calibration feeds (dicts keyed by the graph's input names, recorded with "
                         "quantize.calibration); pass calibration=[...]")
    names = {name for i in model.inputs for name in i.get_names()}
    wanted = [i.any_name for i in model.inputs]
    for feed in calibration:
        missing = [n for n in wanted if n not in feed]
        extra = sorted(set(feed) - names)
        if missing or extra:
            raise InputError(f"calibration feed keys {sorted(feed)} do not match the graph inputs {wanted}; "
                             "record the feeds from this graph file")
    return calibration


def is_transformer(model) -> bool:
    """Attention in the graph: a ScaledDotProductAttention op or a MatMul of two activations (Q·Kᵀ, P·V)."""
    return any(op.get_type_name() == "ScaledDotProductAttention" or _is_activation_matmul(op)
               for op in model.get_ordered_ops())


def _static(model, calibration, opts: dict, scope) -> tuple[Any, dict]:
    import nncf

    feeds = _feeds(model, calibration, "static int8")
    model_type = opts["model_type"]
    if model_type == "auto":
        model_type = "transformer" if is_transformer(model) else None
    preset = opts["preset"] or ("mixed" if model_type == "transformer" else "performance")
    quantized = nncf.quantize(model, nncf.Dataset(feeds), preset=nncf.QuantizationPreset(preset),
                              model_type=nncf.ModelType.TRANSFORMER if model_type else None,
                              subset_size=len(feeds), fast_bias_correction=bool(opts["fast_bias_correction"]),
                              ignored_scope=scope)
    return quantized, {"method": "nncf.quantize (min-max calibration"
                                 f"{', fast bias correction' if opts['fast_bias_correction'] else ', bias correction'})",
                       "weights": "int8 per output channel, symmetric",
                       "activations": f"int8 per tensor (FakeQuantize), {'asymmetric' if preset == 'mixed' else 'symmetric'}",
                       "preset": preset, "model_type": model_type or "generic", "calibration_feeds": len(feeds)}


def _weights(model, mode: str, calibration, opts: dict, scope) -> tuple[Any, dict]:
    import nncf

    sym = bool(opts["symmetric"])
    if mode == "int8-weights":
        cwm = nncf.CompressWeightsMode.INT8_SYM if sym else nncf.CompressWeightsMode.INT8_ASYM
        return nncf.compress_weights(model, mode=cwm, ignored_scope=scope), {
            "method": f"nncf.compress_weights {cwm.name}", "weights": f"int8 per output channel, "
            f"{'symmetric' if sym else 'asymmetric'}", "activations": "float (weights decompressed at run time)"}
    cwm = nncf.CompressWeightsMode.INT4_SYM if sym else nncf.CompressWeightsMode.INT4_ASYM
    aware = [k for k in DATA_AWARE if opts[k]]
    dataset = nncf.Dataset(_feeds(model, calibration, f"int4 with {', '.join(aware)}")) if aware else None
    fallback = nncf.GroupSizeFallbackMode(opts["group_size_fallback"])
    compressed = nncf.compress_weights(
        model, mode=cwm, ratio=float(opts["ratio"]), group_size=opts["group_size"],
        all_layers=bool(opts["all_layers"]), ignored_scope=scope, dataset=dataset,
        subset_size=opts["subset_size"], **{k: True for k in aware},
        advanced_parameters=nncf.AdvancedCompressionParameters(group_size_fallback_mode=fallback))
    group = "rows (per channel)" if opts["group_size"] == -1 else f"groups of {opts['group_size']}"
    return compressed, {
        "method": f"nncf.compress_weights {cwm.name}" + (f" + {', '.join(aware)}" if aware else ""),
        "weights": f"int4 {'symmetric' if sym else 'asymmetric'} in {group} (fallback: {fallback.value}) for "
                   f"{opts['ratio']:.0%} of the {'layers' if opts['all_layers'] else 'layers but the embeddings and the last'}"
                   "; the rest int8 asymmetric per channel (NNCF's backup)",
        "activations": "float (weights decompressed at run time)",
        **({"calibration_feeds": len(calibration)} if aware else {})}


def _layer_state(op) -> str:
    """How a layer of a written graph holds its weight: an integer type (u8/i8/u4/i4), "fq" (FakeQuantize or
    FakeConvert on an input), "f16", or "float"."""
    const, path = _weight_source(op, _weight_input(op))
    kind = const.get_element_type().get_type_name() if const is not None else ""
    if kind in INT_TYPES:
        return kind
    feeds_fq = any(op.input_value(i).get_node().get_type_name() in QUANT_OPS for i in range(op.get_input_size()))
    if feeds_fq or path & set(QUANT_OPS):
        return "fq"
    return "f16" if kind == "f16" else "float"


def _version(dist: str) -> str:
    return f"{dist} {importlib.metadata.version(dist)}"


def layers(src: Path, scheme: Scheme) -> list[str]:
    """Names of the nodes ``scheme`` would quantize in the IR ``src`` (what ``exclude`` accepts), in graph order."""
    _check(scheme)
    return [op.get_friendly_name() for op in _candidates(_read(src), scheme.mode)]


def quantize_graph(src: Path, dst: Path, scheme: Scheme, *, calibration: list[dict[str, np.ndarray]] | None = None,
                   exclude: Sequence[str] = ()) -> dict:
    """Write the ``scheme`` form of the fp32 IR ``src`` to ``dst`` (.xml, its .bin beside it) and say what was done
    (see the module docstring for modes and options)."""
    import nncf
    import openvino as ov

    opts = _check(scheme)
    dst = Path(dst)
    if dst.suffix != ".xml":
        raise UsageError(f"the quantized IR must be written to an .xml path, not {dst}")
    model = _read(src)
    candidates = _candidates(model, scheme.mode)
    names = [op.get_friendly_name() for op in candidates]
    excluded, unmatched = select(exclude, names)
    excluded = _with_tied(candidates, excluded)
    scope = nncf.IgnoredScope(names=excluded) if excluded else None
    try:
        if scheme.mode == "static-int8":
            model, how = _static(model, calibration, opts, scope)
        elif scheme.mode == "fp16":
            how = {"method": "openvino save_model(compress_to_fp16=True)", "weights": "fp16 (every float constant)",
                   "activations": "fp32 or bf16: the CPU plugin decompresses fp16 weights at load and computes per "
                                  "INFERENCE_PRECISION_HINT"}
        else:
            model, how = _weights(model, scheme.mode, calibration, opts, scope)
    except (nncf.ValidationError, nncf.ParameterNotSupportedError, nncf.InvalidGroupSizeError) as e:
        raise UsageError(f"NNCF refused openvino {scheme.mode} with options {opts}: {e}") from None
    except RuntimeError as e:  # OpenVINO inference during calibration or statistics collection
        raise ExportError(f"NNCF could not quantize {Path(src).name} ({scheme.mode}): "
                          f"{str(e).strip().splitlines()[0][:300]}") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, dst, compress_to_fp16=scheme.mode == "fp16")
    written = _core().read_model(dst)  # fp16 compression happens while saving: count what the file holds
    counted = _weighted_layers(written) if scheme.mode == "fp16" else _candidates(written, scheme.mode)
    states = Counter(_layer_state(op) for op in counted)
    quantized = sum(n for state, n in states.items() if state != "float")
    return {"tool": _version("nncf") if scheme.mode != "fp16" else _version("openvino"), "engine": _version("openvino"),
            "mode": scheme.mode, **how, "options": opts, "excluded": excluded, "exclude_unmatched": unmatched,
            "candidate_layers": len(names), "quantized_layers": quantized,
            "layer_weights": dict(sorted(states.items())),
            "fake_quantize": sum(op.get_type_name() in QUANT_OPS for op in written.get_ops())}
