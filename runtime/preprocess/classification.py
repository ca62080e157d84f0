"""Image pre-processing of classifiers: the Hugging Face processors (``ClipImagePreprocessor`` reproduces ViT's
and CLIP's exactly) or the TensorFlow ImageNet evaluation recipe that EfficientNet(-Lite) weights were trained
and evaluated with, which no HF processor expresses.

The TF recipe (``tensorflow/tpu`` ``efficientnet/preprocessing.py``, ``_decode_and_center_crop``): a square
centre crop of ``size / (size + crop_padding)`` of the shorter side (computed in float32 and truncated, offsets
rounded up), resized to ``size`` x ``size`` with bicubic interpolation, then ``(pixel - mean) / std`` on 0..255
values (EfficientNet-Lite: mean 127, std 128, "inception-style for better post-quantization" in
``efficientnet_lite_builder.py``). One deliberate difference: the resize is Pillow's bicubic, which filters when
it shrinks (TF's does not); the top-1 classes of the real test photos are the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mmedge.errors import InputError, PackageError
from mmedge.runtime.preprocess.image import ClipImagePreprocessor, ImageInput, load_image, to_rgb

#: ``preprocessing.image.kind`` of the TF crop-fraction recipe; HF processor configs carry no ``kind``.
CROP_FRACTION = "center-crop-fraction"


@dataclass(frozen=True)
class CropFractionPreprocessor:
    """The TF ImageNet eval recipe: centre crop a fraction of the short side → bicubic resize → normalise."""

    size: int = 224
    crop_padding: int = 32
    resample: int = int(Image.Resampling.BICUBIC)
    rescale_factor: float = 1.0
    image_mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    image_std: tuple[float, float, float] = (128.0, 128.0, 128.0)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CropFractionPreprocessor:
        try:
            return cls(size=int(config["size"]), crop_padding=int(config["crop_padding"]),
                       resample=int(Image.Resampling(int(config.get("resample", Image.Resampling.BICUBIC)))),
                       rescale_factor=float(config.get("rescale_factor", 1.0)),
                       image_mean=tuple(float(v) for v in config["image_mean"]),  # type: ignore[arg-type]
                       image_std=tuple(float(v) for v in config["image_std"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"image preprocessing ({CROP_FRACTION}) lacks or mangles {e}; "
                               "re-export the package") from None

    def to_config(self) -> dict[str, Any]:
        return {"kind": CROP_FRACTION, "size": self.size, "crop_padding": self.crop_padding, "resample": self.resample,
                "rescale_factor": self.rescale_factor, "image_mean": list(self.image_mean),
                "image_std": list(self.image_std)}

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the centre crop, with TF's float32 arithmetic and offsets."""
        side = int(np.float32(self.size / (self.size + self.crop_padding)) * np.float32(min(height, width)))
        side = max(side, 1)
        top, left = (height - side + 1) // 2, (width - side + 1) // 2
        return left, top, left + side, top + side

    def __call__(self, images: list[ImageInput]) -> np.ndarray:
        """``pixel_values``: float32 (N, 3, size, size)."""
        if not isinstance(images, (list, tuple)) or not images:
            raise InputError("give a non-empty list of images (paths, PIL images or uint8 arrays)")
        mean, std = np.array(self.image_mean, np.float32), np.array(self.image_std, np.float32)
        out = []
        for item in images:
            image = to_rgb(load_image(item))  # alpha dropped, palette expanded, 16-bit scaled to 8
            image = image.crop(self.crop_box(image.width, image.height))
            image = image.resize((self.size, self.size), resample=Image.Resampling(self.resample))
            pixels = np.asarray(image, dtype=np.float32) * np.float32(self.rescale_factor)
            out.append(((pixels - mean) / std).transpose(2, 0, 1))
        return np.ascontiguousarray(np.stack(out))


def classification_preprocessor(config: dict[str, Any]) -> ClipImagePreprocessor | CropFractionPreprocessor:
    """The preprocessor a package's ``preprocessing.image`` describes (TF recipe or an HF processor's keys)."""
    if config.get("kind") == CROP_FRACTION:
        return CropFractionPreprocessor.from_config(config)
    if "kind" in config:
        raise PackageError(f"unknown image preprocessing kind {config['kind']!r}; upgrade mmedge")
    return ClipImagePreprocessor.from_config(config)
