"""Audio input for the slim runtime: any common file or array → float32 mono samples at 16 kHz.

Why this module exists: speech models (Whisper) are exported against 16 kHz mono float audio, and users hand
the runtime whatever their device records. Everything a device commonly produces is read here with numpy
alone (WAV in 8/16/24/32-bit PCM or 32/64-bit float, raw PCM such as ALSA/pocketsphinx ``.raw`` files, arrays);
compressed formats (FLAC, OGG, MP3, AIFF) and high-quality resampling use the small ``mmedge[audio]`` extra
(``soundfile``, ``soxr``) when it is installed. Unusable input is an ``InputError`` that names the path, the
problem and the formats that work; silence is valid audio, not an error.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from math import ceil, gcd
from pathlib import Path
from typing import Union

import numpy as np

from mmedge.errors import EngineUnavailableError, InputError

AudioInput = Union[str, os.PathLike, np.ndarray]

WHISPER_SAMPLING_RATE = 16000
RAW_SUFFIXES = (".raw", ".pcm")
AUDIO_EXTRA = "pip install 'mmedge[audio]'"
# First bytes of the containers libsndfile (soundfile) decodes; WAV is parsed here without it.
_SOUNDFILE_MAGIC = {b"fLaC": "FLAC", b"OggS": "OGG", b"FORM": "AIFF", b"ID3": "MP3", b"RIFX": "WAV (big-endian)",
                    b"RF64": "RF64 WAV"}
_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 1, 3, 0xFFFE


@dataclass(frozen=True)
class RawFormat:
    """How to read headerless PCM: the file says nothing about itself, so the assumption is stated here.

    The default (signed 16-bit little-endian, mono, 16 kHz) is what ``arecord -f S16_LE -r 16000`` and the
    pocketsphinx test data write. ``dtype`` is a numpy dtype string (``"<i2"``, ``"<i4"``, ``"<f4"``, ``"u1"``...).
    """

    sampling_rate: int = WHISPER_SAMPLING_RATE
    dtype: str = "<i2"
    channels: int = 1


def supported_formats() -> str:
    """The audio inputs this installation can read, for error messages."""
    base = ("WAV (8/16/24/32-bit PCM, 32/64-bit float, any rate, mono or multi-channel), raw PCM "
            "(.raw/.pcm, signed 16-bit little-endian mono 16 kHz unless raw_format= says otherwise), numpy arrays")
    if _soundfile() is not None:
        return base + ", FLAC, OGG, MP3, AIFF"
    return base + f"; FLAC/OGG/MP3/AIFF need {AUDIO_EXTRA}"


MIN_SAMPLING_RATE = 1000  # below any real recording (telephone speech is 8 kHz); guards the resampler's output size


def load_audio(source: AudioInput, *, sampling_rate: int = WHISPER_SAMPLING_RATE,
               target_rate: int = WHISPER_SAMPLING_RATE, raw_format: RawFormat | None = None) -> np.ndarray:
    """Return float32 mono samples at ``target_rate`` (16 kHz for Whisper) from a file path or an array.

    ``sampling_rate`` is the rate of an *array* input (files carry their own rate; raw PCM takes it from
    ``raw_format``). Arrays may be 1-D or 2-D (frames × channels or channels × frames: the shorter side, at most
    8, is taken as channels). Integer PCM is scaled to [-1, 1); float data is kept as stored (not clipped, as
    transformers does). Channels are averaged to mono. Files with a ``.raw``/``.pcm`` suffix, or any file when
    ``raw_format`` is given, are read as headerless PCM.
    """
    if isinstance(source, np.ndarray):
        frames, rate = _from_array(source), int(sampling_rate)
        where = "the given array"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        frames, rate = _read_file(path, raw_format)
        where = repr(str(path))
    else:
        raise InputError(f"unsupported audio input of type {type(source).__name__}; give a file path or a numpy "
                         f"array of samples. Supported: {supported_formats()}")
    if frames.shape[0] == 0:
        raise InputError(f"{where} contains no audio samples; give a recording at least a few milliseconds long")
    if rate < MIN_SAMPLING_RATE:  # a damaged or crafted header: resampling 1 Hz to 16 kHz would multiply it 16000x
        raise InputError(f"sampling rate of {where} is {rate} Hz, below {MIN_SAMPLING_RATE} Hz (the header is damaged "
                         "or wrong); give the rate the audio was recorded at (e.g. 16000), or convert the file first "
                         "(`ffmpeg -i IN -ar 16000 OUT.wav`)")
    mono = frames.mean(axis=1, dtype=np.float64).astype(np.float32) if frames.shape[1] > 1 else frames[:, 0]
    if not np.isfinite(mono).all():
        raise InputError(f"{where} contains NaN or infinite samples; give finite audio in [-1, 1]")
    out = resample(mono, rate, target_rate)
    if out.shape[0] == 0:  # soxr rounds a few samples at a higher rate down to none
        raise InputError(f"{where} holds {frames.shape[0]} sample(s) at {rate} Hz, less than one at {target_rate} Hz; "
                         "give a recording at least a few milliseconds long")
    return np.ascontiguousarray(out, dtype=np.float32)


# ------------------------------------------------------------------------------------------------ files


def _bad(path: Path, why: str) -> InputError:
    return InputError(f"cannot read audio {str(path)!r}: {why}. Give a complete audio file in a supported format: "
                      f"{supported_formats()}")


def _read_file(path: Path, raw_format: RawFormat | None) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise InputError(f"audio file not found: {str(path)!r}; give the path of an existing audio file")
    data = memoryview(path.read_bytes())  # slices of a memoryview share the file's bytes: no copy per chunk
    if not data:
        raise _bad(path, "the file is empty (0 bytes)")
    if raw_format is not None or path.suffix.lower() in RAW_SUFFIXES:
        return _decode_raw(data, raw_format or RawFormat(), path)
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _decode_wav(data, path)
    if len(head) < 12 and b"RIFF".startswith(head[:4]):
        raise _bad(path, "truncated or damaged RIFF/WAV header")
    if head[:4] == b"RIFF":  # e.g. a WEBP image or an AVI video
        raise _bad(path, f"a RIFF file of type {head[8:12].decode('latin-1')!r}, not WAVE audio")
    kind = next((name for magic, name in _SOUNDFILE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and _soundfile() is None:
        raise _bad(path, f"not a recognised audio file (starts with bytes {head[:4].hex(' ')})")
    return _read_soundfile(path, kind or "this file")


def _decode_wav(data: memoryview, path: Path) -> tuple[np.ndarray, int]:
    """Parse RIFF/WAVE chunks by hand: Python's ``wave`` module rejects float and WAVE_FORMAT_EXTENSIBLE files."""
    fmt, pcm, pos = None, None, 12
    while pos + 8 <= len(data) and (fmt is None or pcm is None):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8:pos + 8 + size]  # shorter than `size` in files cut off while recording: keep what is there
        if chunk == b"fmt ":
            fmt = body
        elif chunk == b"data":
            pcm = body
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16:
        raise _bad(path, "truncated WAV header (no complete 'fmt ' chunk)")
    if pcm is None:
        raise _bad(path, "WAV file has no 'data' chunk (truncated)")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _WAV_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the SubFormat GUID
    dtype = {(_WAV_PCM, 8): "u1", (_WAV_PCM, 16): "<i2", (_WAV_PCM, 24): "<i3", (_WAV_PCM, 32): "<i4",
             (_WAV_FLOAT, 32): "<f4", (_WAV_FLOAT, 64): "<f8"}.get((tag, bits))
    if channels == 0 or rate == 0:
        raise _bad(path, f"damaged WAV header ({channels} channels, {rate} Hz)")
    if dtype is None:
        if _soundfile() is not None:
            return _read_soundfile(path, "WAV")
        raise _bad(path, f"WAV encoding not supported without the audio extra (format tag {tag:#x}, {bits} bits); "
                         f"{AUDIO_EXTRA} or convert with `ffmpeg -i IN -c:a pcm_s16le OUT.wav`")
    return _pcm_frames(pcm, dtype, channels), rate


def _decode_raw(data: memoryview, fmt: RawFormat, path: Path) -> tuple[np.ndarray, int]:
    try:
        width = np.dtype(fmt.dtype).itemsize
    except TypeError:
        raise InputError(f"raw_format dtype {fmt.dtype!r} is not a numpy dtype; use e.g. '<i2' (s16le)") from None
    if fmt.channels < 1 or len(data) % (width * fmt.channels):
        raise _bad(path, f"raw PCM size {len(data)} bytes is not a whole number of {fmt.channels}-channel "
                         f"{fmt.dtype} frames; pass raw_format=RawFormat(...) describing the file")
    return _pcm_frames(data, fmt.dtype, fmt.channels), fmt.sampling_rate


def _pcm_frames(pcm: memoryview, dtype: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes → float32 (frames, channels); a trailing partial frame is dropped."""
    if dtype == "<i3":  # 24-bit: widen each sample to the top three bytes of an int32
        n = len(pcm) // (3 * channels) * channels
        wide = np.zeros((n, 4), np.uint8)
        wide[:, 1:] = np.frombuffer(pcm, np.uint8, n * 3).reshape(n, 3)
        samples = wide.view("<i4")[:, 0]
        dtype = "<i4"
    else:
        item = np.dtype(dtype).itemsize
        samples = np.frombuffer(pcm, dtype, len(pcm) // (item * channels) * channels)
    return _scale(samples.reshape(-1, channels))


def _scale(samples: np.ndarray) -> np.ndarray:
    """Integer PCM → [-1, 1) float32 (unsigned PCM is offset binary); floats pass through.

    Computed in float32 in place: one float copy of the recording, not three float64 temporaries (an hour at
    16 kHz is 230 MB as float32). The result equals ``float32((x - offset) / half)``: dividing by a power of two is
    exact, and ``x - offset`` is exact in float32 for 8/16/24-bit PCM (32-bit PCM rounds to float32 once either way).
    """
    kind = samples.dtype.kind
    if kind == "f":
        return samples.astype(np.float32)
    if kind not in "iu":
        raise InputError(f"audio samples have dtype {samples.dtype}; give float or integer PCM samples")
    half = 2 ** (8 * samples.dtype.itemsize - 1)
    out = samples.astype(np.float32)
    if kind == "u":
        out -= np.float32(half)
    out *= np.float32(1.0 / half)
    return out


def _from_array(array: np.ndarray) -> np.ndarray:
    if array.size == 0:  # any shape (0,), (0, 2), (2, 0): load_audio reports "no audio samples"
        return np.zeros((0, 1), np.float32)
    if array.ndim == 1:
        return _scale(array[:, None])
    if array.ndim == 2 and min(array.shape) <= 8:
        return _scale(array if array.shape[1] <= array.shape[0] else array.T)
    raise InputError(f"audio array has shape {array.shape}; give 1-D samples or a 2-D frames × channels array")


def _soundfile():
    try:
        import soundfile
    except (ImportError, OSError):  # OSError: the wheel is there but libsndfile is not
        return None
    return soundfile


def _read_soundfile(path: Path, kind: str) -> tuple[np.ndarray, int]:
    sf = _soundfile()
    if sf is None:
        raise EngineUnavailableError(f"reading {kind} audio ({str(path)!r}) needs the soundfile library: "
                                     f"{AUDIO_EXTRA}, or convert it to WAV (`ffmpeg -i IN -ar 16000 OUT.wav`)")
    try:
        frames, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises LibsndfileError/RuntimeError/TypeError
        raise _bad(path, f"not decodable as audio ({' '.join(str(exc).split())})") from None
    return frames, int(rate)


# ------------------------------------------------------------------------------------------- resampling


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample 1-D float32 audio; soxr (``mmedge[audio]``, the same engine as librosa's default) if installed.

    Without soxr a numpy polyphase windowed-sinc filter is used (``_resample_polyphase``): hand-written only so
    that the slim runtime still accepts 8/44.1/48 kHz input on devices where soxr has no wheel or is not wanted.
    """
    if orig_rate == target_rate:
        return samples
    try:
        import soxr
    except ImportError:
        return _resample_polyphase(samples, orig_rate, target_rate)
    return soxr.resample(samples, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def _resample_polyphase(x: np.ndarray, orig_rate: int, target_rate: int, *, zero_crossings: int = 16,
                        beta: float = 8.6, block: int = 1 << 15) -> np.ndarray:
    """Rational resampling (up by L, low-pass, down by M) evaluated only at the output samples.

    The low-pass is a Kaiser-windowed sinc cut at the lower Nyquist (beta 8.6 ≈ 80 dB stop band, 16 zero
    crossings per side) with zero group delay. For output m the contributing inputs i satisfy
    0 ≤ m·M − i·L + half ≤ 2·half, so each output uses K = ceil((2·half+1)/L) taps from one of L filter
    phases.
    """
    g = gcd(orig_rate, target_rate)
    up, down = target_rate // g, orig_rate // g
    half = zero_crossings * max(up, down)
    n = np.arange(-half, half + 1)
    h = np.sinc(n / max(up, down)) * np.kaiser(2 * half + 1, beta) * (up / max(up, down))
    taps = ceil((2 * half + 1) / up)
    idx = 2 * half - np.arange(up)[:, None] - np.arange(taps)[None, :] * up  # phase p, tap k → filter index
    phases = np.where(idx >= 0, h[np.maximum(idx, 0)], 0.0)
    n_out = ceil(len(x) * up / down)
    padded = np.concatenate([np.zeros(taps + 1), x.astype(np.float64), np.zeros(taps + 1)])
    out = np.empty(n_out, np.float32)
    for start in range(0, n_out, block):
        m = np.arange(start, min(start + block, n_out), dtype=np.int64)
        first = -((half - m * down) // up)  # ceil((m·M − half) / L)
        phase = (first * up - (m * down - half)) % up
        gathered = padded[first[:, None] + np.arange(taps)[None, :] + taps + 1]
        out[start:start + len(m)] = np.einsum("bk,bk->b", gathered, phases[phase])
    return out


# ------------------------------------------------------------------------------------------ long audio


@dataclass(frozen=True)
class AudioChunk:
    """One window of a longer recording: ``samples`` is a view into the original array."""

    start: int
    samples: np.ndarray
    sampling_rate: int = WHISPER_SAMPLING_RATE

    @property
    def start_s(self) -> float:
        return self.start / self.sampling_rate

    @property
    def end_s(self) -> float:
        return (self.start + len(self.samples)) / self.sampling_rate


def chunk_audio(samples: np.ndarray, *, sampling_rate: int = WHISPER_SAMPLING_RATE, window_s: float = 30.0,
                overlap_s: float = 0.0) -> list[AudioChunk]:
    """Cut audio into fixed windows (Whisper sees 30 s at a time) that start every ``window_s - overlap_s``.

    Strategy: plain fixed windows, the last one shorter (the feature extractor pads it). ``overlap_s = 0``
    (the default) gives disjoint windows whose transcripts can simply be joined, at the risk of splitting a
    word at a boundary; an overlap (e.g. 5 s) keeps every word whole in at least one window, but the caller
    must then de-duplicate the text in the overlapped parts. Timestamp-guided seeking (OpenAI's sequential
    long-form decoding) needs the decoder and belongs to the pipeline, not here.
    """
    window, step = round(window_s * sampling_rate), round((window_s - overlap_s) * sampling_rate)
    if window <= 0 or overlap_s < 0 or step <= 0:
        raise InputError(f"chunk_audio needs window_s > 0 and 0 <= overlap_s < window_s (got window_s={window_s}, "
                         f"overlap_s={overlap_s})")
    if samples.ndim != 1 or len(samples) == 0:
        raise InputError(f"chunk_audio needs non-empty 1-D samples (got shape {samples.shape}); use load_audio first")
    starts = range(0, max(len(samples) - window, 0) + step, step)
    return [AudioChunk(s, samples[s:s + window], sampling_rate) for s in starts if s < len(samples)]
