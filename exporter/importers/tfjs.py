"""TF.js layers/graph weights (``*-weights_manifest.json`` + binary shards) → named numpy arrays, and the layout
changes a TensorFlow filter needs to become a PyTorch weight.

Why our own reader: the format is a small JSON index over raw little-endian bytes, and the libraries that read it
(``tensorflowjs``) pull in all of TensorFlow. The manifest is a list of weight groups; each group's ``paths`` are
concatenated and hold its ``weights`` one after the other, in order. A weight may be stored quantized
(``quantization.dtype``): ``uint8``/``uint16`` values are affine (``q * scale + min``), ``float16`` values are
half floats; everything comes back as the weight's declared ``dtype`` (float32 or int32).

Layouts (TensorFlow → PyTorch): conv filters are HWIO → OIHW; depthwise filters ``[h, w, C, multiplier]`` →
``[C * multiplier, 1, h, w]`` (``groups=C``); dense kernels ``[in, out]`` → ``[out, in]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmedge.errors import ExportError

_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("u1")}
_QUANTIZED = {"uint8": np.dtype("u1"), "uint16": np.dtype("<u2"), "float16": np.dtype("<f2")}


def read_weights(manifest_path: str | Path) -> dict[str, np.ndarray]:
    """Every weight of a TF.js weights manifest, dequantized, by name (shards are read next to the manifest)."""
    manifest_path = Path(manifest_path)
    try:
        groups = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read the TF.js weights manifest {manifest_path}: {e}") from None
    if not isinstance(groups, list):  # a model.json holds the manifest under "weightsManifest"
        groups = groups.get("weightsManifest") if isinstance(groups, dict) else None
        if not isinstance(groups, list):
            raise ExportError(f"{manifest_path} is not a TF.js weights manifest (no list of weight groups)")
    weights: dict[str, np.ndarray] = {}
    for group in groups:
        data = b"".join(_read_shard(manifest_path.parent / p) for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            array, offset = _decode(entry, data, offset, manifest_path)
            weights[entry["name"]] = array
        if offset != len(data):
            raise ExportError(f"{manifest_path}: shards {group['paths']} hold {len(data)} bytes but the manifest "
                              f"describes {offset}; the files belong to different versions")
    return weights


def _read_shard(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ExportError(f"cannot read the TF.js weight shard {path}: {e.strerror}; keep the .bin files next to "
                          "the manifest") from None


def _decode(entry: dict, data: bytes, offset: int, where: Path) -> tuple[np.ndarray, int]:
    name, shape = entry["name"], tuple(int(d) for d in entry["shape"])
    dtype = _DTYPES.get(entry.get("dtype", "float32"))
    if dtype is None:
        raise ExportError(f"{where}: weight {name} has dtype {entry.get('dtype')!r}; only float32/int32/bool are read")
    quant = entry.get("quantization")
    stored = _QUANTIZED.get(quant["dtype"]) if quant else dtype
    if stored is None:
        raise ExportError(f"{where}: weight {name} is quantized as {quant['dtype']!r}; "
                          "supported: uint8, uint16, float16")
    count = int(np.prod(shape, dtype=np.int64))
    end = offset + count * stored.itemsize
    if end > len(data):
        raise ExportError(f"{where}: the shards end inside weight {name} (need {end} bytes, have {len(data)}); "
                          "a .bin file is truncated")
    raw = np.frombuffer(data, stored, count, offset)
    if quant and quant["dtype"] != "float16":
        values = raw.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
    else:
        values = raw
    return values.astype(dtype).reshape(shape), end


def conv_weight(hwio: np.ndarray) -> np.ndarray:
    """A ``tf.conv2d`` filter [h, w, in, out] as a ``torch.nn.Conv2d`` weight [out, in, h, w]."""
    _expect_rank(hwio, 4, "conv filter")
    return np.ascontiguousarray(hwio.transpose(3, 2, 0, 1))


def depthwise_weight(hwcm: np.ndarray) -> np.ndarray:
    """A ``tf.depthwiseConv2d`` filter [h, w, C, multiplier] as a grouped ``Conv2d`` weight [C*multiplier, 1, h, w]
    (output channel ``c * multiplier + m`` reads input channel ``c``, as TensorFlow orders them)."""
    _expect_rank(hwcm, 4, "depthwise filter")
    h, w, c, m = hwcm.shape
    return np.ascontiguousarray(hwcm.reshape(h, w, c * m).transpose(2, 0, 1)[:, None])


def dense_weight(io: np.ndarray) -> np.ndarray:
    """A dense kernel [in, out] (``tf.matMul(x, W)``) as a ``torch.nn.Linear`` weight [out, in]."""
    _expect_rank(io, 2, "dense kernel")
    return np.ascontiguousarray(io.T)


def _expect_rank(array: np.ndarray, rank: int, what: str) -> None:
    if array.ndim != rank:
        raise ExportError(f"a TF.js {what} must have {rank} dimensions, got shape {list(array.shape)}")
