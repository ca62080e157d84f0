"""VITS's length regulation in numpy, between a text encoder graph and a flow + vocoder graph.

VITS decides its speech length from the predicted durations: ``ceil(exp(log_duration) · mask · length_scale)``
frames per token, at least one frame in all, each token's prior mean and log-scale repeated over its frames (the
0/1 monotonic path matmul, exactly), and the prior sample ``means + noise · exp(log_scales) · noise_scale``.
Used by the VITS (``vits_tts``) and Piper (``piper_tts``) pipelines.
"""

from __future__ import annotations

import numpy as np


def durations(log_duration: np.ndarray, mask: np.ndarray, length_scale: float) -> tuple[np.ndarray, int]:
    """Frames per token ([T], from [T] log durations and mask) and the frame count (at least 1)."""
    frames_per_token = np.ceil(np.exp(log_duration) * mask.astype(np.float32) * np.float32(length_scale))
    return frames_per_token, max(int(frames_per_token.sum()), 1)


def expand_prior(frames_per_token: np.ndarray, frames: int, means: np.ndarray, log_scales: np.ndarray,
                 noise_scale: float, rng: np.random.Generator, width: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Prior latents [1, C, width] and frame mask [1, 1, width] from per-token ``means``/``log_scales`` [C, T]:
    ``width`` (a static buffer, default ``frames``) pads with zeros and a zero mask; the noise is drawn for the
    real frames only, so a seed gives the same speech at every width."""
    width = width or frames
    tokens = np.repeat(np.arange(len(frames_per_token)), frames_per_token.astype(np.int64))
    expanded_means = np.zeros((means.shape[0], width), np.float32)
    expanded_scales = np.zeros_like(expanded_means)
    expanded_means[:, :len(tokens)] = means[:, tokens]
    expanded_scales[:, :len(tokens)] = log_scales[:, tokens]
    noise = np.zeros_like(expanded_means)
    noise[:, :frames] = rng.standard_normal((means.shape[0], frames), np.float32)
    latents = expanded_means + noise * np.exp(expanded_scales) * np.float32(noise_scale)
    frame_mask = np.zeros((1, 1, width), np.float32)
    frame_mask[..., :frames] = 1.0
    return latents[None], frame_mask
