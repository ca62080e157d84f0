"""TFLite compression with ai-edge-quantizer (AEQ) recipes, applied to the converted fp32 file.

Quantizing after conversion is deliberate: litert-torch's PT2E dynamic int8 breaks models with token embeddings,
while AEQ quantizes the EMBEDDING_LOOKUP table like any weight (int8 table, float output: LiteRT's hybrid kernel)
and keeps the decoder working. A file may hold several signatures (a static decoder's ``decode`` and
``prefill_N``) whose subgraphs share the weight buffers: AEQ quantizes every subgraph, and a shared weight is
quantized once (its "overriding previously quantized data in buffer" warnings say exactly that and are muted).

Modes (``Scheme.options`` in ``OPTIONS``; an unknown key is a UsageError). Weights are symmetric (LiteRT kernels
support only symmetric weights) and per output channel unless said otherwise:

- ``dynamic-int8``: int8 weights, activations quantized to int8 at run time by the kernels (dynamic range).
- ``int8-weights``: int8 weights with a DEQUANTIZE op before each layer: float compute, int8 file.
- ``int4-weights``: int4 weights, float compute. ``block_size`` (default 0: per channel) 32/64/128/256: blockwise
  int4 for FULLY_CONNECTED and EMBEDDING_LOOKUP, the only layers AEQ 0.10 blocks, and only with dynamic-range
  kernels (activations int8 at run time); other layers, and those whose input size the block does not divide
  (recorded as ``per_channel_fallback``), stay per-channel weight-only. Per channel is the default
  because it is the mode's promise (float activations); blocks of 32 lose far less accuracy, so the ``int4`` wish
  (``plan.scheme_for``: ``mmedge quantize --mode int4``) asks for them: Whisper tiny.en WER 15.5 % vs 391 % per
  channel (fp32 5.6 %).
- ``fp16``: fp16 weights (AEQ's float casting) with DEQUANTIZE ops; LiteRT computes in fp32.

A layer is one weight buffer (a float constant of rank >= 2 feeding an op the recipe quantizes) with every op of
every signature that reads it, so tied weights (GPT-2's token embedding and LM head) and the copies of a layer in
each signature are one layer, kept float together. Its name is the name of its first weight tensor. ``exclude``
takes those names or regular expressions (``quantize.backends.arguments``); the recipe keeps each op of an
excluded layer float with a NO_QUANTIZE entry anchored to that op's exact AEQ scope (its output tensor names).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import ExportError, InputError, UsageError
from mmedge.quantize.backends.arguments import options, select
from mmedge.quantize.scheme import Scheme

OPTIONS: dict[str, dict[str, Any]] = {"dynamic-int8": {}, "int8-weights": {}, "int4-weights": {"block_size": 0},
                                      "fp16": {}}
BLOCK_SIZES = (0, 32, 64, 128, 256)
FLOAT32, FLOAT16, INT8, INT4 = 0, 1, 9, 17  # TFLite schema TensorType codes
TYPE_NAMES = {FLOAT32: "float32", FLOAT16: "float16", INT8: "int8", INT4: "int4"}
BLOCKWISE_OPS = {"FULLY_CONNECTED", "EMBEDDING_LOOKUP"}  # blocked along their input dimension (axis 1)
SHARED_BUFFER_WARNING = "is overriding other previously quantized data in buffer"


@dataclass
class Layer:
    """One weight buffer and the AEQ scopes of the ops (in every subgraph) that read it."""

    name: str
    buffer: int
    shape: tuple[int, ...]
    scopes: list[str] = field(default_factory=list)
    ops: set[str] = field(default_factory=set)


def _check(scheme: Scheme) -> dict[str, Any]:
    opts = options(scheme, "tflite", OPTIONS)
    if "block_size" in opts and opts["block_size"] not in BLOCK_SIZES:
        raise UsageError(f"option block_size={opts['block_size']!r} is not one of {BLOCK_SIZES} "
                         "(0: per channel; ai-edge-quantizer blocks only by these sizes)")
    return opts


def _recipe(mode: str, opts: dict):
    """An AEQ RecipeManager for ``mode`` over the whole model (regex ".*"); exclusions are added later."""
    from ai_edge_quantizer import qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    every = qtyping.TFLOperationName.ALL_SUPPORTED
    if mode == "dynamic-int8":
        manager.add_dynamic_config(".*", every, num_bits=8)
    elif mode == "int8-weights":
        manager.add_weight_only_config(".*", every, num_bits=8)
    elif mode == "int4-weights":
        manager.add_weight_only_config(".*", every, num_bits=4)
        if opts["block_size"]:
            blocks = qtyping.QuantGranularity(f"BLOCKWISE_{opts['block_size']}")
            for op in sorted(BLOCKWISE_OPS):
                manager.add_dynamic_config(".*", qtyping.TFLOperationName(op), num_bits=4, granularity=blocks)
    else:
        manager.add_weight_only_config(".*", every, num_bits=16, algorithm_key=recipe_manager.AlgorithmName.FLOAT_CASTING)
    return manager


def _read(src: Path):
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    src = Path(src)
    if src.suffix != ".tflite" or not src.is_file():
        raise UsageError(f"{src} is not a TFLite file; give the fp32 .tflite of the artifact")
    try:
        model = fb.read_model(str(src))
    except Exception as e:  # the FlatBuffer reader raises whatever a damaged buffer triggers
        raise InputError(f"{src} is not a readable TFLite FlatBuffer ({type(e).__name__}: {e}); "
                         "re-export the package") from None
    if not fb.is_float_model(model):
        raise UsageError(f"{src.name} is already quantized; quantize the fp32 artifact instead")
    return model


def _is_weight(tensor, buffers) -> bool:
    buf = buffers[tensor.buffer]
    stored = (buf.data is not None and len(buf.data) > 0) or (getattr(buf, "offset", 0) or 0) > 1
    return stored and tensor.type == FLOAT32 and tensor.shape is not None and len(tensor.shape) >= 2


def _layers(model, manager) -> list[Layer]:
    """The weight buffers ``manager`` would quantize, in order of first use, with every op that reads them."""
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    found: dict[int, Layer] = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            op_name = fb.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode)
            weight = next((subgraph.tensors[i] for i in op.inputs
                           if i >= 0 and _is_weight(subgraph.tensors[i], model.buffers)), None)
            if op_name is None or weight is None:
                continue
            scope = fb.get_op_scope(op, subgraph.tensors)
            if manager.get_quantization_configs(op_name, scope)[0] == AlgorithmName.NO_QUANTIZE:
                continue
            layer = found.setdefault(weight.buffer, Layer(fb.get_tensor_name(weight), weight.buffer, tuple(weight.shape)))
            layer.scopes.append(scope)
            layer.ops.add(op_name.value)
    return list(found.values())


@contextlib.contextmanager
def _shared_buffer_warnings_muted():
    """AEQ warns once per extra tensor on a shared weight buffer (every signature of a multi-signature file, tied
    weights) although the data written is the same; keep every other warning."""
    def drop(record: logging.LogRecord) -> bool:
        return SHARED_BUFFER_WARNING not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _signatures(model) -> list[str]:
    return [s.signatureKey.decode() if isinstance(s.signatureKey, bytes) else s.signatureKey
            for s in model.signatureDefs]


def _describe(mode: str, opts: dict) -> dict[str, str]:
    if mode == "dynamic-int8":
        return {"method": "ai-edge-quantizer dynamic range (min-max)", "weights": "int8 per output channel, symmetric",
                "activations": "int8 per tensor, quantized at run time by the kernels (dynamic range)"}
    if mode == "fp16":
        return {"method": "ai-edge-quantizer float casting", "weights": "fp16",
                "activations": "float32 (DEQUANTIZE ops restore fp32 weights)"}
    bits = "int8" if mode == "int8-weights" else "int4"
    if mode == "int4-weights" and opts["block_size"]:
        return {"method": "ai-edge-quantizer weight-only + blockwise dynamic (min-max)",
                "weights": f"int4 symmetric, blocks of {opts['block_size']} for FULLY_CONNECTED and EMBEDDING_LOOKUP, "
                           "per output channel elsewhere",
                "activations": "int8 at run time for the blockwise layers, float32 elsewhere"}
    return {"method": "ai-edge-quantizer weight-only (min-max)", "weights": f"{bits} per output channel, symmetric",
            "activations": "float32 (DEQUANTIZE op before each layer)"}


def layers(src: Path, scheme: Scheme) -> list[str]:
    """Names of the weight buffers ``scheme`` would quantize in ``src`` (what ``exclude`` accepts)."""
    opts = _check(scheme)
    return [layer.name for layer in _layers(_read(src), _recipe(scheme.mode, opts))]


def quantize_graph(src: Path, dst: Path, scheme: Scheme, *, calibration: list[dict[str, np.ndarray]] | None = None,
                   exclude: Sequence[str] = ()) -> dict:
    """Write the ``scheme`` form of the fp32 ``src`` to ``dst`` (.tflite), every signature kept, and say what was
    done. ``calibration`` is unused: no TFLite mode here needs it (AEQ's static int8 is not offered)."""
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    opts = _check(scheme)
    dst = Path(dst)
    if dst.suffix != ".tflite":
        raise UsageError(f"the quantized model must be written to a .tflite path, not {dst}")
    model = _read(src)
    manager = _recipe(scheme.mode, opts)
    candidates = _layers(model, manager)
    excluded, unmatched = select(exclude, [layer.name for layer in candidates])
    # later recipe entries win: per-channel for layers the blocks do not divide, then float for excluded ones
    uneven = [layer.name for layer in candidates if opts.get("block_size") and layer.ops <= BLOCKWISE_OPS
              and layer.shape[1] % opts["block_size"] and layer.name not in excluded]
    for layer in candidates:
        for scope in layer.scopes if layer.name in uneven else ():
            manager.add_weight_only_config(f"^{re.escape(scope)}$", TFLOperationName.ALL_SUPPORTED, num_bits=4)
    for layer in candidates:
        for scope in layer.scopes if layer.name in excluded else ():
            manager.add_quantization_config(f"^{re.escape(scope)}$", TFLOperationName.ALL_SUPPORTED,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)  # AEQ would warn that it overwrites
    try:
        with _shared_buffer_warnings_muted():
            result = quantizer.Quantizer(str(src), manager.get_quantization_recipe()).quantize(
                enable_progress_bar=False, enable_progress_report=False)
        result.export_model(str(dst), overwrite=True)
    except (ValueError, RuntimeError) as e:
        raise ExportError(f"ai-edge-quantizer could not apply {scheme.mode} to {Path(src).name}: "
                          f"{str(e).strip().splitlines()[0][:300]}") from None
    written = fb.read_model(str(dst))
    if _signatures(written) != _signatures(model):
        raise ExportError(f"ai-edge-quantizer changed the signatures of {Path(src).name} "
                          f"({_signatures(model)} -> {_signatures(written)})")
    types = {fb.get_tensor_name(t): t.type for sg in written.subgraphs for t in sg.tensors}
    held = Counter(TYPE_NAMES.get(types.get(layer.name), "other") for layer in candidates)
    return {"tool": f"ai-edge-quantizer {importlib.metadata.version('ai-edge-quantizer')}", "mode": scheme.mode,
            **_describe(scheme.mode, opts), "options": opts, "signatures": _signatures(written),
            **({"per_channel_fallback": uneven} if opts.get("block_size") else {}),
            "excluded": excluded, "exclude_unmatched": unmatched, "candidate_layers": len(candidates),
            "quantized_layers": sum(n for kind, n in held.items() if kind != "float32"),
            "layer_weights": dict(sorted(held.items()))}
