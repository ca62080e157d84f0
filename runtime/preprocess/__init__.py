"""Pre-processing for the slim runtime: numpy, Pillow and ``tokenizers`` only (never torch or transformers).

Each preprocessor reproduces the transformers processor the model was exported with, bit for bit where the
maths allows, so parity measured at export time still holds on the device.
"""

from mmedge.runtime.preprocess.image import ClipImagePreprocessor, load_image
from mmedge.runtime.preprocess.text import ClipTextTokenizer

__all__ = ["ClipImagePreprocessor", "ClipTextTokenizer", "load_image"]
