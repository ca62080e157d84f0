"""Pre-processing for the slim runtime: numpy, Pillow and ``tokenizers`` only (never torch or transformers).

Each preprocessor reproduces the transformers processor the model was exported with, bit for bit where the
maths allows, so parity measured at export time still holds on the device.
"""

from mmedge.runtime.preprocess.audio import chunk_audio, load_audio
from mmedge.runtime.preprocess.image import ClipImagePreprocessor, load_image
from mmedge.runtime.preprocess.text import ClipTextTokenizer
from mmedge.runtime.preprocess.tokenizer import IncrementalDecoder, TextTokenizer
from mmedge.runtime.preprocess.whisper_features import WhisperFeatures, load_mel_filters

__all__ = ["ClipImagePreprocessor", "ClipTextTokenizer", "IncrementalDecoder", "TextTokenizer", "WhisperFeatures",
           "chunk_audio", "load_audio", "load_image", "load_mel_filters"]
