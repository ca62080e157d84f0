"""Audio loading and Whisper features for the slim runtime, against soundfile/soxr and transformers.

Files are written here in every WAV flavour devices produce; real speech comes from Debian's
pocketsphinx-testdata (LibriVox clips, raw PCM), installed by .ci/run. Features must equal
``WhisperFeatureExtractor``'s numpy path to ≤ 1e-5 (measured ≈ 1.2e-7).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import EngineUnavailableError, InputError, PackageError
from mmedge.runtime.preprocess import audio as audio_mod
from mmedge.runtime.preprocess.audio import RawFormat, chunk_audio, load_audio, resample
from mmedge.runtime.preprocess.whisper_features import (WhisperFeatureConfig, WhisperFeatures, load_mel_filters,
                                                        mel_filter_bank)

PS_DATA = Path("/usr/share/pocketsphinx/test/data")
LIBRIVOX = sorted((PS_DATA / "librivox").glob("*.wav"))
RAW_FILES = sorted(PS_DATA.glob("*.raw"))
needs_testdata = pytest.mark.skipif(not LIBRIVOX, reason="apt-get install pocketsphinx-testdata (done by .ci/run)")
ATOL = 1e-5


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def write_wav(path: Path, frames: np.ndarray, rate: int, bits: int, *, float_data: bool = False,
              extensible: bool = False) -> Path:
    """A WAV writer independent of the reader under test: float frames (n, channels) → PCM/float bytes."""
    frames = frames.reshape(len(frames), -1) if frames.ndim == 1 else frames
    channels = frames.shape[1]
    if float_data:
        pcm = frames.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 8:
        pcm = np.clip(np.round(frames * 128 + 128), 0, 255).astype("u1").tobytes()
    else:
        ints = np.clip(np.round(frames.astype(np.float64) * 2 ** (bits - 1)), -2 ** (bits - 1), 2 ** (bits - 1) - 1)
        wide = ints.astype("<i4")
        pcm = wide.tobytes() if bits == 32 else (wide.astype("<i2").tobytes() if bits == 16 else
                                                  wide.view("u1").reshape(-1, 4)[:, :3].tobytes())
    tag = 3 if float_data else 1
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits)
    if extensible:  # cbSize, valid bits, channel mask, SubFormat GUID (tag + KSDATAFORMAT suffix)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


# ----------------------------------------------------------------------------------------- WAV flavours


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
def test_int_pcm_wav_matches_soundfile(tmp_path: Path, bits: int) -> None:
    sf = pytest.importorskip("soundfile")
    path = write_wav(tmp_path / f"s{bits}.wav", tone(440, 16000, 0.5, 0.9), 16000, bits)
    ours = load_audio(path)
    theirs, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and ours.dtype == np.float32 and ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-6
    assert np.abs(ours - tone(440, 16000, 0.5, 0.9)).max() <= 1.5 / 2 ** (bits - 1)  # quantisation only


@pytest.mark.parametrize("bits", [32, 64])
def test_float_wav_is_read_as_stored(tmp_path: Path, bits: int) -> None:
    samples = tone(300, 16000, 0.25)
    assert np.array_equal(load_audio(write_wav(tmp_path / "f.wav", samples, 16000, bits, float_data=True)), samples)


def test_extensible_24bit_stereo_is_averaged(tmp_path: Path) -> None:
    left, right = tone(440, 16000, 0.5, 0.6), tone(660, 16000, 0.5, 0.3)
    path = write_wav(tmp_path / "ext.wav", np.stack([left, right], axis=1), 16000, 24, extensible=True)
    assert np.abs(load_audio(path) - (left + right) / 2).max() <= 2e-7


def test_silence_is_valid_audio(tmp_path: Path) -> None:
    samples = load_audio(write_wav(tmp_path / "silence.wav", np.zeros(8000, np.float32), 16000, 16))
    assert samples.shape == (8000,) and not samples.any()
    assert np.isfinite(WhisperFeatures()(samples)).all()


# ------------------------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("rate", [8000, 44100])
def test_resampled_wav_keeps_frequency_and_energy(tmp_path: Path, rate: int) -> None:
    samples = load_audio(write_wav(tmp_path / "r.wav", tone(1000, rate, 2.0), rate, 16))
    assert abs(len(samples) - 32000) <= 1
    reference = tone(1000, 16000, 2.0)[: len(samples)]
    middle = slice(800, -800)  # away from the filter's edge transients
    assert np.abs(samples[middle] - reference[middle]).max() <= 1e-3
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16000 / len(samples) - 1000) <= 1


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_numpy_fallback_resampler_agrees_with_soxr(rate: int) -> None:
    soxr = pytest.importorskip("soxr")
    rng = np.random.default_rng(rate)  # 20 tones well inside both pass bands (< 0.4 × the lower rate)
    freqs, phases = rng.uniform(50, 0.4 * min(rate, 16000), 20), rng.uniform(0, 2 * np.pi, 20)
    t = np.arange(rate) / rate
    x = (0.04 * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0).astype(np.float32)
    ours, theirs = audio_mod._resample_polyphase(x, rate, 16000), soxr.resample(x, rate, 16000)
    assert len(ours) == len(theirs)
    middle = slice(400, -400)
    assert np.abs(ours[middle] - theirs[middle]).max() <= 1e-3 * np.abs(x).max()
    sine = tone(1000, rate, 1.0)
    assert np.abs(audio_mod._resample_polyphase(sine, rate, 16000)[middle]
                  - tone(1000, 16000, 1.0)[middle]).max() <= 5e-5


def test_resampling_removes_what_16khz_cannot_hold() -> None:
    alias = tone(12000, 44100, 1.0)  # above the 8 kHz Nyquist: must vanish, not fold down to 4 kHz
    assert np.sqrt(np.mean(resample(alias, 44100, 16000)[400:-400] ** 2)) <= 1e-3
    assert np.sqrt(np.mean(audio_mod._resample_polyphase(alias, 44100, 16000)[400:-400] ** 2)) <= 1e-3


# -------------------------------------------------------------------------------------- raw, FLAC, arrays


@needs_testdata
@pytest.mark.parametrize("path", RAW_FILES, ids=lambda p: p.name)
def test_pocketsphinx_raw_is_s16le_16k(path: Path) -> None:
    expected = np.fromfile(path, "<i2").astype(np.float32) / 32768
    assert np.array_equal(load_audio(path), expected)


def test_raw_format_is_overridable(tmp_path: Path) -> None:
    stereo = np.stack([tone(500, 8000, 1.0), tone(500, 8000, 1.0)], axis=1)
    path = tmp_path / "capture.bin"
    path.write_bytes(stereo.astype("<f4").tobytes())
    samples = load_audio(path, raw_format=RawFormat(sampling_rate=8000, dtype="<f4", channels=2))
    assert abs(len(samples) - 16000) <= 1
    odd = tmp_path / "odd.raw"
    odd.write_bytes(b"\x00\x01\x02")
    with pytest.raises(InputError, match="whole number"):
        load_audio(odd)


def test_flac_via_soundfile(tmp_path: Path) -> None:
    sf = pytest.importorskip("soundfile")
    ints = (tone(440, 22050, 1.0) * 32767).astype(np.int16)
    sf.write(tmp_path / "a.flac", ints, 22050, subtype="PCM_16")
    samples = load_audio(tmp_path / "a.flac")
    expected = resample(ints.astype(np.float32) / 32768, 22050, 16000)
    assert np.abs(samples - expected).max() <= 1e-6


def test_flac_without_soundfile_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.flac").write_bytes(b"fLaC" + bytes(64))
    monkeypatch.setattr(audio_mod, "_soundfile", lambda: None)
    with pytest.raises(EngineUnavailableError, match=r"mmedge\[audio\]"):
        load_audio(tmp_path / "a.flac")


def test_arrays_any_dtype_layout_and_rate() -> None:
    mono = tone(440, 16000, 0.5)
    ints = (mono * 32768).clip(-32768, 32767).astype(np.int16)
    assert np.abs(load_audio(ints) - mono).max() <= 1 / 32768
    assert np.array_equal(load_audio(mono.astype(np.float64)), mono)
    assert np.array_equal(load_audio(np.stack([mono, mono])), mono)  # channels × frames
    assert np.array_equal(load_audio(np.stack([mono, mono], axis=1)), mono)  # frames × channels
    assert abs(len(load_audio(tone(440, 8000, 0.5), sampling_rate=8000)) - 8000) <= 1
    for bad, why in [(np.zeros((2, 3, 4)), "shape"), (np.array([0.1, np.nan]), "NaN"),
                     (np.zeros(0, np.float32), "no audio samples"), (np.array(["a"]), "dtype")]:
        with pytest.raises(InputError, match=why):
            load_audio(bad)
    with pytest.raises(InputError, match="file path or a numpy"):
        load_audio([0.0, 0.1])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- errors


def test_unusable_files_are_input_errors_naming_path_and_formats(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    good = write_wav(tmp_path / "good.wav", tone(440, 16000, 0.1), 16000, 16).read_bytes()
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "header.wav").write_bytes(good[:30])
    (tmp_path / "riff.wav").write_bytes(b"RIFF")
    (tmp_path / "nodata.wav").write_bytes(good[:36])
    Image.new("RGB", (8, 8), "red").save(tmp_path / "photo.wav", format="JPEG")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "webp.wav", format="WEBP")
    write_wav(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), 16000, 16)
    cases = {"missing.wav": "not found", "empty.wav": "empty", "header.wav": "truncated WAV header",
             "riff.wav": "truncated or damaged", "nodata.wav": "no 'data' chunk",
             "photo.wav": "not (a recognised audio|decodable)", "webp.wav": "'WEBP', not WAVE audio",
             "zero.wav": "no audio samples"}
    for with_soundfile in (True, False):
        if not with_soundfile:
            monkeypatch.setattr(audio_mod, "_soundfile", lambda: None)
        for name, why in cases.items():
            with pytest.raises(InputError, match=why) as err:
                load_audio(tmp_path / name)
            assert name in str(err.value)
            if name not in ("missing.wav", "zero.wav"):
                assert "WAV (8/16/24/32-bit PCM" in str(err.value)  # names what works


def test_truncated_data_keeps_the_whole_frames(tmp_path: Path) -> None:
    good = write_wav(tmp_path / "good.wav", tone(440, 16000, 0.1), 16000, 16).read_bytes()
    (tmp_path / "cut.wav").write_bytes(good[:-101])  # recorder killed mid-write: odd byte dropped, 1550 frames
    assert len(load_audio(tmp_path / "cut.wav")) == (len(good) - 101 - 44) // 2


# ------------------------------------------------------------------------------------------- long audio


def test_chunk_audio_windows() -> None:
    samples = np.zeros(70 * 16000, np.float32)
    chunks = chunk_audio(samples)
    assert [(c.start_s, c.end_s) for c in chunks] == [(0, 30), (30, 60), (60, 70)]
    assert np.shares_memory(chunks[1].samples, samples)
    assert [c.start_s for c in chunk_audio(samples, overlap_s=5)] == [0, 25, 50]
    assert len(chunk_audio(samples[: 60 * 16000])) == 2 and len(chunk_audio(samples[:100])) == 1
    for kwargs in ({"window_s": 0}, {"overlap_s": 30}, {"overlap_s": -1}):
        with pytest.raises(InputError):
            chunk_audio(samples, **kwargs)


# --------------------------------------------------------------------------------------- Whisper features


@pytest.fixture(scope="module")
def hf_extractor():
    transformers = pytest.importorskip("transformers")
    return transformers.WhisperFeatureExtractor()


def hf_numpy_features(extractor, samples: np.ndarray) -> np.ndarray:
    """transformers' numpy path (it takes the torch path whenever torch is importable)."""
    import transformers.models.whisper.feature_extraction_whisper as fe

    original = fe.is_torch_available
    fe.is_torch_available = lambda: False
    try:
        return extractor(samples, sampling_rate=16000, return_tensors="np").input_features
    finally:
        fe.is_torch_available = original


SYNTHETIC = {
    "silence": lambda: np.zeros(16000, np.float32),
    "sine": lambda: tone(440, 16000, 5.0),
    "noise": lambda: np.random.default_rng(0).standard_normal(16000 * 12).astype(np.float32) * 0.1,
    "short-click": lambda: np.r_[np.zeros(100), 1.0, np.zeros(58)].astype(np.float32),
    "quiet": lambda: tone(3000, 16000, 2.0, 1e-4),
    "full-30s": lambda: tone(200, 16000, 30.0, 0.3),
    "long-40s-truncated": lambda: np.random.default_rng(1).uniform(-1, 1, 16000 * 40).astype(np.float32),
    **{f"len-{n}": (lambda n=n: np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32))
       for n in (1, 160, 161, 480000 - 400, 480000 - 399)},
}


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_features_match_transformers_numpy_path(hf_extractor, name: str) -> None:
    samples = SYNTHETIC[name]()
    ours = WhisperFeatures.from_config(hf_extractor.to_dict(), hf_extractor.mel_filters)(samples)
    theirs = hf_numpy_features(hf_extractor, samples)
    assert ours.shape == theirs.shape == (1, 80, 3000) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= ATOL


@needs_testdata
@pytest.mark.parametrize("path", LIBRIVOX + RAW_FILES, ids=lambda p: p.name)
def test_features_on_real_speech(hf_extractor, path: Path) -> None:
    samples = load_audio(path)
    ours = WhisperFeatures(mel_filters=hf_extractor.mel_filters)(samples)
    assert np.abs(ours - hf_numpy_features(hf_extractor, samples)).max() <= ATOL
    # transformers' default (torch STFT, float32) path differs from its own numpy path by ~2e-5
    torch_path = hf_extractor(samples, sampling_rate=16000, return_tensors="np").input_features
    assert np.abs(ours - torch_path).max() <= 1e-4


def test_feature_config_round_trip_and_mel_bank(hf_extractor, tmp_path: Path) -> None:
    features = WhisperFeatures.from_config(hf_extractor.to_dict())
    config = features.to_config()
    assert {k: v for k, v in hf_extractor.to_dict().items() if k in config} == config
    assert np.abs(mel_filter_bank() - hf_extractor.mel_filters).max() <= 1e-12
    big = pytest.importorskip("transformers").WhisperFeatureExtractor(feature_size=128)
    assert np.abs(mel_filter_bank(128) - big.mel_filters).max() <= 1e-12
    np.save(tmp_path / "mel.npy", hf_extractor.mel_filters)
    assert np.array_equal(load_mel_filters(tmp_path / "mel.npy"), hf_extractor.mel_filters)


def test_bad_feature_inputs_and_configs(tmp_path: Path) -> None:
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for path in (tmp_path / "pickled.npy", tmp_path / "missing.npy"):
        with pytest.raises(PackageError):
            load_mel_filters(path)
    with pytest.raises(PackageError, match="shape"):
        WhisperFeatures(mel_filters=np.zeros((200, 80)))
    with pytest.raises(PackageError, match="dither"):
        WhisperFeatures.from_config({"dither": 1.0})
    with pytest.raises(PackageError, match="nb_max_frames"):
        WhisperFeatures(WhisperFeatureConfig(nb_max_frames=1000))
    with pytest.raises(InputError, match="load_audio"):
        WhisperFeatures()(np.zeros(100, np.int16))


# ----------------------------------------------------------------------------------------- slim runtime

SLIM = textwrap.dedent("""
    import sys
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "transformers", "soundfile", "soxr", "scipy", "librosa"}:
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Blocker())
    import numpy as np
    from mmedge.errors import EngineUnavailableError
    from mmedge.runtime.preprocess.audio import load_audio
    from mmedge.runtime.preprocess.whisper_features import WhisperFeatures
    samples = load_audio(sys.argv[1])
    assert abs(len(samples) - 16000) <= 1, len(samples)
    assert WhisperFeatures()(samples).shape == (1, 80, 3000)
    try:
        load_audio(sys.argv[2])
    except EngineUnavailableError as exc:
        assert "mmedge[audio]" in str(exc)
    else:
        raise SystemExit("FLAC without soundfile did not fail")
    heavy = [m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "soundfile", "soxr"}]
    assert not heavy, heavy
    print("ok")
""")


def test_audio_runtime_works_with_numpy_only(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "cd.wav", tone(440, 44100, 1.0), 44100, 16)
    (tmp_path / "a.flac").write_bytes(b"fLaC" + bytes(64))
    proc = subprocess.run([sys.executable, "-c", SLIM, str(wav), str(tmp_path / "a.flac")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
