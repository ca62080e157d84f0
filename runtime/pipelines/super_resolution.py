"""Super-resolution (``image-to-image``) on the slim runtime: an image of any size → ``scale`` times larger.

Per image: split into RGB planes in [0, 1] (grayscale, 16-bit and alpha handled, see ``preprocess.planes``) →
pad as the model's processor pads (Swin2SR: ``Swin2SRImageProcessor``'s symmetric padding to a multiple of its
``size_divisor``, always at least one pixel, exactly as transformers) → the ``upscaler`` on the whole padded image
or on overlapping tiles (``preprocess.tiling``) → crop to ``scale`` x the original size → integers as the input had
them (``round(clip(x, 0, 1) * max)``).

Tiles: a static artifact takes exactly its fixed tile (e.g. 64x64 input), so every image is tiled (an image
smaller than the tile is padded up to it, symmetrically). A dynamic artifact runs the whole image at once when it
has at most ``WHOLE_IMAGE_PIXELS`` pixels, else ``DEFAULT_TILE`` tiles, so memory stays bounded on big photos;
``tile=0`` forces the whole image, ``tile=N`` a tile size. The default ``overlap`` comes from the manifest: the
model's receptive field for CNNs (tiled = whole image up to float rounding), capped by the tile for attention models.

Huge images: the output is assembled tile by tile directly as integers (3 bytes per output pixel for 8-bit RGB)
and refused up front, with ``InputError``, above ``max_output_pixels`` (``MAX_OUTPUT_PIXELS`` by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mmedge.errors import InputError, PackageError, StaticShapeError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.preprocess.image import ImageInput, image_size, save_image
from mmedge.runtime.preprocess.planes import to_image, to_pixels, to_planes, with_alpha
from mmedge.runtime.preprocess.tiling import check_tiling, tiles
from mmedge.runtime.runner import ComponentRunner

WHOLE_IMAGE_PIXELS = 512 * 512
DEFAULT_TILE = 256
MAX_OUTPUT_PIXELS = 100_000_000  # 8-bit RGB: 300 MB of output


@dataclass
class UpscaleResult:
    """The upscaled image as integers in the input's form (HxW gray, HxWx2/3/4; uint8, or uint16 for 16-bit
    input) and how it was computed: ``tile`` None means the whole image in one call."""

    pixels: np.ndarray
    scale: int
    input_size: tuple[int, int]  # (width, height)
    tiles: int
    tile: int | None
    overlap: int
    ran: RunInfo

    @property
    def image(self):
        """The result as a PIL image (16-bit colour has none: use ``pixels``)."""
        return to_image(self.pixels)

    def save(self, path: str | Path) -> Path:
        """Write the image; the format follows the suffix (PNG keeps 16-bit grayscale and alpha)."""
        return save_image(self.image, path)

    def to_dict(self) -> dict:
        height, width = self.pixels.shape[:2]
        return {"task": "image-to-image", "scale": self.scale, "input_size": list(self.input_size),
                "output_size": [width, height], "tiles": self.tiles, "tile": self.tile, "overlap": self.overlap,
                "ran": self.ran.to_dict()}


class SuperResolutionPipeline:
    """Runs a ``super-resolution`` package. Build it with ``mmedge.runtime.load(path)``."""

    family = "super-resolution"
    task = "image-to-image"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        m = package.manifest
        try:
            image, post = m.preprocessing["image"], m.postprocessing
            self.scale = int(post["scale"])
            self.align, self.overlap = int(post["tile"]["align"]), int(post["tile"]["overlap"])
            self.pad_multiple, self.pad_always = int(image["pad_multiple"]), bool(image["pad_always"])
            self.upscaler = runners["upscaler"]
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"this super-resolution package lacks {e} in its manifest; re-export it") from None
        self.package, self.ran = package, ran
        #: The static artifact's tile (input pixels per side), or None for a dynamic artifact.
        self.fixed_tile: int | None = self.upscaler.fixed_dim("pixel_values", 2)

    # ----------------------------------------------------------------------------------------------- public

    def upscale(self, image: ImageInput, *, tile: int | None = None, overlap: int | None = None,
                max_output_pixels: int = MAX_OUTPUT_PIXELS) -> UpscaleResult:
        """Upscale one image (path, PIL image, uint8/uint16 array) by the model's ``scale``. Too large an output
        is refused from the file's header, before the input's pixels (12 bytes each as float planes) are read."""
        width, height = image_size(image) or (0, 0)
        if height * width * self.scale ** 2 > max_output_pixels:
            raise InputError(f"a {width}x{height} image upscaled x{self.scale} has "
                             f"{width * height * self.scale ** 2 / 1e6:.3g} megapixels, above the limit of "
                             f"{max_output_pixels / 1e6:.3g} (max_output_pixels); downscale or crop the input, or "
                             "raise max_output_pixels if the memory is there")
        planes = to_planes(image)
        height, width = planes.rgb.shape[:2]
        channels = () if planes.gray else (3,)
        out = np.empty((height * self.scale, width * self.scale, *channels), dtype=planes.dtype)

        def sink(rows: slice, cols: slice, rgb: np.ndarray) -> None:
            out[rows, cols] = to_pixels(rgb, planes)

        used_tile, used_overlap, count = self._run(planes.rgb, tile, overlap, sink)
        return UpscaleResult(with_alpha(out, planes), self.scale, (width, height), count, used_tile, used_overlap,
                             self.ran)

    def reconstruct(self, rgb: np.ndarray, *, tile: int | None = None, overlap: int | None = None) -> np.ndarray:
        """The model's float output (HxWx3, not clamped) for float RGB input in [0, 1] (HxWx3): what ``upscale``
        quantises. For checks against the reference model and for callers who post-process themselves."""
        rgb = np.asarray(rgb, dtype=np.float32)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f"reconstruct takes float RGB HxWx3 in [0, 1], got shape {list(rgb.shape)}")
        out = np.empty((rgb.shape[0] * self.scale, rgb.shape[1] * self.scale, 3), dtype=np.float32)

        def sink(rows: slice, cols: slice, tile_rgb: np.ndarray) -> None:
            out[rows, cols] = tile_rgb

        self._run(rgb, tile, overlap, sink)
        return out

    # ---------------------------------------------------------------------------------------------- helpers

    def _pad(self, rgb: np.ndarray) -> np.ndarray:
        """The processor's padding: symmetric, bottom/right, to a multiple of ``pad_multiple`` (HF's Swin2SR
        processor adds a full multiple even when the size already is one: ``pad_always``)."""
        m, (height, width) = self.pad_multiple, rgb.shape[:2]
        if m <= 1:
            return rgb
        extra_h = (height // m + 1) * m - height if self.pad_always else -height % m
        extra_w = (width // m + 1) * m - width if self.pad_always else -width % m
        return np.pad(rgb, ((0, extra_h), (0, extra_w), (0, 0)), mode="symmetric")

    def _tile_size(self, tile: int | None, overlap: int, height: int, width: int) -> int | None:
        """The tile to use (None: the whole canvas in one call), checked against the artifact."""
        if self.fixed_tile is not None:
            if tile not in (None, self.fixed_tile):
                raise StaticShapeError(f"this {self.ran.format}/{self.ran.variant} artifact takes fixed "
                                       f"{self.fixed_tile}x{self.fixed_tile} tiles, not tile={tile}; leave tile unset "
                                       "or use a dynamic variant (--variant fp32)")
            check_tiling(self.fixed_tile, overlap, self.align)
            return self.fixed_tile
        if tile == 0 or (tile is None and height * width <= WHOLE_IMAGE_PIXELS):
            return None
        size = tile if tile is not None else DEFAULT_TILE - DEFAULT_TILE % self.align
        check_tiling(size, overlap, self.align)
        return size

    def _run(self, rgb: np.ndarray, tile: int | None, overlap: int | None,
             sink: Callable[[slice, slice, np.ndarray], None]) -> tuple[int | None, int, int]:
        """Run the upscaler over ``rgb`` and hand every kept output block to ``sink`` (output rows, columns,
        float HxWx3), cropped to the unpadded image. Returns (tile or None, overlap, number of model calls)."""
        height, width = rgb.shape[:2]
        if not height or not width:
            raise InputError("the image is empty (0 pixels); give an image of at least 1x1 pixels")
        overlap = self.overlap if overlap is None else int(overlap)
        canvas = self._pad(rgb)
        size = self._tile_size(tile, overlap, *canvas.shape[:2])
        if size is not None and (canvas.shape[0] < size or canvas.shape[1] < size):
            grow = ((0, max(size - canvas.shape[0], 0)), (0, max(size - canvas.shape[1], 0)), (0, 0))
            canvas = np.pad(canvas, grow, mode="symmetric")  # smaller than the fixed tile: fill it up
        step = size if size is not None else max(canvas.shape[:2])
        s, count = self.scale, 0
        for row, col in tiles(canvas.shape[0], canvas.shape[1], step, overlap if size else 0):
            window = canvas[row.start:row.start + row.size, col.start:col.start + col.size]
            result = self.upscaler(pixel_values=np.ascontiguousarray(window.transpose(2, 0, 1)[None]))
            block = result["reconstruction"][0].transpose(1, 2, 0)
            count += 1
            top, bottom = row.keep_start, min(row.keep_end, height)
            left, right = col.keep_start, min(col.keep_end, width)
            if top >= bottom or left >= right:  # a core that lies entirely in the padding
                continue
            sink(slice(top * s, bottom * s), slice(left * s, right * s),
                 block[(top - row.start) * s:(bottom - row.start) * s, (left - col.start) * s:(right - col.start) * s])
        return size, overlap if size else 0, count
