"""Fuzzing the pre-processing: audio (arrays of any length, dtype, layout and rate; WAV files with any header and
damage), images (arrays and PIL images of any size, mode and dtype; encoded files, truncated or corrupted) and
text (any unicode, empty, lone surrogates). The property everywhere: a typed ``InputError`` (whose message names
a fix), or a well-formed output — right shape and dtype, finite, in the range the maths allows."""

from __future__ import annotations

import io
import struct
from math import ceil

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from mmedge.errors import InputError
from mmedge.runtime.preprocess import ClipImagePreprocessor, ClipTextTokenizer, IncrementalDecoder, TextTokenizer
from mmedge.runtime.preprocess.audio import load_audio
from mmedge.runtime.preprocess.image import fixed_size_preprocessor, load_image

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
TARGET_RATE = 16000


def damaged(draw, data: bytes) -> bytes:
    """The file as written, cut short, or with a few bytes overwritten."""
    damage = draw(st.sampled_from(["none", "truncate", "flip"]))
    if damage == "truncate":
        return data[:draw(st.integers(0, len(data)))]
    if damage == "flip":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        return bytes(buf)
    return data


def accepted(call, *args, **kwargs):
    """``call(*args, **kwargs)``, or None when it refused the input with an ``InputError`` (StaticShapeError
    included), whose message must say what to do: a non-trivial one."""
    try:
        return call(*args, **kwargs)
    except InputError as e:
        assert len(str(e)) > 20, str(e)
        return None


# ------------------------------------------------------------------------------------------------ audio

AUDIO_DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                np.uint16, np.bool_, np.complex64])
RATES = st.sampled_from([-8000, 0, 8000, 11025, 16000, 22050, 44100, 48000]) | st.integers(4000, 96000)


@st.composite
def audio_arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(AUDIO_DTYPES))
    shape = draw(st.sampled_from(["1d", "frames-channels", "channels-frames", "3d"]))
    n, c = draw(st.integers(0, 3000)), draw(st.integers(0, 10))
    dims = {"1d": (n,), "frames-channels": (n, c), "channels-frames": (c, n), "3d": (2, n, 1)}[shape]
    elements = (st.floats(-1.5, 1.5, width=min(64, dtype.itemsize * 8)) if dtype.kind == "f" else None)
    array = draw(hnp.arrays(dtype, dims, elements=elements, fill=elements))
    if dtype.kind == "f" and array.size and draw(st.booleans()) and draw(st.booleans()):
        array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return array


def check_samples(out: np.ndarray, frames: int, rate: int, bounded: bool) -> None:
    assert out.dtype == np.float32 and out.ndim == 1 and out.flags.c_contiguous
    expected = frames if rate == TARGET_RATE else ceil(frames * TARGET_RATE / rate)
    assert abs(out.shape[0] - expected) <= 1, (out.shape, frames, rate)
    assert np.isfinite(out).all()
    if bounded:  # integer PCM is scaled into [-1, 1); resampling may ring a little above it
        assert np.abs(out).max(initial=0) <= (1.0 if rate == TARGET_RATE else 1.5)


@FUZZ
@given(array=audio_arrays(), rate=RATES)
def test_audio_arrays(array, rate):
    out = accepted(load_audio, array, sampling_rate=rate)
    if out is None:
        return
    frames = array.shape[0] if array.ndim == 1 else max(array.shape) if min(array.shape) <= 8 else -1
    check_samples(out, frames, rate, bounded=array.dtype.kind in "iu")


def _wav(tag: int, channels: int, rate: int, bits: int, pcm: bytes, extensible_tag: int | None) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * max(bits, 8) // 8 & 0xFFFFFFFF,
                      channels * max(bits, 8) // 8 & 0xFFFF, bits)
    if extensible_tag is not None:
        fmt += struct.pack("<HHIH", 22, bits, 0, extensible_tag) + b"\x00" * 14
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


@st.composite
def wav_files(draw) -> bytes:
    tag = draw(st.sampled_from([1, 3, 0xFFFE, 2, 0]))
    bits = draw(st.sampled_from([8, 16, 24, 32, 64, 0, 12]))
    data = _wav(tag, draw(st.integers(0, 9)), draw(st.sampled_from([0, 8000, 16000, 44100]) | st.integers(4000, 96000)),
                bits, draw(st.binary(max_size=4000)), draw(st.sampled_from([1, 3, 7])) if tag == 0xFFFE else None)
    return damaged(draw, data)


@FUZZ
@given(data=wav_files() | st.binary(max_size=300))
def test_audio_files(data, tmp_path):
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    out = accepted(load_audio, path)
    if out is None:
        return
    assert out.dtype == np.float32 and out.ndim == 1 and out.size > 0 and np.isfinite(out).all()


# ------------------------------------------------------------------------------------------------ images

CLIP_SMALL = ClipImagePreprocessor.from_config({"size": {"shortest_edge": 16},
                                                "crop_size": {"height": 16, "width": 16}})
VIT_SMALL = fixed_size_preprocessor({"image_processor_type": "ViTImageProcessor", "size": {"height": 12, "width": 20}})
IMAGE_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])
MODES = st.sampled_from(["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "I;16", "LA", "PA",
                         "RGBX", "I;16B"])


def check_pixels(pixels: np.ndarray, pre: ClipImagePreprocessor) -> None:
    h, w = (pre.crop_size["height"], pre.crop_size["width"]) if pre.do_center_crop else pre.output_size(1, 1)
    assert pixels.shape == (1, 3, h, w) and pixels.dtype == np.float32 and pixels.flags.c_contiguous
    mean, std = np.array(pre.image_mean), np.array(pre.image_std)
    low, high = ((0 - mean) / std)[:, None, None], ((1 - mean) / std)[:, None, None]
    assert np.isfinite(pixels).all()
    assert (pixels[0] >= low - 1e-5).all() and (pixels[0] <= high + 1e-5).all()


def preprocess(image, pre: ClipImagePreprocessor) -> None:
    pixels = accepted(pre, [image])
    if pixels is None:
        return
    check_pixels(pixels, pre)


@FUZZ
@given(array=hnp.arrays(IMAGE_DTYPES, st.tuples(st.integers(0, 40), st.integers(0, 40))
                        | st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 5))),
       pre=st.sampled_from([CLIP_SMALL, VIT_SMALL]))
def test_image_arrays(array, pre):
    preprocess(array, pre)


@FUZZ
@given(mode=MODES, size=st.tuples(st.integers(1, 40), st.integers(1, 40)), seed=st.integers(0, 2**16),
       pre=st.sampled_from([CLIP_SMALL, VIT_SMALL]))
def test_pil_images_of_every_mode(mode, size, seed, pre):
    image = Image.new(mode, size)
    raw = np.random.default_rng(seed).integers(0, 256, len(image.tobytes()), dtype=np.uint8).tobytes()
    image.frombytes(raw)
    if mode == "F":  # random float bits include NaN and Inf: a float image needs finite values
        assume(np.isfinite(np.asarray(image)).all())
    preprocess(image, pre)


@st.composite
def encoded_images(draw) -> bytes:
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"]))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "I;16", "1"]))
    if fmt in ("JPEG",) and mode not in ("RGB", "L"):
        mode = "RGB"
    if fmt in ("BMP", "GIF", "WEBP") and mode == "I;16":
        mode = "L"
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    image = Image.new(mode, size)
    image.frombytes(rng.integers(0, 256, len(image.tobytes()), dtype=np.uint8).tobytes())
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return damaged(draw, buf.getvalue())


@FUZZ
@given(data=encoded_images() | st.binary(max_size=200), pre=st.sampled_from([CLIP_SMALL, VIT_SMALL]))
def test_image_files(data, pre, tmp_path):
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    image = accepted(load_image, path)
    if image is None:
        return
    preprocess(image, pre)


# ------------------------------------------------------------------------------------------------ text

any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=60)  # surrogates included


@pytest.fixture(scope="module")
def clip_tokenizer(tiny_clip_dir) -> ClipTextTokenizer:
    return ClipTextTokenizer(tiny_clip_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def lm_tokenizer(tiny_lm_dirs) -> TextTokenizer:
    return TextTokenizer(tiny_lm_dirs["gpt2"] / "tokenizer.json")


@FUZZ
@given(texts=st.lists(any_text, max_size=4), pad_to=st.sampled_from([None, 8, 77]), truncate=st.booleans())
def test_clip_tokenizer(clip_tokenizer, texts, pad_to, truncate):
    out = accepted(clip_tokenizer, texts, pad_to=pad_to, truncate=truncate)
    if out is None:
        return
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape and ids.shape[0] == len(texts)
    assert pad_to is None or ids.shape[1] == pad_to
    vocab = clip_tokenizer._tok.get_vocab_size(with_added_tokens=True)
    assert ((ids >= 0) & (ids < vocab)).all()
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert (m[:n] == 1).all() and (m[n:] == 0).all()  # right padding
        assert row[0] == clip_tokenizer.bos_id and row[n - 1] == clip_tokenizer.eos_id and n >= 2


@FUZZ
@given(text=any_text)
def test_lm_tokenizer_round_trip_and_streaming(lm_tokenizer, text):
    ids = accepted(lm_tokenizer.encode, text)
    if ids is None:
        return
    assert all(isinstance(i, int) and 0 <= i < lm_tokenizer.vocab_size for i in ids)
    assert lm_tokenizer.decode(ids, skip_special_tokens=False) == text  # byte-level BPE loses nothing
    stream = IncrementalDecoder(lm_tokenizer)
    assert "".join(stream.push(i) for i in ids) == lm_tokenizer.decode(ids)
