"""The ONNX backend: quantize one ONNX graph file by a ``Scheme`` (contract in ``quantize.scheme``), list the
nodes a mode would quantize, and measure how much error each quantized node adds (``layer_errors``).

Modes and their ``Scheme.options`` (defaults in ``onnx_options.DEFAULTS``; any other option is refused):

- ``dynamic-int8`` (onnxruntime ``quantize_dynamic``): ``per_channel`` (True: per-tensor weights moved real
  Whisper's transcript), ``weight_type`` int8|uint8, ``op_types`` (MatMul/Attention/LSTM/Gather; a Gemm with
  constant weights is rewritten to MatMul and comes along; Gather quantizes embedding tables: without it the tiny
  Llama decoder stays at 0.49x of its fp32 weights instead of 0.28x, and Whisper tiny.en's decoder, whose tied
  table then stays fp32 beside the head's int8 copy, at 0.96x instead of 0.26x), ``conv`` (False; True adds
  Conv as ConvInteger: smaller but slower on CPU, ORT's ConvInteger kernels being slower than its float Conv:
  Whisper tiny.en's encoder 0.34x -> 0.30x of fp32 and 268 -> 338 ms per 30 s window on one core),
  ``matmul_const_b_only``, ``reduce_range``, ``pre_process``, ``extra_options`` (passed to ORT as is).
- ``static-int8`` (onnxruntime ``quantize_static``, QDQ, needs ``calibration``): ``preset`` S8S8|U8S8 (activation
  + weight types; ``activation_type`` uint8|int8|uint16|int16 and ``weight_type`` int8|uint8 override it; 16-bit
  activations make ORT upgrade the graph to opset 21), ``calibrate_method`` minmax|entropy|percentile,
  ``percentile``, ``per_channel``, ``op_types`` (Conv/MatMul/Gemm), ``matmul_const_b_only``, ``reduce_range``,
  ``pre_process`` (ORT's ``quant_pre_process`` on a copy), ``extra_options``; ``tool`` onnxruntime|nncf: with
  nncf, NNCF's ``nncf.quantize`` writes the QDQ graph instead (``onnx_nncf``: bias correction, measured far better
  on EfficientNet-Lite0), taking ``fast_bias_correction`` (False) and ``model_type`` (None|transformer).
- ``fp16`` (onnxruntime.transformers ``convert_float_to_float16``, inputs and outputs kept fp32):
  ``op_block_list`` (op types kept in fp32 besides ORT's own list).
- ``int4`` (weight-only, symmetric; see ``onnx_int4``): ``tool`` onnxruntime|nncf, ``block_size`` (32),
  ``embeddings`` (int4 embedding tables, onnxruntime), ``accuracy_level`` (MatMulNBits compute precision,
  onnxruntime), ``ratio`` (share of int4 weights, the rest int8; nncf).
- ``optimized`` (fp32, nothing quantized: ONNX Runtime's graph optimisation with the operator fusions of
  ``onnxruntime.transformers.optimizer`` for a model type; see ``onnx_fusion``): ``model_type`` (one of the
  optimizer's types; None: ONNX Runtime's own passes only; ``quantize.plan`` picks one per family and component),
  ``opt_level`` 0|1|2|99 (1: ORT's basic level, portable), ``disable`` (fusions to leave out, e.g. attention).
  It takes no ``exclude``; the written graph is checked against ``src`` on the recorded feeds.

``exclude`` names nodes as ``layers`` lists them (node names of ``src``); they stay float.

Embedding tables (``onnx_embeddings``): a table tied to the LM head (GPT-2, Whisper, Llama with
``tie_word_embeddings``) is stored once, quantized as the head's weight, in dynamic int8 and int4 (ORT's tools
alone store it twice: Whisper tiny.en's decoder 0.44x -> 0.26x of fp32 in dynamic int8, 0.27x -> 0.17x in int4,
the same step time and WER); a lookup of a dequantized table (static int8's tied table, NNCF's int8 embeddings)
gathers the integer rows first instead of dequantizing the whole table on every run. The record says which
(``shared_embeddings``, ``shared_embeddings_bytes_saved``, ``row_dequantized_lookups``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from mmedge.errors import ExportError, InputError, UsageError
from mmedge.quantize.backends import onnx_embeddings, onnx_graph
from mmedge.quantize.backends.onnx_options import DEFAULTS, options
from mmedge.quantize.backends.onnx_sensitivity import layer_errors
from mmedge.quantize.scheme import Scheme

__all__ = ["DEFAULTS", "options", "quantize_graph", "layers", "layer_errors"]

#: What to try when a tool fails, per mode (the error names the file and the tool's message).
HINTS = {"dynamic-int8": "try per_channel=False, exclude the node named in the message, or quantize the unmerged "
                         "decoder files",
         "static-int8": "try the other tool (tool='onnxruntime' or tool='nncf'), pre_process=False, "
                        "calibrate_method='minmax', 8-bit activations, or exclude the node named in the message",
         "fp16": "add the op type named in the message to op_block_list, or exclude the node",
         "int4": "try the other tool (tool='nncf' or tool='onnxruntime'), or exclude the node named in the message",
         "optimized": "try another model_type (or model_type=None: ONNX Runtime's passes only), opt_level=1, or "
                      "disable the fusion named in the message"}


def layers(src: str | Path, scheme: Scheme) -> list[str]:
    """Names of the nodes of ``src`` that ``scheme`` would quantize: the candidates of the sensitivity pass and
    the names ``quantize_graph``'s ``exclude`` accepts."""
    import onnx

    opts = options(scheme)
    if scheme.mode == "optimized":  # nothing is quantized, so there is nothing to keep in float
        _existing(src)
        return []
    return onnx_graph.candidates(onnx.load(str(_existing(src)), load_external_data=False), scheme.mode, opts)


def _existing(src: str | Path) -> Path:
    src = Path(src)
    if not src.is_file():
        raise UsageError(f"no ONNX graph at {src}; give the fp32 .onnx file of an artifact signature")
    return src


def _check_feeds(model, calibration) -> None:
    if not calibration:
        raise UsageError("static-int8 needs calibration feeds (a list of {graph input name: array}); record them "
                         "by running the fp32 pipeline on real samples (quantize.calibration)")
    inits = {i.name for i in model.graph.initializer}
    names = {i.name for i in model.graph.input} - inits
    for k, feed in enumerate(calibration):
        keys = set(feed) if isinstance(feed, dict) else set()
        if keys != names or not all(isinstance(v, np.ndarray) for v in feed.values()):
            raise InputError(f"calibration feed {k} must map exactly the graph inputs {sorted(names)} to numpy "
                             f"arrays; it has {sorted(map(str, keys)) if keys else type(feed).__name__}")


@contextlib.contextmanager
def _quiet():
    """ORT's quantizers log warnings on the root logger and print calibration progress: keep them off the
    console (what matters goes into the record). Their own logger is quietened too: importing
    ``matmul_nbits_quantizer`` calls ``logging.basicConfig(level=INFO)``, which resets the root level."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _fp16(model, dst: Path, opts: dict, exclude: list[str]) -> dict:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    large = onnx_graph.weight_bytes(model) > onnx_graph.EXTERNAL_ABOVE  # onnx shape inference stops at 2 GB
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(opts["op_block_list"]),
                                         node_block_list=exclude, disable_shape_infer=large)
    return {"method": "onnxruntime.transformers convert_float_to_float16", "weights": "fp16",
            "activations": "fp16 (inputs and outputs fp32)", "op_block_list": list(opts["op_block_list"]),
            "files": onnx_graph.save(converted, dst)}


def _tool(mode: str, opts: dict) -> str:
    if mode in ("int4", "static-int8") and opts["tool"] == "nncf":
        import nncf

        return f"nncf {nncf.__version__}"
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def _apply(src: Path, model, dst: Path, mode: str, opts: dict, candidates: list[str], exclude: list[str],
           calibration) -> dict:
    """Run the mode's tool on ``model`` (the graph's structure, weights not loaded yet); returns its part of the
    record."""
    import onnx

    from mmedge.quantize.backends import onnx_int4, onnx_int8, onnx_nncf

    names = onnx_graph.tool_names(model, exclude, mode)
    large = onnx_graph.weight_bytes(model) > onnx_graph.EXTERNAL_ABOVE
    if mode in ("fp16", "int4"):  # these tools take the model in memory
        onnx.load_external_data_for_model(model, str(src.parent))
    if mode == "fp16":
        return {**_fp16(model, dst, opts, exclude), "pre_process": False}
    if mode == "int4":
        quantize = onnx_int4.with_nncf if opts["tool"] == "nncf" else onnx_int4.with_onnxruntime
        return {**quantize(model, dst, opts, names), "pre_process": False}
    with tempfile.TemporaryDirectory(prefix="mmedge-onnx-") as tmp:  # the int8 quantizers take files
        work, steps = onnx_int8.working_copy(src, Path(tmp), opts["pre_process"], candidates)
        if mode == "dynamic-int8":
            part = onnx_int8.dynamic(work, dst, opts, names, large)
        elif opts["tool"] == "nncf":
            part = onnx_nncf.static(work, dst, opts, names, calibration)
        else:
            part = onnx_int8.static(work, dst, opts, names, large, calibration)
    return {**part, "pre_process": steps != "none", "pre_process_steps": steps}


def _embeddings(dst: Path, files: list[str], ties: list[onnx_embeddings.Tie], rebuilt: list[onnx_embeddings.Tie],
                stop: set[str]) -> dict:
    """Tied tables stored once and lookups of dequantized tables made row-wise (``onnx_embeddings``) in the
    written graph ``dst`` (rewritten in place when either applies): ``rebuilt`` are the ``ties`` whose lookups
    the tool left float. Returns the record part: ``shared_embeddings`` (the tied tables the graph now stores
    once: rebuilt here, or quantized once by the tool with a lookup made row-wise), the bytes the rebuilt ones
    saved, and ``row_dequantized_lookups`` (the Gathers that now dequantize only their rows)."""
    import onnx

    model = onnx.load(str(dst), load_external_data=False)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    part = {"shared_embeddings": [], "shared_embeddings_bytes_saved": 0, "row_dequantized_lookups": []}
    if not rebuilt and not any(n.op_type == "Gather" and producers.get(n.input[0]) == "DequantizeLinear"
                               for n in model.graph.node):
        return part
    onnx.load_external_data_for_model(model, str(dst.parent))
    shared, saved = onnx_embeddings.share(model, rebuilt, stop)
    rows = onnx_embeddings.gather_rows(model)
    shared += [t.table for t in ties if t.gather in rows]
    part.update(shared_embeddings=shared, shared_embeddings_bytes_saved=saved, row_dequantized_lookups=rows)
    for name in files:
        dst.with_name(name).unlink()
    return {**part, "files": onnx_graph.save(model, dst)}


def _quantized_count(qmodel, mode: str, outputs: dict[str, str], stop: set[str], exclude: list[str]) -> int:
    """How many candidates (``outputs``: their output tensors, ``stop``: the fp32 graph's activations) the
    written graph ``qmodel`` really quantized (fp16: converted, which ORT does for every node not blocked)."""
    if mode == "fp16":
        return len(set(outputs) - set(exclude))
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    found = [onnx_graph.local(qmodel, output, stop, producers) for output in outputs.values()]
    return sum(1 for loc in found if loc is not None and loc.quantized)


def _check_runs(dst: Path, mode: str, feed: dict | None) -> None:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
        if feed is not None:
            session.run(None, feed)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for load and run failures
        raise ExportError(f"the {mode} graph {dst.name} does not run on ONNX Runtime CPU ({e}); {HINTS[mode]}") from e


def _optimized(src: Path, model, dst: Path, opts: dict, feeds, exclude: Sequence[str]) -> dict:
    """The ``optimized`` mode (``onnx_fusion``): an fp32 graph, so the record's quantized counts are zero."""
    from mmedge.quantize.backends import onnx_fusion

    if exclude:
        raise UsageError("optimized quantizes nothing, so it has no layers to exclude; drop exclude")
    try:
        with _quiet():
            part = onnx_fusion.optimize(src, dst, opts, feeds)
    except Exception as e:  # noqa: BLE001 - the fusion scripts and ORT raise many types; the message has each try
        raise ExportError(f"{_tool('optimized', opts)} could not optimise {src.name} ({e}); "
                          f"{HINTS['optimized']}") from e
    import onnx

    written = onnx_graph.weight_bytes(onnx.load(str(dst), load_external_data=False))
    return {"tool": _tool("optimized", opts), "mode": "optimized", **part, "excluded": [], "quantized_nodes": 0,
            "candidates": 0, "weight_bytes": {"fp32": onnx_graph.weight_bytes(model), "optimized": written}}


def quantize_graph(src: str | Path, dst: str | Path, scheme: Scheme, *,
                   calibration: list[dict[str, np.ndarray]] | None = None, exclude: Sequence[str] = ()) -> dict:
    """Write the ``scheme`` form of the ONNX graph ``src`` (external weights read from its folder, which is left
    untouched) to ``dst`` and return the record: tool, mode, method, weight/activation types, excluded nodes,
    ``quantized_nodes`` (counted in the written graph), ``candidates``, ``pre_process``, ``files`` (written
    beside ``dst``: the graph and, above 1 GiB of weights, its ``.data``), ``weight_bytes`` of both graphs, and
    (all modes but fp16) what became of the embedding tables: ``shared_embeddings``,
    ``shared_embeddings_bytes_saved``, ``row_dequantized_lookups`` (see ``onnx_embeddings``). The written graph
    is loaded (and run on the first calibration feed, if any) on ONNX Runtime CPU."""
    import onnx

    src, dst = _existing(src), Path(dst)
    mode, opts = scheme.mode, options(scheme)
    try:
        model = onnx.load(str(src), load_external_data=False)  # the weights only where a tool needs them
    except Exception as e:  # noqa: BLE001 - onnx raises protobuf and file errors alike
        raise ExportError(f"cannot read the ONNX graph {src} ({e}); re-export the package") from e
    if mode == "optimized":
        return _optimized(src, model, dst, opts, calibration, exclude)
    merged = onnx_graph.subgraph_weights(model)
    if merged:
        raise ExportError(f"{src.name} keeps weights inside If/Loop subgraphs ({', '.join(merged[:3])}: a merged "
                          "decoder); the quantizers here would leave them float: quantize the unmerged decoders")
    candidates = onnx_graph.candidates(model, mode, opts)
    unknown = [name for name in exclude if name not in candidates]
    if unknown:
        raise UsageError(f"exclude names nodes {mode} would not quantize in {src.name}: {', '.join(unknown[:5])}; "
                         f"layers() lists the candidates (e.g. {', '.join(candidates[:3])})")
    if scheme.calibrated:
        _check_feeds(model, calibration)
    # facts of the fp32 graph, taken now: the tools change the loaded model in place
    fp32_bytes, stop = onnx_graph.weight_bytes(model), onnx_graph.activations(model)
    outputs = {n.name: n.output[0] for n in model.graph.node if n.name in set(candidates)}
    # a tied table's lookup is left float by the tool and rebuilt on the head's quantized weight afterwards
    ties = onnx_embeddings.ties(model) if mode != "fp16" else []
    quantized_names = set(candidates) - set(exclude)
    rebuilt = [t for t in ties if {t.gather, t.head} <= quantized_names]
    try:
        with _quiet():
            part = _apply(src, model, dst, mode, opts, candidates, [*exclude, *(t.gather for t in rebuilt)],
                          calibration)
        if mode != "fp16":
            part.update(_embeddings(dst, part["files"], ties, rebuilt, stop))
    except Exception as e:  # noqa: BLE001 - the tools raise ValueError, RuntimeError, onnx and ORT errors alike
        raise ExportError(f"{_tool(mode, opts)} could not apply {mode} to {src.name} ({type(e).__name__}: {e}); "
                          f"{HINTS[mode]}") from e
    try:
        _check_runs(dst, mode, calibration[0] if calibration else None)
        qmodel = onnx.load(str(dst), load_external_data=False)  # the structure; sizes come from the protos' dims
        quantized = _quantized_count(qmodel, mode, outputs, stop, list(exclude))
        if quantized == 0:
            raise ExportError(f"{mode} quantized none of the {len(candidates)} candidate nodes of {src.name}; "
                              f"{HINTS[mode]}")
    except ExportError:
        for name in part["files"]:  # no half-good graph left behind
            dst.with_name(name).unlink(missing_ok=True)
        raise
    return {"tool": _tool(mode, opts), "mode": mode, **part, "excluded": list(exclude), "quantized_nodes": quantized,
            "candidates": len(candidates), "weight_bytes": {"fp32": fp32_bytes, mode: onnx_graph.weight_bytes(qmodel)}}
