"""Bad-input catalogue, task inputs: audio, images, text and arrays fed to real pipelines of tiny packages.

One ``Case`` per row of docs/bad-inputs.md ("Task inputs" table), parametrised by the row's id. An error row asserts
the exact mmedge error type and the fragment of its message that names the fix; a handling row runs the input and
asserts what the catalogue says happens (a downmix gives the mono logits, a 16-bit scan the 8-bit one's embedding,
an hour of audio one float copy and 30 s windows...). ``cli-*`` rows go through ``mmedge run`` and also check the
exit code and that no traceback is printed.

Packages: a tiny wav2vec2 CTC and a tiny Swin2SR exported here (ONNX only, seconds), the session's tiny CLIP and
tiny GPT-2 (conftest); each is built only when a selected case needs it.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import InputError, MmedgeError, StaticShapeError
from mmedge.runtime.preprocess.audio import load_audio
from mmedge.runtime.preprocess.ctc import MAX_WHOLE_CLIP_S, frames_for
from mmedge.runtime.preprocess.image import load_image

RATE = 16000
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


# ------------------------------------------------------------------------------------------------- packages


@pytest.fixture(scope="module")
def w2v_package(tmp_path_factory) -> Path:
    from mmedge.exporter.export import export
    from mmedge.exporter.families import write_tiny_model

    root = tmp_path_factory.mktemp("bad-w2v")
    return export(write_tiny_model("wav2vec2", root / "src"), root / "pkg", static=True, formats=["onnx"])


@pytest.fixture(scope="module")
def sr_package(tmp_path_factory) -> Path:
    from mmedge.exporter.export import export
    from mmedge.exporter.families import write_tiny_model

    root = tmp_path_factory.mktemp("bad-sr")
    return export(write_tiny_model("swin2sr", root / "src"), root / "pkg", static=True, formats=["onnx"])


class Env:
    """What a case needs, built on first use: pipelines of the tiny packages, a temporary folder, the CLI."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path, capsys: pytest.CaptureFixture) -> None:
        self.request, self.tmp, self.capsys = request, tmp, capsys

    def package(self, name: str) -> Path:
        if name == "gpt2":
            return self.request.getfixturevalue("lm_packages")["gpt2"]
        return self.request.getfixturevalue({"w2v": "w2v_package", "clip": "clip_package", "sr": "sr_package"}[name])

    def pipe(self, name: str, variant: str = "fp32") -> Any:
        return runtime.load(self.package(name), engine="onnxruntime", variant=variant, device="x86-cpu")

    def cli(self, name: str, *args: str) -> int:
        """``mmedge run PACKAGE ARGS`` in-process; returns the exit code (stderr is checked by the test)."""
        self.capsys.readouterr()
        return main(["run", str(self.package(name)), "--engine", "onnxruntime", "--variant", "fp32",
                     "--device", "x86-cpu", *args])


@dataclass(frozen=True)
class Case:
    """A catalogue row. ``run(env)`` feeds the input: for an error row it must raise ``error`` (or, for a CLI row,
    return its exit code) with ``says`` in the message; for a handling row (``error`` None) it asserts the handling
    itself and ``says`` is the catalogue's description."""

    id: str
    input: str
    run: Callable[[Env], Any]
    error: type[MmedgeError] | None
    says: str
    cli: bool = False


# ------------------------------------------------------------------------------------------------------ audio


def speech_like(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """int16 mono at 16 kHz: a tone with noise (any signal shows whether two encodings give the same samples)."""
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (np.clip(0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * noise, -1, 1) * 32767).astype("<i2")


def wav_header(data_bytes: int, *, rate: int = RATE, channels: int = 1, bits: int = 16, tag: int = 1) -> bytes:
    """A RIFF/WAVE header by hand (the ``wave`` module writes neither float nor header-only files)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + data_bytes) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_bytes))


def write_wav(path: Path, payload: bytes | np.ndarray, **header: int) -> Path:
    payload = payload.tobytes() if isinstance(payload, np.ndarray) else payload
    path.write_bytes(wav_header(len(payload), **header) + payload)
    return path


def logits(env: Env, audio: Any, **kwargs: Any) -> np.ndarray:
    return env.pipe("w2v").frame_logits(audio, **kwargs)[0]


def same_as_mono16(make: Callable[[Env, np.ndarray], Path]) -> Callable[[Env], None]:
    """A handling check: the file ``make`` writes from the 16-bit mono clip gives exactly that clip's logits."""
    def run(env: Env) -> None:
        x = speech_like()
        reference = logits(env, write_wav(env.tmp / "mono16.wav", x))
        got = logits(env, make(env, x))
        assert got.shape == reference.shape and np.array_equal(got, reference)
    return run


def stereo(env: Env) -> None:
    left, right = speech_like(seed=0), speech_like(seed=1)[::-1]
    got = logits(env, write_wav(env.tmp / "stereo.wav", np.stack([left, right], axis=1), channels=2))
    mean = ((left.astype(np.float64) + right) / 65536).astype(np.float32)  # (l/32768 + r/32768) / 2
    assert np.array_equal(got, logits(env, mean))


def pcm24(env: Env, x: np.ndarray) -> Path:
    wide = (x.astype("<i4") << 8).view(np.uint8).reshape(-1, 4)[:, :3]  # little-endian: low three bytes
    return write_wav(env.tmp / "pcm24.wav", np.ascontiguousarray(wide), bits=24)


def float32_wav(env: Env, x: np.ndarray) -> Path:
    return write_wav(env.tmp / "float.wav", (x / np.float32(32768)).astype("<f4"), bits=32, tag=3)


def int16_array(env: Env) -> None:
    x = speech_like()
    assert np.array_equal(logits(env, x), logits(env, x.astype(np.float32) / 32768))


def silent(env: Env) -> None:
    result = env.pipe("w2v").transcribe(write_wav(env.tmp / "silence.wav", np.zeros(3 * RATE, "<i2")))
    assert isinstance(result.text, str) and result.chunks[-1]["end_s"] == 3.0
    assert np.isfinite(logits(env, np.zeros(3 * RATE, np.float32))).all()  # zero variance normalises to zeros


def clipped(env: Env) -> None:
    square = np.where(np.sin(2 * np.pi * 440 * np.arange(3 * RATE) / RATE) >= 0, 32767, -32768).astype("<i2")
    path = write_wav(env.tmp / "square.wav", square)
    samples = load_audio(path)
    assert samples.min() == -1.0 and samples.max() == np.float32(32767 / 32768)
    assert np.isfinite(logits(env, path)).all() and isinstance(env.pipe("w2v").transcribe(path).text, str)


def resampled_8k(env: Env) -> None:
    path = write_wav(env.tmp / "8k.wav", speech_like()[::2], rate=8000)
    assert len(load_audio(path)) == 3 * RATE
    result = env.pipe("w2v").transcribe(path)
    assert result.chunks[-1]["end_s"] == 3.0 and isinstance(result.text, str)


class EncoderSpy:
    """Stands in for the encoder: records each call's samples and returns blank logits of the right frame count
    (the hour's real inference is ``test_one_hour_real_engine``, slow)."""

    def __init__(self, pipe: Any) -> None:
        self.lengths: list[int] = []
        self.layers, self.vocab = pipe.layers, len(pipe.vocabulary.tokens)

    def __call__(self, input_values: np.ndarray) -> dict[str, np.ndarray]:
        self.lengths.append(input_values.shape[1])
        return {"logits": np.zeros((1, frames_for(input_values.shape[1], self.layers), self.vocab), np.float32)}


def one_hour_file(folder: Path) -> Path:
    """An hour of 16-bit 16 kHz WAV, written a minute at a time."""
    path, minute = folder / "hour.wav", speech_like(60.0).tobytes()
    with open(path, "wb") as f:
        f.write(wav_header(60 * len(minute)))
        for _ in range(60):
            f.write(minute)
    return path


def one_hour(env: Env) -> None:
    path = one_hour_file(env.tmp)
    tracemalloc.start()
    try:
        samples = load_audio(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(samples) == 3600 * RATE
    # the file's bytes plus one float32 copy (the old float64 path peaked at 4x the result)
    assert peak < 1.8 * samples.nbytes, f"peak {peak / 2**20:.0f} MiB for {samples.nbytes / 2**20:.0f} MiB of samples"
    del samples
    pipe = env.pipe("w2v")
    pipe.encoder = spy = EncoderSpy(pipe)
    result = pipe.transcribe(path)
    assert max(spy.lengths) == MAX_WHOLE_CLIP_S * RATE and sum(spy.lengths) == 3600 * RATE
    assert len(result.chunks) == 120 and result.chunks[-1]["end_s"] == 3600.0


def empty_file(env: Env, name: str) -> Path:
    (env.tmp / name).touch()
    return env.tmp / name


def png_bytes(env: Env, name: str) -> Path:
    path = env.tmp / name
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="PNG")
    return path


def random_bytes(env: Env, name: str) -> Path:
    path = env.tmp / name
    path.write_bytes(b"\x00\x17" + np.random.default_rng(1).integers(0, 256, 4094, np.uint8).tobytes())
    return path


AUDIO = [
    Case("audio-empty-file", "a 0-byte .wav file",
         lambda env: logits(env, empty_file(env, "empty.wav")),
         InputError, "Give a complete audio file in a supported format"),
    Case("audio-wav-header-only", "a WAV file with a header and no samples (zero-length recording)",
         lambda env: logits(env, write_wav(env.tmp / "header.wav", b"")), InputError,
         "give a recording at least a few milliseconds long"),
    Case("audio-silent", "3 s of digital silence", silent, None,
         "transcribed like any audio (silence is valid input; the normalised window is zeros, not NaN)"),
    Case("audio-clipped-square", "a full-scale square wave (every sample at +/-32767/-32768)", clipped, None,
         "scaled to [-1, 1) and transcribed; nothing is clipped further"),
    Case("audio-one-hour", "1 hour of 16 kHz 16-bit WAV (115 MB)", one_hour, None,
         "read into one float32 copy (the file's bytes + 4 bytes a sample, no float64 temporaries); a dynamic "
         "model runs it in 30 s windows (MAX_WHOLE_CLIP_S) so attention memory stays bounded"),
    Case("audio-8khz", "an 8 kHz WAV", resampled_8k, None, "resampled to the model's 16 kHz (soxr, else numpy)"),
    Case("audio-rate-1hz", "a WAV header claiming 1 Hz (damaged or crafted)",
         lambda env: logits(env, write_wav(env.tmp / "one-hz.wav", speech_like(), rate=1)), InputError,
         "below 1000 Hz (the header is damaged or wrong)"),
    Case("audio-stereo", "a stereo WAV with different channels", stereo, None,
         "channels averaged to mono: the logits of the mean of the two channels"),
    Case("audio-24-bit", "24-bit PCM WAV", same_as_mono16(pcm24), None,
         "scaled by 2^-23: the same samples and logits as the 16-bit file"),
    Case("audio-float32", "32-bit float WAV", same_as_mono16(float32_wav), None,
         "read as stored (not re-clipped): the same logits as the 16-bit file"),
    Case("audio-png-as-wav", "a PNG image renamed to .wav", lambda env: logits(env, png_bytes(env, "image.wav")),
         InputError, "Give a complete audio file in a supported format"),
    Case("audio-random-bytes", "4 kB of random bytes named .wav",
         lambda env: logits(env, random_bytes(env, "noise.wav")), InputError,
         "Give a complete audio file in a supported format"),
    Case("audio-missing-file", "a path that does not exist", lambda env: logits(env, env.tmp / "missing.wav"),
         InputError, "give the path of an existing audio file"),
    Case("audio-array-int16", "an int16 numpy array (Python API)", int16_array, None,
         "integer PCM scaled by 1/32768: the same logits as the float array"),
    Case("audio-array-nan", "a float array with a NaN (Python API)",
         lambda env: logits(env, np.array([0.1, np.nan] * 8000, np.float32)), InputError, "give finite audio"),
    Case("audio-array-3d", "a 3-D array (e.g. batch x frames x channels) (Python API)",
         lambda env: logits(env, np.zeros((2, 16000, 2), np.float32)), InputError,
         "give 1-D samples or a 2-D frames"),
    Case("cli-audio-random-bytes", "`mmedge run W2V --audio noise.wav` (random bytes)",
         lambda env: env.cli("w2v", "--audio", str(random_bytes(env, "noise.wav"))), InputError,
         "Give a complete audio file", cli=True),
]


# ----------------------------------------------------------------------------------------------------- images


def blank_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black grayscale PNG of any size in well under a second: the 400 MB of pixels of a 20000x20000
    one never exist here. Every 64-row block deflates to the same bytes after a full flush (the compressor's state
    is reset), so the stream is one compressed block repeated, the remaining rows, and the Adler-32 of it all."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(width + 1)  # filter byte 0, then black pixels
    block, (units, rest) = row * 64, divmod(height, 64)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib header and checksum are added below
    unit = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15)
    adler = 1
    for _ in range(units):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(row * rest, adler)
    data = b"\x78\xda" + unit * units + end.compress(row * rest) + end.flush() + struct.pack(">I", adler)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def photo(height: int = 120, width: int = 160) -> np.ndarray:
    """An RGB test picture with structure in every channel (the embedding notices a lost or moved channel)."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 64 * 4], axis=2).astype(np.uint8)


def embed(env: Env, image: Any) -> np.ndarray:
    return env.pipe("clip").embed_images([image])[0]


def embeds_like(image_of: Callable[[Env], Any], reference_of: Callable[[], np.ndarray]) -> Callable[[Env], None]:
    """A handling check: the input gives exactly the embedding of the reference RGB pixels."""
    def run(env: Env) -> None:
        got, expected = embed(env, image_of(env)), embed(env, reference_of())
        assert np.isfinite(got).all() and np.array_equal(got, expected)
    return run


def tiny(width: int, height: int) -> Callable[[Env], None]:
    def run(env: Env) -> None:
        path = env.tmp / f"tiny-{width}x{height}.png"
        Image.fromarray(photo(height, width)).save(path)
        assert embed(env, path).shape == embed(env, photo()).shape and np.isfinite(embed(env, path)).all()
    return run


def saved(name: str, image: Image.Image, **kwargs: Any) -> Callable[[Env], Path]:
    def make(env: Env) -> Path:
        image.save(env.tmp / name, **kwargs)
        return env.tmp / name
    return make


def gray() -> np.ndarray:
    return photo()[:, :, 1]


def under_limit(env: Env) -> None:
    side = int(np.sqrt(Image.MAX_IMAGE_PIXELS)) - 1  # 9458 x 9458: decoded (270 MB as RGB), then resized
    assert np.isfinite(embed(env, blank_png(env.tmp / "big.png", side, side))).all()


def exif_rotated(env: Env) -> None:
    stored = np.zeros((300, 180, 3), np.uint8)  # 180 wide, 300 high: red top, blue bottom
    stored[:100, :, 0], stored[100:, :, 2] = 255, 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the stored top becomes the right side
    path = env.tmp / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    pixels = np.asarray(load_image(path)).astype(int)
    assert pixels.shape == (180, 300, 3)
    assert pixels[:, -90:, 0].mean() > 200 > pixels[:, -90:, 2].mean()  # red on the right
    assert pixels[:, :90, 2].mean() > 200 > pixels[:, :90, 0].mean()  # blue on the left
    assert np.array_equal(embed(env, path), embed(env, pixels.astype(np.uint8)))


def sr_refused_from_header(env: Env) -> None:
    side = int(np.sqrt(Image.MAX_IMAGE_PIXELS)) - 1
    path = blank_png(env.tmp / "big.png", side, side)
    pipe = env.pipe("sr")
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="max_output_pixels") as info:
            pipe.upscale(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "downscale or crop the input" in str(info.value)
    assert peak < 16 * 2**20  # refused from the header: the float planes would be 1 GB


def sr_tiles(env: Env) -> None:
    pipe = env.pipe("sr", "fp32-static")
    result = pipe.upscale(photo(100, 130))
    assert result.pixels.shape == (100 * pipe.scale, 130 * pipe.scale, 3)
    assert result.tile == pipe.fixed_tile == 64 and result.tiles > 1 and result.to_dict()["tiles"] == result.tiles


def sr_tiny(env: Env) -> None:
    pipe = env.pipe("sr")
    assert pipe.upscale(photo(1, 1)).pixels.shape == (pipe.scale, pipe.scale, 3)


def truncated_jpeg(env: Env) -> Path:
    path = env.tmp / "cut.jpg"
    Image.fromarray(photo(256, 256)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def not_an_image(env: Env) -> Path:
    path = env.tmp / "notes.jpg"
    path.write_text("meeting at 10\n")
    return path


IMAGES = [
    Case("image-1x1", "a 1x1 image", tiny(1, 1), None,
         "resized up to the model's size like any image (an embedding, not an error)"),
    Case("image-2x3", "a 2x3 image", tiny(2, 3), None, "resized up to the model's size like any image"),
    Case("image-20000x20000", "a 20000x20000 PNG (400 megapixels; a 400 kB file)",
         lambda env: embed(env, blank_png(env.tmp / "huge.png", 20000, 20000)), InputError,
         "downscale or crop it first"),
    Case("image-10000x10000", "a 10000x10000 PNG (100 megapixels: Pillow would only warn, then decode 300 MB)",
         lambda env: embed(env, blank_png(env.tmp / "big.png", 10000, 10000)), InputError,
         "above the limit of 89.5 megapixels (PIL.Image.MAX_IMAGE_PIXELS"),
    Case("image-just-under-limit", "a 9458x9458 PNG (just under Pillow's 89.5-megapixel limit)", under_limit, None,
         "decoded and resized (about 270 MB as RGB for a moment): the embedding is computed"),
    Case("image-strip-1x100000", "a 1x100000 strip (resized to the tiny CLIP's 32-pixel shortest edge it would be "
         "102 megapixels; at 224 pixels, 22 gigapixels)",
         lambda env: embed(env, np.zeros((100000, 1, 3), np.uint8)), InputError, "downscale or crop it first"),
    Case("sr-image-just-under-limit", "a 9458x9458 PNG to super-resolution (x2: a 358-megapixel output)",
         sr_refused_from_header, None,
         "refused from the file's header with InputError (5) naming max_output_pixels (downscale or crop the input, "
         "or raise max_output_pixels), before the 1 GB of float planes exist"),
    Case("sr-image-static-tiles", "a 130x100 image to a static super-resolution artifact (fixed 64x64 input)",
         sr_tiles, None, "tiled with overlap (the whole-image result up to the receptive field); the result says "
         "how many tiles and their size"),
    Case("sr-image-1x1", "a 1x1 image to super-resolution", sr_tiny, None,
         "padded as the model's processor pads (symmetric), upscaled to scale x scale pixels"),
    Case("image-grayscale", "a grayscale (L) PNG", embeds_like(saved("gray.png", Image.fromarray(gray())),
                                                             lambda: np.repeat(gray()[:, :, None], 3, axis=2)),
         None, "replicated to RGB: the embedding of the gray RGB image"),
    Case("image-rgba", "an RGBA PNG with a varying alpha channel",
         embeds_like(saved("rgba.png", Image.fromarray(np.dstack([photo(), gray()]))), photo), None,
         "alpha dropped (colour values kept, as transformers does): the embedding of its RGB channels"),
    Case("image-palette", "a palette (P) PNG with transparency",
         embeds_like(saved("palette.png", Image.fromarray(photo()).quantize(64), transparency=0),
                     lambda: np.asarray(Image.fromarray(photo()).quantize(64).convert("RGB"))), None,
         "palette expanded to RGB: the embedding of the expanded colours"),
    Case("image-16-bit", "a 16-bit grayscale PNG (I;16)",
         embeds_like(saved("gray16.png", Image.fromarray(gray().astype(np.uint16) * 257)),
                     lambda: np.repeat(gray()[:, :, None], 3, axis=2)), None,
         "scaled to 8 bits (round(v / 257); Pillow and transformers clip it to white): the 8-bit image's embedding"),
    Case("image-exif-rotated", "a JPEG stored portrait with EXIF orientation 6", exif_rotated, None,
         "rotated as the EXIF tag says before pre-processing (landscape, stored top on the right)"),
    Case("image-truncated-jpeg", "the first half of a JPEG file", lambda env: embed(env, truncated_jpeg(env)),
         InputError, "Give a complete image file in a supported format"),
    Case("image-not-an-image", "a text file named .jpg", lambda env: embed(env, not_an_image(env)), InputError,
         "Give a complete image file in a supported format"),
    Case("image-missing-file", "a path that does not exist", lambda env: embed(env, env.tmp / "missing.png"),
         InputError, "give the path of an existing image file"),
    Case("image-array-float64-rgba", "a float64 HxWx4 array in [0, 1] (Python API)",
         lambda env: embed(env, np.random.default_rng(0).random((32, 32, 4))), InputError,
         "give uint8 pixels in 0..255"),
    Case("image-array-5-channels", "a uint8 HxWx5 array (Python API)",
         lambda env: embed(env, np.zeros((32, 32, 5), np.uint8)), InputError,
         "give HxW (grayscale) or HxWxC with C in 1, 3, 4"),
    Case("cli-image-truncated-jpeg", "`mmedge run CLIP --image cut.jpg --labels a,b` (truncated JPEG)",
         lambda env: env.cli("clip", "--image", str(truncated_jpeg(env)), "--labels", "a cat,a dog"), InputError,
         "Give a complete image file", cli=True),
]


# ------------------------------------------------------------------------------------------------------- text

LATIN1_CAFE = b"un caf\xe9 noir".decode("utf-8", "surrogateescape")  # what Python makes of Latin-1 argv bytes


def static_overflow(env: Env) -> Any:
    pipe = env.pipe("gpt2", "fp32-static")
    prompt = "a" + " a" * 119
    n = len(pipe.tokenizer.encode(prompt))
    assert 100 < n < 128  # fits the 128-slot cache; the new tokens do not
    return pipe.generate(prompt, max_new_tokens=128 - n + 5)


TEXT = [
    Case("prompt-empty", "an empty prompt (LM)", lambda env: env.pipe("gpt2").generate(""), InputError,
         "give some text"),
    Case("prompt-100kb", "a 100 kB prompt (LM, dynamic cache; 128 positions)",
         lambda env: env.pipe("gpt2").generate("hello world " * 8534), StaticShapeError,
         "shorten the prompt below 128 tokens"),
    Case("prompt-over-static-limit", "a prompt that fits a static 128-token cache, plus new tokens that do not",
         static_overflow, StaticShapeError, "lower max_new_tokens to"),
    Case("prompt-invalid-utf8", "a prompt with bytes that are not UTF-8 (Python API, surrogate-escaped)",
         lambda env: env.pipe("gpt2").generate(LATIN1_CAFE), InputError, "convert it to UTF-8 first"),
    Case("cli-prompt-invalid-utf8", "`mmedge run LM --prompt` with Latin-1 bytes in argv",
         lambda env: env.cli("gpt2", "--prompt", LATIN1_CAFE), InputError, "convert it to UTF-8 first", cli=True),
    Case("clip-text-100kb", "a 100 kB text to a CLIP text tower (77 tokens)",
         lambda env: env.pipe("clip").embed_text(["a photo of a cat " * 5900]), StaticShapeError,
         "pass truncate=True"),
    Case("clip-text-invalid-utf8", "a CLIP text with bytes that are not UTF-8",
         lambda env: env.pipe("clip").embed_text([LATIN1_CAFE]), InputError, "convert it to UTF-8 first"),
    Case("clip-labels-blank", "zero-shot labels that are all blank",
         lambda env: env.pipe("clip").zero_shot(photo(), ["", "  "]), InputError, "--labels 'a cat,a dog'"),
]

CASES = AUDIO + IMAGES + TEXT


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, request, tmp_path, capsys) -> None:
    env = Env(request, tmp_path, capsys)
    if case.error is None:
        case.run(env)
    elif case.cli:
        code = case.run(env)
        err = capsys.readouterr().err
        assert code == case.error.exit_code, err
        assert case.says in err and "Traceback" not in err
    else:
        with pytest.raises(MmedgeError) as info:
            case.run(env)
        assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
        assert case.says in str(info.value)


@pytest.mark.slow
def test_one_hour_real_engine(w2v_package, tmp_path) -> None:
    """The hour through the real dynamic encoder (about 15 s on 2 cores): 120 windows of 30 s."""
    pipe = runtime.load(w2v_package, engine="onnxruntime", variant="fp32", device="x86-cpu")
    result = pipe.transcribe(one_hour_file(tmp_path))
    assert len(result.chunks) == 120 and result.chunks[-1]["end_s"] == 3600.0 and result.text
