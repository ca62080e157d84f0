"""The options of the ONNX backend's modes: defaults, allowed values, and the checks that turn a bad value into a
``UsageError`` naming the valid ones (what each option does: ``quantize.backends.onnx``'s docstring)."""

from __future__ import annotations

from mmedge.errors import UsageError
from mmedge.quantize.scheme import MODES, Scheme

#: Op types the fp16 sensitivity pass may keep in fp32: where fp16 overflows or loses precision.
FP16_CANDIDATES = ("MatMul", "Gemm", "Conv", "ConvTranspose", "LayerNormalization", "SimplifiedLayerNormalization",
                   "InstanceNormalization", "GroupNormalization", "BatchNormalization", "Softmax", "ReduceMean",
                   "Pow", "Exp", "Erf")
DEFAULTS: dict[str, dict] = {
    "dynamic-int8": {"per_channel": True, "weight_type": "int8", "op_types": ("MatMul", "Attention", "LSTM", "Gather"),
                     "conv": False, "matmul_const_b_only": True, "reduce_range": False, "pre_process": False,
                     "extra_options": {}},
    "static-int8": {"preset": "S8S8", "activation_type": None, "weight_type": None, "calibrate_method": "minmax",
                    "percentile": 99.999, "per_channel": True, "op_types": ("Conv", "MatMul", "Gemm"),
                    "matmul_const_b_only": False, "reduce_range": False, "pre_process": True, "extra_options": {},
                    "tool": "onnxruntime", "fast_bias_correction": False, "model_type": None},
    "fp16": {"op_block_list": ()},
    "int4": {"tool": "onnxruntime", "block_size": 32, "embeddings": True, "accuracy_level": None, "ratio": 1.0},
    "optimized": {"model_type": None, "opt_level": 1, "disable": ()},
}
CHOICES = {"weight_type": ("int8", "uint8"), "activation_type": ("uint8", "int8", "uint16", "int16"),
           "calibrate_method": ("minmax", "entropy", "percentile"), "preset": ("S8S8", "U8S8"),
           "tool": ("onnxruntime", "nncf"), "accuracy_level": (None, 0, 1, 2, 3, 4), "model_type": (None, "transformer")}
#: Choices that differ by mode (``model_type`` of static int8 is NNCF's, of optimized ORT's optimizer's).
MODE_CHOICES = {"optimized": {"opt_level": (0, 1, 2, 99)}}
PRESETS = {"S8S8": ("int8", "int8"), "U8S8": ("uint8", "int8")}


def _choices(mode: str) -> dict:
    if mode != "optimized":
        return CHOICES
    from mmedge.quantize.backends.onnx_fusion import model_types

    return {**CHOICES, **MODE_CHOICES[mode], "model_type": (None, *model_types())}


def _check(key: str, value, default, choices: dict):
    """``value`` checked against the kind of ``default`` and the ``choices``; returns it normalised."""
    bad = UsageError(f"ONNX quantization option {key}={value!r} is invalid; "
                     + (f"choose one of {choices[key]}" if key in choices else f"give a value like {default!r}"))
    if key in choices:
        if value not in choices[key] or isinstance(value, bool):
            raise bad
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
    elif isinstance(default, tuple):
        if isinstance(value, str):  # from the command line: --option disable=attention,gelu
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad
        return tuple(value)
    elif isinstance(default, dict):
        if not isinstance(value, dict):
            raise bad
    elif key == "block_size":
        if not isinstance(value, int) or value < 16 or value & (value - 1):
            raise UsageError(f"block_size={value!r}: give a power of two >= 16 (32 is the default)")
    elif key in ("percentile", "ratio"):
        top = 100 if key == "percentile" else 1
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= top:
            raise UsageError(f"{key}={value!r}: give a number in (0, {top}]")
    return value


def options(scheme: Scheme) -> dict:
    """The scheme's options over the mode's defaults, checked (``UsageError`` names the valid choices)."""
    if scheme.format != "onnx":
        raise UsageError(f"the ONNX backend cannot apply a '{scheme.format}' scheme; use that format's backend")
    if scheme.mode not in DEFAULTS:
        raise UsageError(f"unknown ONNX quantization mode '{scheme.mode}'; choose one of: {', '.join(MODES['onnx'])}")
    defaults = DEFAULTS[scheme.mode]
    unknown = sorted(set(scheme.options) - set(defaults))
    if unknown:
        raise UsageError(f"ONNX {scheme.mode} has no option {', '.join(unknown)}; its options: {', '.join(defaults)}")
    choices = _choices(scheme.mode)
    opts = {**defaults, **{k: _check(k, v, defaults[k], choices) for k, v in scheme.options.items()}}
    if scheme.mode == "static-int8":
        act, weight = PRESETS[opts["preset"]]
        opts["activation_type"] = opts["activation_type"] or act
        opts["weight_type"] = opts["weight_type"] or weight
    if scheme.mode == "dynamic-int8" and opts["conv"] and "Conv" not in opts["op_types"]:
        opts["op_types"] += ("Conv",)
    if scheme.mode == "fp16":
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

        opts["op_types"] = FP16_CANDIDATES
        opts["op_block_list"] = tuple(DEFAULT_OP_BLOCK_LIST) + opts["op_block_list"]
    if scheme.mode == "optimized":
        from mmedge.quantize.backends.onnx_fusion import fusion_names

        unknown = [name for name in opts["disable"] if name not in fusion_names()]
        if unknown:
            raise UsageError(f"optimized: disable names unknown fusions {', '.join(unknown)}; choose from "
                             f"{', '.join(fusion_names())}")
    if scheme.mode == "int4" and opts["tool"] == "onnxruntime" and opts["ratio"] != 1.0:
        raise UsageError("int4 ratio (int4 for part of the weights, int8 for the rest) needs tool='nncf'")
    return opts
