"""Super-resolution (``image-to-image``): one ``upscaler`` component, ``pixel_values`` [batch, 3, height, width] in
[0, 1] → ``reconstruction`` [batch, 3, height * scale, width * scale] (not clamped), for Swin2SR
(``Swin2SRForImageSuperResolution`` + ``Swin2SRImageProcessor``) and Real-ESRGAN's SRVGGNetCompact (folders written
by ``importers.ncnn`` from the real NCNN weights).

Shapes. Dynamic graphs take any height and width (Swin2SR: multiples of its attention window, which the runtime's
processor padding guarantees; transformers' own Swin2SR fails on other sizes) and are checked at two shapes that
differ in both (the dynamo exporter once specialised Swin2SR's height/width; the TorchScript exporter used here
keeps them, and the second check proves it). Static graphs take one ``STATIC_TILE`` x ``STATIC_TILE`` tile; the
runtime covers any image with overlapping tiles (``runtime.preprocess.tiling``).

Manifest: ``preprocessing.image`` = the processor's padding (``pad_multiple``; ``pad_always``: HF's Swin2SR pads a
full multiple even to sizes that already are one); ``postprocessing`` = ``scale`` and ``tile`` (``align``: tile
windows start at multiples of the attention window so they partition as the whole image does; ``overlap``: the
receptive field in input pixels for CNNs, so tiles equal the whole image, and for Swin2SR an estimate capped at a
quarter of the static tile, so tiled Swin2SR output is close to, not equal to, the whole-image output).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmedge.errors import ExportError
from mmedge.exporter.families import srvgg_compact
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl

STATIC_TILE = 64  # input pixels per side of a static tile (256x256 output at x4)


class Upscaler(torch.nn.Module):
    """``pixel_values`` → ``{"reconstruction": ...}``, for a transformers model (``.reconstruction``) or a plain
    module."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(pixel_values)
        return {"reconstruction": getattr(out, "reconstruction", out)}


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _load_swin2sr(model_dir: Path) -> tuple[torch.nn.Module, int, dict[str, Any], int, int]:
    """(model, scale, image preprocessing, tile alignment, overlap) of a Swin2SR folder."""
    from transformers import Swin2SRForImageSuperResolution, Swin2SRImageProcessor

    try:
        model = Swin2SRForImageSuperResolution.from_pretrained(model_dir).eval()
        processor = Swin2SRImageProcessor.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot load a Swin2SR model and image processor from {model_dir}: "
                          f"{str(e).splitlines()[0][:300]}") from None
    config, window = model.config, int(model.config.window_size)
    if config.num_channels != 3 or config.num_channels_out != 3:
        raise ExportError(f"{model_dir}: only RGB Swin2SR models are supported (num_channels {config.num_channels})")
    if not processor.do_rescale or abs(processor.rescale_factor - 1 / 255) > 1e-12:
        raise ExportError(f"{model_dir}: the processor must rescale 0..255 to 0..1 (rescale_factor 1/255)")
    multiple = int(processor.size_divisor) if processor.do_pad else window
    if multiple % window:
        raise ExportError(f"{model_dir}: the processor pads to multiples of {multiple}, which are not multiples of "
                          f"the attention window {window} that Swin2SR needs")
    # Receptive field in input pixels: up to window - 1 per attention layer, one per 3x3 conv (first conv, one or
    # three per stage, conv after the body, three in the upsampler), capped so a static tile keeps half its width.
    convs = 1 + len(config.depths) * (3 if config.resi_connection == "3conv" else 1) + 1 + 3
    radius = sum(config.depths) * (window - 1) + convs
    overlap = min(_round_up(radius, window), (_round_up(STATIC_TILE, window) // 4) // window * window)
    image = {"pad_multiple": multiple, "pad_always": bool(processor.do_pad)}
    return model, int(config.upscale), image, window, overlap


class SuperResolutionSpec(FamilySpec):
    name = "super-resolution"
    task = "image-to-image"
    model_types = ("swin2sr", srvgg_compact.MODEL_TYPE)

    def load(self, model_dir: Path) -> LoadedFamily:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") == srvgg_compact.MODEL_TYPE:
            srvgg = srvgg_compact.load_srvgg(model_dir)
            model, scale, align, overlap = srvgg, srvgg.config.upscale, 1, srvgg.config.receptive_radius
            image = {"pad_multiple": 1, "pad_always": False}  # a CNN takes any size as it is
            first, second, what = (24, 32), (37, 29), f"SRVGGNetCompact x{scale} ({srvgg.config.num_conv} convs)"
        else:
            model, scale, image, align, overlap = _load_swin2sr(model_dir)
            first, second, what = (5 * align, 6 * align), (7 * align, 4 * align), f"Swin2SR x{scale}"
        tile = _round_up(STATIC_TILE, align)

        def shapes(batch: int, height: int, width: int) -> dict[str, int]:
            return {"batch": batch, "height": height, "width": width, "out_height": height * scale,
                    "out_width": width * scale}

        def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(seed)
            return {"pixel_values": torch.rand(sizes["batch"], 3, sizes["height"], sizes["width"], generator=g)}

        upscaler = ComponentSpec(
            name="upscaler", description=f"{what}: pixel_values in [0, 1] -> reconstruction (x{scale})",
            module=Upscaler(model).eval(),
            inputs=(TensorDecl("pixel_values", "float32", ("batch", 3, "height", "width")),),
            outputs=(TensorDecl("reconstruction", "float32", ("batch", 3, "out_height", "out_width")),),
            sample=sample, export_sizes=shapes(1, *first), second_sizes=shapes(2, *second),
            static_signatures={"default": shapes(1, tile, tile)})
        return LoadedFamily(family=self.name, task=self.task, components=[upscaler],
                            preprocessing={"image": image},
                            postprocessing={"scale": scale, "tile": {"align": align, "overlap": overlap}})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.super_resolution_tiny import write_tiny_swin2sr

        return write_tiny_swin2sr(out_dir)
