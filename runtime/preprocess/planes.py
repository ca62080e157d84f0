"""Images as float colour planes for image-to-image models, and back, keeping what the model does not touch.

Why: an upscaler takes RGB in [0, 1], but users hand in grayscale scans, 16-bit grayscale PNGs and RGBA
graphics, and expect the same kind of image back. ``to_planes`` splits an image into the model's RGB input, the
alpha channel (if any) and a record of the original form; ``to_pixels`` and ``with_alpha`` rebuild that form
from the model's output (tile by tile, so a large output never exists in float):

- grayscale (``L``, ``1``, ``I;16``, ``I``): replicated to RGB for the model; the output goes back to one channel
  with the ITU-R 601 luma weights (Pillow's ``convert("L")``, OpenCV's ``RGB2GRAY``);
- 16-bit (``I;16*``/``I`` images, or uint16 arrays): scaled by 1/65535 and written back as uint16, so no
  precision is lost on the way (Pillow reads 16-bit-per-channel *colour* PNGs as 8-bit RGB: those are upscaled
  at 8 bits; pass a uint16 HxWx3 array to keep 16);
- alpha (``RGBA``, ``LA``, ``P`` with transparency): not given to the model (it was trained on RGB); it is
  upscaled on its own with Pillow's bicubic filter, which keeps edges of masks and anti-aliased cut-outs smooth,
  and put back;
- other modes (``CMYK``, ``YCbCr``...) are converted to RGB and come back as RGB.

Values are rescaled as Hugging Face's processors do (float64 multiply, then float32) and quantised back with
``round(clip(x, 0, 1) * max)``, the conversion of transformers' Swin2SR example and Real-ESRGAN's inference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mmedge.errors import InputError
from mmedge.runtime.preprocess.image import ImageInput, load_image

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class Planes:
    """The model input ``rgb`` (float32 HxWx3 in [0, 1]), the ``alpha`` channel (uint8/uint16 HxW or None), and
    the form to restore: ``gray`` (one channel) and ``max_value`` (255 or 65535)."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    gray: bool
    max_value: int

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.max_value == 65535 else np.uint8)


def _rescale(values: np.ndarray, max_value: int) -> np.ndarray:
    return (values.astype(np.float64) * (1.0 / max_value)).astype(np.float32)


def _from_array(array: np.ndarray) -> Planes:
    if array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"image array has dtype {array.dtype}; give uint8 (0..255) or uint16 (0..65535) pixels")
    peak = 255 if array.dtype == np.uint8 else 65535
    if array.ndim == 3 and array.shape[2] in (1, 2):  # gray, gray + alpha
        gray, alpha = array[:, :, 0], (array[:, :, 1] if array.shape[2] == 2 else None)
        return Planes(np.repeat(_rescale(gray, peak)[:, :, None], 3, axis=2), alpha, True, peak)
    if array.ndim == 2:
        return Planes(np.repeat(_rescale(array, peak)[:, :, None], 3, axis=2), None, True, peak)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Planes(_rescale(array[:, :, :3], peak), array[:, :, 3] if array.shape[2] == 4 else None, False, peak)
    raise InputError(f"image array has shape {array.shape}; give HxW (gray) or HxWxC with C in 1, 2, 3, 4")


def to_planes(image: ImageInput) -> Planes:
    """Split a path, PIL image or uint8/uint16 array (HxW, HxWxC with C in 1..4) into model planes."""
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if not isinstance(image, (str, os.PathLike, Image.Image)):
        raise InputError(f"unsupported image input of type {type(image).__name__}; give a file path, a PIL image "
                         "or a uint8/uint16 numpy array")
    pil = load_image(image)
    if pil.mode in _SIXTEEN_BIT:
        values = np.asarray(pil)
        if values.min() < 0 or values.max() > 65535:
            raise InputError(f"{pil.mode} image has values outside 0..65535; give a 16-bit or 8-bit image")
        return _from_array(values.astype(np.uint16))
    if pil.mode == "P":
        pil = pil.convert("RGBA" if "transparency" in pil.info else "RGB")
    elif pil.mode == "1":
        pil = pil.convert("L")
    elif pil.mode not in ("RGB", "RGBA", "L", "LA"):
        try:
            pil = pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot convert a {pil.mode} image to RGB: {exc}; save it as RGB or grayscale") from exc
    return _from_array(np.asarray(pil))


def _upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of one channel to ``size`` (width, height), in float so 16 bits stay 16 bits."""
    plane = Image.fromarray(alpha.astype(np.float32)).resize(size, Image.Resampling.BICUBIC)
    peak = np.iinfo(alpha.dtype).max
    return np.clip(np.rint(np.asarray(plane)), 0, peak).astype(alpha.dtype)


def to_pixels(rgb: np.ndarray, planes: Planes) -> np.ndarray:
    """Model output ``rgb`` (float HxWx3, any range; a whole image or one tile of it) as the input's integers:
    ``round(clip(x, 0, 1) * max)``, through ITU-R 601 luma first for gray input. HxW (gray) or HxWx3."""
    values = rgb @ LUMA if planes.gray else rgb
    return np.rint(np.clip(values, 0.0, 1.0) * np.float32(planes.max_value)).astype(planes.dtype)


def with_alpha(pixels: np.ndarray, planes: Planes) -> np.ndarray:
    """``pixels`` with the input's alpha channel, upscaled to their size, appended (unchanged without alpha)."""
    if planes.alpha is None:
        return pixels
    height, width = pixels.shape[:2]
    return np.dstack([pixels, _upscale_alpha(planes.alpha, (width, height))])


def to_image(pixels: np.ndarray) -> Image.Image:
    """A PIL image of ``with_alpha``' output; 16-bit colour has no Pillow mode and is an ``InputError``."""
    if pixels.dtype == np.uint16 and pixels.ndim == 3:
        raise InputError("Pillow cannot hold 16-bit colour images; use the result's pixels array (e.g. write it "
                         "with imageio or OpenCV) or give 8-bit input")
    return Image.fromarray(pixels)  # L, LA, RGB, RGBA; uint16 HxW is I;16 (a 16-bit grayscale PNG)
