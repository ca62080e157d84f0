"""TensorRT execution-provider options for one ONNX file: precision flags, caches, DLA and shape profiles.

Shape profiles: TensorRT builds an engine for a range of shapes (min / opt / max per input); without explicit
profiles ORT's TensorRT EP rebuilds the engine whenever an input grows past what it has seen, which on a
decoder means a rebuild every few tokens. So every input with a named (dynamic) dimension gets a profile:

* ``batch``: 1 / 1 / ``trt_max_batch`` (option, default 16: beams, labels or images per call; a larger
  call is rejected by TensorRT, so raise it for big label sets);
* ``sequence``: 1 / 1 / max_positions on a KV-cache decoder (steps of one token dominate); on an encoder
  1 / text length / text length (padded texts);
* ``past_sequence``: 0 / max_cache_len/2 / max_positions-1: the dynamic cache starts empty at the prompt,
  and TensorRT tunes for a half-full cache;
* ``total_sequence`` (past + new): 1 / past opt + 1 / max_positions;
* any other named dimension: 1 / its max / the text length, else 512 (``trt_max_dim``).

Limits come from the manifest (``generation.cache``, ``preprocessing.text.max_length``); a user's own
``trt_profile_*_shapes`` win. int8 is enabled only for int8 (QDQ) files: TensorRT reads their Q/DQ scales, no
calibration table is needed; fp16 is on for fp16 and fp32 files unless the options turn it off.
"""

from __future__ import annotations

from typing import Any

from mmedge.runtime.accelerators.context import FileContext
from mmedge.runtime.manifest import Artifact, Signature, TensorSpec

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_DIM = 512
PROFILE_KEYS = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")


def dim_bounds(dim: str, limits: dict[str, int], decoder: bool, options: dict[str, Any]) -> tuple[int, int, int]:
    """(min, opt, max) of one named dimension; the rules are in the module docstring."""
    text = limits.get("text_length") or int(options.get("trt_max_dim") or DEFAULT_MAX_DIM)
    positions = limits.get("max_positions") or text
    past_opt = min(limits.get("max_cache_len", positions), positions - 1) // 2
    if dim == "batch":
        return 1, 1, int(options.get("trt_max_batch") or DEFAULT_MAX_BATCH)
    if dim == "sequence":
        return (1, 1, positions) if decoder else (1, text, text)
    if dim == "past_sequence":
        return 0, past_opt, positions - 1
    if dim == "total_sequence":
        return 1, past_opt + 1, positions
    return 1, text, text


def shape_profiles(signature: Signature, limits: dict[str, int], options: dict[str, Any]) -> dict[str, str]:
    """``trt_profile_{min,opt,max}_shapes`` strings (``name:1x3x224x224,...``) for the dynamic inputs; {} if none."""
    dynamic = [t for t in signature.inputs if any(isinstance(d, str) for d in t.shape)]
    if not dynamic:
        return {}
    decoder = any("past_sequence" in t.shape for t in signature.inputs)

    def shape(t: TensorSpec, which: int) -> str:
        return "x".join(str(d if isinstance(d, int) else dim_bounds(d, limits, decoder, options)[which])
                        for d in t.shape)
    return {key: ",".join(f"{t.bound_name}:{shape(t, i)}" for t in dynamic) for i, key in enumerate(PROFILE_KEYS)}


def _dla(options: dict[str, Any], context: FileContext) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """DLA options when asked for (``dla`` / ``dla_core``) and the board has the core; else a fallback note."""
    if not options.get("dla") and options.get("dla_core") is None:
        return {}, []
    device = context.device()
    core = int(options.get("dla_core") or 0)
    if device.dla_cores == 0:
        where = device.model or device.profile
        return {}, [{"what": "TensorRT DLA", "why": f"asked for, but '{where}' has no DLA (only Orin NX and AGX "
                                                    "Orin have one): TensorRT runs on the GPU"}]
    if core >= device.dla_cores:
        return {"trt_dla_enable": True, "trt_dla_core": 0}, [
            {"what": f"TensorRT DLA core {core}", "why": f"this board has {device.dla_cores} DLA core(s); using core 0"}]
    return {"trt_dla_enable": True, "trt_dla_core": core}, []


def tensorrt_options(options: dict[str, Any], artifact: Artifact, signature: Signature,
                     context: FileContext) -> dict[str, Any]:
    """``options`` with complete TensorRT provider options for this file (see the module docstring)."""
    provider_options = {k: dict(v) for k, v in (options.get("provider_options") or {}).items()}
    trt = provider_options.setdefault(TRT, {})
    trt["trt_int8_enable"] = artifact.precision == "int8"
    trt.setdefault("trt_fp16_enable", True)    # int8 files too: their unquantized layers then run in fp16
    if CUDA in provider_options and "device_id" in provider_options[CUDA]:
        trt.setdefault("device_id", provider_options[CUDA]["device_id"])
    if trt.get("trt_engine_cache_enable") or trt.get("trt_timing_cache_enable"):
        folder = str(context.cache_dir(options, "trt"))
        if trt.get("trt_engine_cache_enable"):
            trt.setdefault("trt_engine_cache_path", folder)
        if trt.get("trt_timing_cache_enable"):
            trt.setdefault("trt_timing_cache_path", folder)
    if not any(k in trt for k in PROFILE_KEYS):
        trt.update(shape_profiles(signature, context.limits, options))
    dla, notes = _dla(options, context)
    trt.update(dla)
    return {**options, "provider_options": provider_options, "fallbacks": [*options.get("fallbacks", ()), *notes]}
