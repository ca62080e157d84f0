"""Weight-only int4 for one ONNX graph: block-wise symmetric int4 weights in ``MatMulNBits`` nodes (ONNX Runtime's
contrib op, which its CPU kernels run without unpacking the weights), activations stay float.

Two tools, measured on the exported tiny decoders (block 32, weights counted without the graph, cosine of the
logits against fp32 over prefill and decode feeds):

- ``onnxruntime`` (default): ``MatMulNBitsQuantizer``. It skips ``Gemm`` (GPT-2's Conv1D and the exporter's tied
  LM head are Gemms), so the graph first goes through ORT's own Gemm -> MatMul(+Add) rewrite, the one its dynamic
  int8 quantizer applies; embedding tables become int4 ``GatherBlockQuantized``. GPT-2: 0.159x, cosine 0.991;
  Llama: 0.158x, cosine 0.989. A table tied to the LM head (GPT-2's) is stored once, the lookup reading the
  head's MatMulNBits weight (``onnx_embeddings``; 0.205x with ORT's two copies).
- ``nncf``: ``nncf.compress_weights(INT4_SYM)`` with ``ratio`` (the rest, and always the embeddings and the
  last layer, int8 per channel). GPT-2: 0.212x, cosine 0.999; Llama: 0.233x, cosine 0.998. Conv layers are kept
  out (NNCF's int8 backup for Conv writes a per-axis scale ORT rejects) and INT4_ASYM is not offered (ORT rejects
  NNCF's asymmetric ONNX files; design.md).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from mmedge.quantize.backends import onnx_graph


def with_onnxruntime(model, dst: Path, opts: dict, exclude: list[str]) -> dict:
    """``model`` (loaded, weights in memory) with int4 MatMulNBits/GatherBlockQuantized written to ``dst``;
    ``exclude`` in the quantizer's own names (see ``onnx_graph.tool_names``)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from onnxruntime.quantization.onnx_model import ONNXModel

    wrapped = ONNXModel(model)
    wrapped.replace_gemm_with_matmul()
    ops = ("MatMul", "Gather") if opts["embeddings"] else ("MatMul",)
    quantizer = MatMulNBitsQuantizer(wrapped.model, bits=4, block_size=opts["block_size"], is_symmetric=True,
                                     accuracy_level=opts["accuracy_level"], nodes_to_exclude=exclude,
                                     op_types_to_quantize=ops, quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer.process()
    embeddings = "embedding tables int4 (GatherBlockQuantized), " if opts["embeddings"] else ""
    return {"method": "onnxruntime MatMulNBitsQuantizer (Gemm rewritten to MatMul first)",
            "weights": f"int4 symmetric, blocks of {opts['block_size']}; {embeddings}other weights float",
            "activations": "float (weight-only)", "accuracy_level": opts["accuracy_level"],
            "files": onnx_graph.save(quantizer.model.model, dst)}


def with_nncf(model, dst: Path, opts: dict, exclude: list[str]) -> dict:
    """``model`` compressed by NNCF (INT4_SYM, ``ratio`` of the weights int4, the rest int8) written to ``dst``."""
    import nncf

    with contextlib.redirect_stdout(io.StringIO()):  # NNCF prints a statistics table and a progress bar
        result = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=opts["block_size"],
                                       ratio=opts["ratio"],
                                       ignored_scope=nncf.IgnoredScope(names=exclude, types=["Conv"], validate=False))
    return {"method": "nncf compress_weights INT4_SYM",
            "weights": (f"int4 symmetric, groups of {opts['block_size']}, ratio {opts['ratio']}; the rest, "
                        "embeddings and last layer int8 asymmetric per channel"),
            "activations": "float (weight-only)", "ratio": opts["ratio"], "files": onnx_graph.save(result, dst)}
