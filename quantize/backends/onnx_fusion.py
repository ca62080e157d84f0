"""ONNX Runtime graph optimisation as a variant (the ONNX backend's ``optimized`` mode, precision fp32): operator
fusions by ``onnxruntime.transformers.optimizer`` for a model type (bert, clip, vit, swin, bart, t5, unet, vae,
...) on top of ONNX Runtime's own offline optimisation, written as a new fp32 graph that is checked against the
source on recorded calls before it is kept.

What it does to mmedge's graphs, measured (ORT 1.32, torch.onnx dynamo exports): LayerNormalization,
SkipLayerNormalization, SkipSimplifiedLayerNormalization (RMSNorm), BiasGelu, FastGelu, QuickGelu and Gelu fusions;
no Attention fusion (the optimizer's attention patterns are those of the TorchScript exporter). ONNX Runtime
applies most of these fusions itself when a session opens, so on a CPU the optimised variants ran at 1.00x
(Whisper tiny.en, 330 vs 331 ms a clip) and 1.05x (EfficientNet-Lite0) the speed of the exported graphs
(bench/README.md): the variant is offered, recorded and benchmarked, and the device plans do not prefer it.

The fallback is explicit: the optimizer's fusions for a model type can fail on a graph they were not written for
(``gpt2``'s Gemm post-processing raises IndexError on the dynamo-exported GPT-2 decoder) or give a graph that does
not run or does not match; then ONNX Runtime's own optimisation alone (``only_onnxruntime``) is tried, and the
record says which was used and why the other was dropped (``tried``).

Fusions that only CUDA kernels implement (NhwcConv, GroupNorm, SkipGroupNorm, BiasSplitGelu, BiasAdd, packed
QKV/KV) are switched off: the variant targets ONNX Runtime's CPU execution provider, whose contrib ops the CUDA
provider implements too. ``opt_level`` 1 (ORT's basic level, the default) keeps the graph free of
provider-specific nodes; 2 and 99 (extended, layout) may add CPU-only ones (ORT warns that such a file belongs to
the machine it was optimised on): the record's ``portable`` says which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmedge.quantize.backends import onnx_graph

#: FusionOptions switches of fusions whose ops only ONNX Runtime's CUDA provider implements.
GPU_ONLY = ("nhwc_conv", "group_norm", "skip_group_norm", "bias_splitgelu", "bias_add", "packed_qkv", "packed_kv")
#: Relative L2 error over the recorded calls above which an optimised graph is not the same function.
TOLERANCE = 1e-3


def fusion_names() -> tuple[str, ...]:
    """The fusions ``disable`` may name (FusionOptions' ``enable_<name>`` switches)."""
    from onnxruntime.transformers.fusion_options import FusionOptions

    return tuple(sorted(k.removeprefix("enable_") for k in vars(FusionOptions("bert")) if k.startswith("enable_")))


def model_types() -> tuple[str, ...]:
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    return tuple(MODEL_TYPES)


def _fusion_options(model_type: str, disable: tuple[str, ...]):
    from onnxruntime.transformers.fusion_options import FusionOptions

    fusion = FusionOptions(model_type)
    for name in (*GPU_ONLY, *disable):
        setattr(fusion, f"enable_{name}", False)
    return fusion


def _outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """``path`` loaded on ONNX Runtime CPU and run on each feed (loading alone checks a graph without feeds)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def _mismatch(dst: Path, feeds: list[dict[str, np.ndarray]], reference: list[list[np.ndarray]]) -> float | None:
    """The worst relative L2 error of ``dst``'s float outputs vs the source's ``reference`` outputs over ``feeds``
    (None without feeds: then ``dst`` is only loaded)."""
    worst = 0.0
    for want, got in zip(reference, _outputs(dst, feeds)):
        for w, g in zip(want, got):
            if w.dtype.kind != "f":
                continue
            w64, g64 = np.asarray(w, np.float64), np.asarray(g, np.float64)
            if not np.isfinite(g64).all() and np.isfinite(w64).all():
                return float("inf")
            worst = max(worst, float(np.linalg.norm(g64 - w64) / max(np.linalg.norm(w64), 1e-12)))
    return worst if feeds else None


def _write(src: Path, dst: Path, model_type: str | None, opts: dict) -> dict:
    """One optimisation of ``src`` into ``dst``: the optimizer's fusions for ``model_type``, or ONNX Runtime's own
    passes alone when it is None. Returns ``fusion_op_counts`` (the optimizer's statistics: how many nodes of
    each fused op type the written graph holds; ONNX's own LayerNormalization counts too where the exporter wrote
    it, so compare with the source to see what was fused) and the files written."""
    from onnxruntime.transformers.optimizer import optimize_model

    if model_type is None:
        model = optimize_model(str(src), model_type="bert", opt_level=max(opts["opt_level"], 1),
                               only_onnxruntime=True)
    else:
        model = optimize_model(str(src), model_type=model_type, opt_level=opts["opt_level"],
                               optimization_options=_fusion_options(model_type, opts["disable"]))
    fused = {op: n for op, n in sorted(model.get_fused_operator_statistics().items()) if n}
    return {"fusion_op_counts": fused, "files": onnx_graph.save(model.model, dst)}


def optimize(src: Path, dst: Path, opts: dict, feeds: list[dict[str, np.ndarray]] | None) -> dict:
    """Write the optimised form of ``src`` to ``dst``: the model type's fusions, else ONNX Runtime's own passes
    (see the module docstring); each attempt must load, run ``feeds`` and match ``src`` within ``TOLERANCE``.
    Returns the record part; raises RuntimeError with every attempt's reason when none holds."""
    import onnxruntime

    feeds = feeds or []
    reference = _outputs(src, feeds)  # once, for every attempt
    tried: list[dict] = []
    for model_type in dict.fromkeys([opts["model_type"], None]):
        try:
            part = _write(src, dst, model_type, opts)
            error = _mismatch(dst, feeds, reference)
            if error is not None and not error <= TOLERANCE:
                raise ValueError(f"outputs differ from the source graph (relative error {error:.2e} > {TOLERANCE})")
        except Exception as e:  # noqa: BLE001 - the fusion scripts raise IndexError, KeyError, ORT errors alike
            for name in onnx_graph.written(dst):
                dst.with_name(name).unlink(missing_ok=True)
            tried.append({"model_type": model_type, "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        tried.append({"model_type": model_type, "relative_error": error})
        level = max(opts["opt_level"], 1) if model_type is None else opts["opt_level"]
        return {"method": "onnxruntime.transformers optimize_model" + (" (only_onnxruntime)" if model_type is None
                                                                         else f" model_type={model_type}"),
                "model_type": model_type, "opt_level": level, "portable": level <= 1,
                "runs_on": "ONNX Runtime CPU and CUDA" if level <= 1 else "ONNX Runtime on the CPU it was made on",
                "disabled_fusions": [] if model_type is None else [*GPU_ONLY, *opts["disable"]],
                "weights": "fp32", "activations": "fp32",
                "fallback": tried[0]["error"] if len(tried) > 1 else None, "tried": tried,
                "onnxruntime": onnxruntime.__version__, **part}
    reasons = "; ".join(f"{t['model_type'] or 'onnxruntime only'}: {t['error']}" for t in tried)
    raise RuntimeError(f"no optimisation of {src.name} holds ({reasons})")
