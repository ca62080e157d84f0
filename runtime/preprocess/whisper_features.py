"""Whisper log-mel features in numpy, equal to transformers' ``WhisperFeatureExtractor`` (numpy path) to ≤ 1e-5.

Why: an exported Whisper encoder is only as good as its input, and the runtime may not import transformers.
The steps mirror ``transformers.audio_utils.spectrogram`` as the feature extractor calls it: pad/truncate to
``n_samples`` with ``padding_value``, centre reflect padding of ``n_fft // 2``, periodic Hann window, float64
rFFT, power spectrum, the stored mel filter bank, ``log10(max(mel, 1e-10))``, dropping the last frame, clamping
to (global max − 8) and ``(x + 4) / 4``. Framing and the FFT are vectorised (one ``rfft`` over all frames,
~3001 × 400) instead of HF's per-frame loop; everything stays float64 until the end, as HF does.
The mel filter bank comes from the package (``mel_filters.npy``, written from HF's ``mel_filters``); without
one, ``mel_filter_bank`` builds the same Slaney bank (agrees with HF's to float rounding).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from mmedge.errors import InputError, PackageError

LOG_FLOOR = 1e-10  # HF's mel_floor: log10 of silence is -10, never -inf
DYNAMIC_RANGE = 8.0  # log10 units kept below the loudest bin (80 dB)


@dataclass(frozen=True)
class WhisperFeatureConfig:
    """The keys of HF's ``preprocessor_config.json`` that change the numbers (defaults: Whisper tiny..medium)."""

    feature_size: int = 80
    sampling_rate: int = 16000
    hop_length: int = 160
    chunk_length: int = 30
    n_fft: int = 400
    n_samples: int = 480000
    nb_max_frames: int = 3000
    padding_value: float = 0.0

    def validate(self) -> None:
        """Reject configs whose numbers disagree with each other (a damaged or hand-edited package)."""
        if min(self.feature_size, self.sampling_rate, self.hop_length, self.n_fft, self.n_samples) <= 0:
            raise PackageError(f"Whisper feature config has a non-positive size: {self}; re-export the package")
        if self.nb_max_frames != self.n_samples // self.hop_length:
            raise PackageError(f"Whisper feature config: nb_max_frames {self.nb_max_frames} != n_samples // "
                               f"hop_length ({self.n_samples // self.hop_length}); re-export the package")


class WhisperFeatures:
    """Callable: 1-D float samples at ``sampling_rate`` → float32 ``[1, feature_size, nb_max_frames]``."""

    def __init__(self, config: WhisperFeatureConfig | Mapping[str, Any] | None = None,
                 mel_filters: np.ndarray | None = None):
        cfg = config if isinstance(config, WhisperFeatureConfig) else _config_from_dict(config or {})
        cfg.validate()
        self.config = cfg
        bins = cfg.n_fft // 2 + 1
        if mel_filters is None:
            mel_filters = mel_filter_bank(cfg.feature_size, cfg.n_fft, cfg.sampling_rate)
        mel_filters = np.asarray(mel_filters)
        if mel_filters.shape != (bins, cfg.feature_size) or mel_filters.dtype.kind != "f":
            raise PackageError(f"mel filter bank has shape {mel_filters.shape} ({mel_filters.dtype}); expected float "
                               f"({bins}, {cfg.feature_size}) for n_fft={cfg.n_fft}: re-export the package")
        self._mel_t = np.ascontiguousarray(mel_filters.T, dtype=np.float64)  # (n_mels, bins)
        # Periodic Hann, as transformers' window_function(n_fft, "hann") and torch.hann_window build it.
        self._window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.n_fft) / cfg.n_fft)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], mel_filters: np.ndarray | None = None) -> "WhisperFeatures":
        """Build from a ``preprocessor_config.json`` dict; unknown keys (processor_class, ...) are ignored."""
        return cls(_config_from_dict(config), mel_filters)

    def to_config(self) -> dict[str, Any]:
        """The HF ``preprocessor_config.json`` keys this extractor uses (enough to rebuild it)."""
        return {"feature_extractor_type": "WhisperFeatureExtractor", **asdict(self.config)}

    @property
    def mel_filters(self) -> np.ndarray:
        """The filter bank in HF's layout, ``(n_fft // 2 + 1, feature_size)``."""
        return self._mel_t.T

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        cfg = self.config
        samples = np.asarray(samples)
        if samples.ndim != 1 or samples.dtype.kind != "f":
            raise InputError(f"Whisper features need 1-D float samples at {cfg.sampling_rate} Hz (got "
                             f"{samples.dtype} {samples.shape}); use mmedge.runtime.preprocess.audio.load_audio")
        # HF pads/truncates float32 samples, then computes in float64.
        audio = np.full(cfg.n_samples, cfg.padding_value, np.float64)
        n = min(len(samples), cfg.n_samples)
        audio[:n] = samples[:n].astype(np.float32)
        half = cfg.n_fft // 2
        padded = np.pad(audio, half, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[::cfg.hop_length]
        active = self._active_frames(n)  # HF computes one more frame (nb_max_frames + 1) and drops it
        spectrum = np.fft.rfft(frames[:active] * self._window, axis=1)
        power = spectrum.real ** 2 + spectrum.imag ** 2  # (frames, bins)
        log_spec = np.full((cfg.feature_size, cfg.nb_max_frames), np.log10(LOG_FLOOR))
        log_spec[:, :active] = np.log10(np.maximum(self._mel_t @ power.T, LOG_FLOOR))
        log_spec = np.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)[None]

    def _active_frames(self, n: int) -> int:
        """Frames that can see a sample of the audio; the rest window only zero padding.

        Their power is exactly 0, so their log-mel is exactly log10(1e-10) as in HF: skipping their FFT
        changes no number and makes a 5 s clip ~6× cheaper. Only valid for zero padding that the end
        reflection never reaches, else every frame is computed.
        """
        cfg = self.config
        if cfg.padding_value != 0.0 or n > cfg.n_samples - cfg.n_fft:
            return cfg.nb_max_frames
        return min(cfg.nb_max_frames, -(-(n + cfg.n_fft // 2) // cfg.hop_length))


def _config_from_dict(config: Mapping[str, Any]) -> WhisperFeatureConfig:
    if float(config.get("dither", 0.0) or 0.0) != 0.0:
        raise PackageError("Whisper feature config sets dither != 0 (random noise): the runtime computes "
                           "deterministic features only; export with dither=0.0")
    known = {f.name for f in fields(WhisperFeatureConfig)}
    values = {k: config[k] for k in known if k in config}
    try:
        cfg = WhisperFeatureConfig(**values)
        return WhisperFeatureConfig(**{f.name: type(f.default)(getattr(cfg, f.name))
                                       for f in fields(WhisperFeatureConfig)})
    except (TypeError, ValueError) as exc:
        raise PackageError(f"Whisper feature config has an invalid value ({exc}): re-export the package") from None


def load_mel_filters(path: Union[str, os.PathLike]) -> np.ndarray:
    """Load a package's ``mel_filters.npy`` without unpickling (the runtime never unpickles)."""
    try:
        array = np.load(Path(path), allow_pickle=False)
    except FileNotFoundError:
        raise PackageError(f"mel filter bank not found: {str(path)!r}; re-export the package") from None
    except (ValueError, OSError) as exc:
        raise PackageError(f"cannot read mel filter bank {str(path)!r} ({exc}); re-export the package") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype.kind != "f":
        raise PackageError(f"mel filter bank {str(path)!r} is not a 2-D float array; re-export the package")
    return array


def mel_filter_bank(n_mels: int = 80, n_fft: int = 400, sampling_rate: int = 16000) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters from 0 Hz to Nyquist, ``(n_fft // 2 + 1, n_mels)``.

    The bank OpenAI Whisper (via librosa) and HF's ``mel_filter_bank(..., norm="slaney", mel_scale="slaney")``
    use; a fallback for packages that do not ship ``mel_filters.npy``.
    """
    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        hz = np.asarray(hz, np.float64)
        mel = 3.0 * hz / 200.0
        log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * (27.0 / np.log(6.4))
        return np.where(hz >= 1000.0, log_part, mel)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        lin = 200.0 * mel / 3.0
        return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), lin)

    fft_freqs = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)
    mel_points = np.linspace(hz_to_mel(0.0), hz_to_mel(sampling_rate / 2), n_mels + 2)
    edges = mel_to_hz(mel_points)
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]  # (bins, n_mels + 2)
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]
