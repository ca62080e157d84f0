"""From a wish (``int8``, ``int4``, ``fp16`` or ``auto`` for a device) to concrete schemes per format.

``int8`` means the scheme that serves the family best on each format: convolutional families (image
classification, super-resolution, face expressions) get static int8 with calibration (ORT's dynamic ConvInteger
is slower than float Conv on CPUs; OpenVINO's int8 convolutions need quantized activations; on ONNX through
NNCF, whose bias correction keeps EfficientNet-Lite0 where ORT's own calibrators lose it), transformer
families get ONNX dynamic int8 (no calibration, activations quantized per call) and OpenVINO int8 weight
compression (optimum-intel's default for transformers); TFLite gets ai-edge-quantizer's dynamic-range int8.
``auto`` asks the device profile: the first precision its first route prefers (``devices.planner``), which is
fp32 for a CPU without int8 dot product (a Pi 4) — then nothing is quantized unless asked.
"""

from __future__ import annotations

from mmedge.errors import UsageError
from mmedge.quantize.scheme import MODES, Scheme

CONV_FAMILIES = {"image-classification", "super-resolution", "face-expression"}
WISHES = ("int8", "int4", "fp16", "auto")
#: ONNX ``optimized``: the ``onnxruntime.transformers`` optimizer's model type per family (or per component),
#: "bert" where no other fits. Measured on the exported graphs: ``gpt2``'s fusions crash on the dynamo-exported
#: GPT-2 decoder (IndexError), ``bert``'s give it the same LayerNorm/Gelu fusions and Llama's RMSNorm its
#: SkipSimplifiedLayerNormalization; ``t5`` loses Marian's SkipLayerNormalization where ``bart`` keeps T5's;
#: ``clip`` adds QuickGelu. None: ONNX Runtime's own passes only (convolutional nets and VAEs, whose optimizer
#: fusions are CUDA-only ops).
ORT_MODEL_TYPES: dict[str, str | dict | None] = {
    "clip": "clip", "whisper": "bart", "seq2seq": "bart", "image-classification": "vit",
    "super-resolution": "swin", "face-expression": None,
    "text-to-image": {"text_encoder": "clip", "unet": "unet", "*": None}}


def scheme_for(wish: str, fmt: str, family: str, options: dict | None = None) -> Scheme:
    """The scheme of ``wish`` (int8, int4, fp16, or a mode name of ``fmt``) for ``family`` on ``fmt``."""
    if wish == "optimized" and fmt == "onnx":
        return Scheme(fmt, wish, {"model_type": ORT_MODEL_TYPES.get(family, "bert"), **(options or {})})
    if wish in MODES.get(fmt, {}):
        return Scheme(fmt, wish, dict(options or {}))
    conv = family in CONV_FAMILIES
    if wish == "int8" and fmt == "onnx" and conv:  # NNCF's calibration with bias correction (onnx_nncf: measured)
        options = {"tool": "nncf", **(options or {})}
    if wish == "int4" and fmt == "tflite":  # per-channel int4 broke Whisper tiny.en (WER 5.6 -> 391 %); blocks of 32
        options = {"block_size": 32, **(options or {})}  # on FULLY_CONNECTED/EMBEDDING_LOOKUP: 15.5 % (bench)
    if wish == "int4" and fmt == "openvino":  # embeddings and head int4 too, as ONNX's int4 does (NNCF keeps them
        options = {"all_layers": True, **(options or {})}  # int8 by default: Whisper tiny.en's decoder 0.22x)
    table = {"int8": {"onnx": "static-int8" if conv else "dynamic-int8",
                      "openvino": "static-int8" if conv else "int8-weights", "tflite": "dynamic-int8"},
             "int4": {"onnx": "int4", "openvino": "int4-weights", "tflite": "int4-weights"},
             "fp16": {"onnx": "fp16", "openvino": "fp16", "tflite": "fp16"}}
    if wish not in table:
        modes = "; ".join(f"{f}: {', '.join(m)}" for f, m in MODES.items())
        raise UsageError(f"unknown quantization '{wish}'; choose int8, int4, fp16, auto or a mode ({modes})")
    return Scheme(fmt, table[wish][fmt], dict(options or {}))


def auto_precision(device: str) -> tuple[str | None, str]:
    """(precision to quantize to or None, why) for ``device``'s first route."""
    from mmedge.devices.planner import precision_order
    from mmedge.devices import profile as device_profile

    prof = device_profile(device)
    route = prof.preferred[0]
    first = precision_order(route, prof)[0]
    why = f"{prof.title}: {route.engine} ({route.target}) prefers {first}"
    if first == "int8" and route.target == "cpu":
        why += " (the CPU has int8 dot product)"
    return (None if first == "fp32" else first), why


def parse_options(items: list[str] | None) -> dict:
    """``["per_channel=true", "calibrate_method=entropy", "group_size=64"]`` -> typed dict."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"cannot read option '{item}'; write KEY=VALUE, e.g. per_channel=true")
        value: object = raw.strip()
        low = raw.strip().lower()
        if low in ("true", "false"):
            value = low == "true"
        elif low in ("none", "null"):
            value = None
        else:
            for kind in (int, float):
                try:
                    value = kind(raw)
                    break
                except ValueError:
                    pass
        out[key.strip()] = value
    return out
