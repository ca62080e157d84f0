"""CLIP image pre-processing in numpy + Pillow, bit-identical to transformers' (slow) ``CLIPImageProcessor``.

Why: the runtime must not import torch or transformers, yet an exported CLIP vision tower is only as good as
the pixels it gets. Every step below mirrors ``transformers.image_transforms`` (same output-size arithmetic,
PIL resampling on uint8, same crop offsets and zero padding, float64 rescale then float32 normalise), so the
exporter's parity numbers carry over to the device. Differences from HF are deliberate and listed where they occur.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

from mmedge.errors import InputError, PackageError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_COMMON_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")


def supported_formats() -> str:
    """The common image formats this Pillow build can decode, for error messages."""
    Image.init()
    return ", ".join(f for f in _COMMON_FORMATS if f in Image.OPEN)


def _bad_file(path: Path, why: object) -> InputError:
    return InputError(
        f"cannot read image {str(path)!r}: {why}. Give a complete image file in a supported format "
        f"({supported_formats()})."
    )


def load_image(image: ImageInput) -> Image.Image:
    """Return a fully decoded PIL image from a path, a PIL image or an HxW / HxWxC uint8 array.

    Paths are opened with Pillow and rotated by their EXIF orientation (as ``transformers.image_utils.load_image``
    does), and decoded at once so that a truncated or corrupt file fails here with an ``InputError`` instead of
    deep inside pre-processing. PIL images are used as given (no EXIF rotation: HF's processor does not rotate
    PIL inputs either). The mode is kept; ``ClipImagePreprocessor`` converts to RGB.
    """
    if isinstance(image, (str, os.PathLike)):
        return _load_path(Path(image))
    if isinstance(image, Image.Image):
        try:
            image.load()
        except Exception as exc:  # noqa: BLE001 - any decoder failure is an unusable input
            raise InputError(f"cannot decode the given PIL image: {exc}; re-open it from a complete file") from exc
        return _non_empty(image)
    if isinstance(image, np.ndarray):
        return _non_empty(_from_array(image))
    raise InputError(
        f"unsupported image input of type {type(image).__name__}; give a file path, a PIL.Image.Image "
        "or an HxWxC uint8 numpy array"
    )


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write a generated image; the format follows the suffix. Unwritable paths and formats that cannot hold the
    image (alpha in a JPEG, an unknown suffix) are an ``InputError`` naming the fix."""
    path = Path(path)
    try:
        image.save(path)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot write {path}: {e}; give a writable .png file name (or .jpg for RGB without "
                         "alpha)") from None
    return path


_DOWNSCALE = ("downscale or crop it first (e.g. `convert IN -resize 8000x8000 OUT`), or, for a trusted file and "
              "enough memory, raise PIL.Image.MAX_IMAGE_PIXELS")


def check_pixels(width: int, height: int, what: str) -> None:
    """``InputError`` when ``width`` x ``height`` is above Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 megapixels by default; ``None`` turns it off).

    Why Pillow's limit and not our own: it is the one knob users already know, and raising it lifts both guards.
    Pillow itself only warns between 1x and 2x the limit and then decodes (a 10000x10000 photo is 300 MB as RGB
    before any resize); mmedge refuses from 1x, before a byte is decoded.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise InputError(f"{what} is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
                         f"{limit / 1e6:.1f} megapixels (PIL.Image.MAX_IMAGE_PIXELS, Pillow's decompression-bomb "
                         f"guard); {_DOWNSCALE}")


def _load_path(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(f"image file not found: {str(path)!r}; give the path of an existing image file")
    try:
        with Image.open(path) as opened:  # reads the header only
            check_pixels(*opened.size, f"image {str(path)!r}")
            opened.load()  # full decode now: truncated data raises here
            return ImageOps.exif_transpose(opened)  # a loaded copy, detached from the file
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning, when it is an error
        raise InputError(f"image {str(path)!r} is too large to decode safely ({exc}); {_DOWNSCALE}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, EOFError...
        raise _bad_file(path, exc) from exc


def image_size(image: ImageInput) -> tuple[int, int] | None:
    """(width, height) without decoding: from a file's header, a PIL image or an array's shape, so that a caller
    can refuse a size before memory is spent on pixels. None where it cannot tell (a file Pillow cannot identify,
    a 1-D array...): ``load_image`` then raises the right error. EXIF rotation is ignored (it swaps the sides, not
    the pixel count)."""
    if isinstance(image, np.ndarray):
        return (int(image.shape[1]), int(image.shape[0])) if image.ndim >= 2 else None
    if isinstance(image, Image.Image):
        return image.size
    if isinstance(image, (str, os.PathLike)) and Path(image).is_file():
        try:
            with Image.open(image) as opened:
                return opened.size
        except Exception:  # noqa: BLE001 - unreadable or a decompression bomb: load_image says which, typed
            return None
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """The image in RGB mode, as a model wants it: Pillow's conversion (grayscale replicated, palette expanded,
    alpha dropped, CMYK converted), except for 16-bit grayscale (``I;16*``, or ``I`` with values above 255), which
    Pillow clips to white and which is scaled to 8 bits here (``round(v / 257)``) instead.

    That exception is a deliberate difference from transformers' processors (they call ``convert("RGB")`` and so
    see a white image for any real 16-bit scan or depth map); every 8-bit mode gives HF's pixels.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or (image.mode == "I" and np.asarray(image).max(initial=0) > 255):
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.round(wide / 257), 0, 255).astype(np.uint8))
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot convert a {image.mode} image to RGB: {exc}; save it as an RGB image") from exc


def _non_empty(image: Image.Image) -> Image.Image:
    if image.width == 0 or image.height == 0:
        raise InputError(f"the image is {image.width}x{image.height} pixels, it has nothing to see; give an image of "
                         "at least 1x1 pixels")
    return image


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise InputError(
            f"image array has dtype {array.dtype}; give uint8 pixels in 0..255 (e.g. (img * 255).astype(np.uint8))"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(array))
    raise InputError(
        f"image array has shape {array.shape}; give HxW (grayscale) or HxWxC with C in 1, 3, 4 (channels last)"
    )


def _size_dict(value: Any, default_to_square: bool, name: str) -> dict[str, int]:
    """HF's ``get_size_dict``: old configs store an int or an (h, w) pair instead of a dict."""
    if isinstance(value, dict):
        size = {k: int(v) for k, v in value.items() if v is not None}
    elif isinstance(value, int):
        size = {"height": value, "width": value} if default_to_square else {"shortest_edge": value}
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        size = {"height": int(value[0]), "width": int(value[1])}
    else:
        raise PackageError(f"image preprocessing: cannot read {name}={value!r}")
    if "shortest_edge" not in size and not {"height", "width"} <= size.keys():
        raise PackageError(
            f"image preprocessing: {name} must have 'shortest_edge' or 'height' and 'width', got {value!r}"
        )
    return size


@dataclass(frozen=True)
class ClipImagePreprocessor:
    """CLIP's image pipeline: RGB → resize (shortest edge) → center crop → rescale → normalise → NCHW float32."""

    do_resize: bool = True
    size: dict[str, int] = field(default_factory=lambda: {"shortest_edge": 224})
    resample: int = int(Image.Resampling.BICUBIC)
    do_center_crop: bool = True
    crop_size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    do_convert_rgb: bool = True

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClipImagePreprocessor:
        """Build from HF ``preprocessor_config.json`` keys (missing keys take CLIPImageProcessor's defaults)."""
        c = dict(config)
        if c.get("use_square_size") and isinstance(c.get("size"), dict) and "shortest_edge" in c["size"]:
            edge = c["size"]["shortest_edge"]
            c["size"] = {"height": edge, "width": edge}
        mean, std = c.get("image_mean", OPENAI_CLIP_MEAN), c.get("image_std", OPENAI_CLIP_STD)
        try:
            return cls(
                do_resize=bool(c.get("do_resize", True)),
                size=_size_dict(c.get("size", 224), False, "size"),
                resample=int(Image.Resampling(int(c.get("resample", Image.Resampling.BICUBIC)))),
                do_center_crop=bool(c.get("do_center_crop", True)),
                crop_size=_size_dict(c.get("crop_size", 224), True, "crop_size"),
                do_rescale=bool(c.get("do_rescale", True)),
                rescale_factor=float(c.get("rescale_factor", 1 / 255)),
                do_normalize=bool(c.get("do_normalize", True)),
                image_mean=tuple(float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)),
                image_std=tuple(float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3)),
                do_convert_rgb=bool(c.get("do_convert_rgb", True)),
            )
        except (TypeError, ValueError) as exc:
            raise PackageError(f"image preprocessing config is invalid: {exc}") from exc

    def to_config(self) -> dict[str, Any]:
        """The plain, JSON-ready dict (HF key names) that goes into a package manifest."""
        return {
            "do_resize": self.do_resize,
            "size": dict(self.size),
            "resample": self.resample,
            "do_center_crop": self.do_center_crop,
            "crop_size": dict(self.crop_size),
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "do_convert_rgb": self.do_convert_rgb,
        }

    def __call__(self, images: list[ImageInput]) -> np.ndarray:
        """Return ``pixel_values``: float32, shape (N, 3, H, W), identical to HF's CLIPImageProcessor."""
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)) or not isinstance(images, (list, tuple)):
            raise InputError("give a list of images (paths, PIL images or uint8 arrays), even for a single image")
        if not images:
            raise InputError("the list of images is empty; give at least one image")
        arrays = [self._one(load_image(image)) for image in images]
        if len({a.shape for a in arrays}) > 1:
            raise InputError(
                f"images have different sizes after preprocessing ({sorted({a.shape for a in arrays})}); "
                "enable do_center_crop or pass images one at a time"
            )
        return np.ascontiguousarray(np.stack(arrays))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """HF's ``get_resize_output_image_size``: shortest edge → size, long edge truncated (``int()``)."""
        if "shortest_edge" in self.size:
            edge = self.size["shortest_edge"]
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(edge * long / short)
            return (new_long, edge) if width <= height else (edge, new_long)
        return self.size["height"], self.size["width"]

    def _one(self, image: Image.Image) -> np.ndarray:
        if self.do_convert_rgb:
            image = to_rgb(image)  # HF's convert_to_rgb (alpha dropped), but 16-bit scaled, not clipped
        if image.mode != "RGB":
            raise InputError(f"image mode is {image.mode}; give an RGB image or enable do_convert_rgb")
        if self.do_resize:
            height, width = self.output_size(image.height, image.width)
            # A thin strip (1x20000) resized to a shortest edge of 224 would be 224x4480000: refuse, do not allocate.
            check_pixels(width, height, f"a {image.width}x{image.height} image resized for the model")
            image = image.resize((width, height), resample=Image.Resampling(self.resample))
        pixels = np.asarray(image)  # HxWx3 uint8
        if self.do_center_crop:
            pixels = _center_crop(pixels, self.crop_size["height"], self.crop_size["width"])
        if self.do_rescale:
            out = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
        else:
            out = pixels.astype(np.float32)
        if self.do_normalize:
            mean = np.array(self.image_mean, dtype=np.float32)
            std = np.array(self.image_std, dtype=np.float32)
            out = (out - mean) / std
        return out.transpose(2, 0, 1)


def _center_crop(pixels: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """HF's ``center_crop`` on HxWxC: floor offsets; zero-pads (before rescale) when the image is smaller."""
    h, w = pixels.shape[:2]
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    if top >= 0 and left >= 0:
        return pixels[top : top + crop_h, left : left + crop_w]
    new_h, new_w = max(crop_h, h), max(crop_w, w)
    padded = np.zeros((new_h, new_w) + pixels.shape[2:], dtype=pixels.dtype)
    top_pad, left_pad = ceil((new_h - h) / 2), ceil((new_w - w) / 2)
    padded[top_pad : top_pad + h, left_pad : left_pad + w] = pixels
    top, left = top + top_pad, left + left_pad
    return padded[max(0, top) : min(new_h, top + crop_h), max(0, left) : min(new_w, left + crop_w)]


# --------------------------------------------------------------------------------------------------------------
# Fixed-size processors (ViT, BLIP...): resize to (height, width) + rescale + normalise, no crop.
#
# Why here and not a new class: their ``preprocess`` is CLIP's with ``do_center_crop`` off and a height/width
# size (the same ``resize`` → PIL on uint8, float64 rescale, float32 normalise of ``BaseImageProcessor``), so
# ``ClipImagePreprocessor`` already computes them bit for bit; only the defaults of each HF class differ. The
# exporter resolves a model's ``preprocessor_config.json`` with these defaults once and writes every key into
# the manifest, so the device never needs to know which HF class it was.

IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)

#: HF (slow) class -> its constructor defaults, for the processors that are resize-to-fixed-size + normalise.
FIXED_SIZE_PROCESSORS: dict[str, dict[str, Any]] = {
    "ViTImageProcessor": {"size": {"height": 224, "width": 224}, "resample": int(Image.Resampling.BILINEAR),
                          "image_mean": IMAGENET_STANDARD_MEAN, "image_std": IMAGENET_STANDARD_STD},
    "BlipImageProcessor": {"size": {"height": 384, "width": 384}, "resample": int(Image.Resampling.BICUBIC),
                           "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD},
}


def processor_class_name(config: dict[str, Any]) -> str:
    """The HF image processor class a ``preprocessor_config.json`` names, in its slow spelling (old configs say
    ``ViTFeatureExtractor``; ``...Fast`` classes are matched to the slow computation this module reproduces)."""
    name = str(config.get("image_processor_type") or config.get("feature_extractor_type") or "")
    return name.removesuffix("Fast").replace("FeatureExtractor", "ImageProcessor")


def fixed_size_preprocessor(config: dict[str, Any]) -> ClipImagePreprocessor:
    """A preprocessor equal to the HF fixed-size processor ``config`` describes (``ViTImageProcessor``,
    ``BlipImageProcessor``): the class defaults fill the keys the file leaves out, ``size`` as an int means a
    square (HF's ``get_size_dict`` default), and there is never a center crop.

    One deliberate difference: ``ViTImageProcessor`` leaves ``do_convert_rgb`` unset and then fails on
    grayscale or RGBA input; here unset means convert to RGB (what BLIP does), so such images work. RGB images,
    the only ones HF accepts there, give identical pixels.
    """
    name = processor_class_name(config)
    if name not in FIXED_SIZE_PROCESSORS:
        raise PackageError(f"image preprocessing: '{name or 'unnamed'}' is not a fixed-size processor "
                           f"(supported: {', '.join(FIXED_SIZE_PROCESSORS)})")
    c = {**FIXED_SIZE_PROCESSORS[name], **{k: v for k, v in config.items() if v is not None}}
    size = c["size"]
    if isinstance(size, int):
        c["size"] = {"height": size, "width": size}
    c["size"] = _size_dict(c["size"], True, "size")
    if "shortest_edge" in c["size"]:
        raise PackageError(f"image preprocessing: {name} needs size with height and width, got {config['size']!r}")
    c.update(do_center_crop=False, crop_size=c["size"], do_convert_rgb=bool(c.get("do_convert_rgb", True)))
    return ClipImagePreprocessor.from_config(c)
