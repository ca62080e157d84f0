"""What every numpy scheduler shares: reading a diffusers ``scheduler_config.json``, the training noise schedule
(betas and their cumulative alpha products, in float32 as diffusers computes them), the sigma helpers of the
sigma-based schedulers, and the step counter diffusers keeps (``step_index`` / ``begin_index``).

Why our own code: the slim runtime cannot import diffusers (it needs torch), and no numpy library reproduces
diffusers' schedulers step for step (diffusers' own Flax schedulers need jax and cover other variants). Each
scheduler here mirrors one diffusers class for the options Stable Diffusion pipelines use, in the same float32
arithmetic, and refuses the options it does not implement rather than ignoring them; ``tests/test_schedulers.py``
checks every one against diffusers on the same model-output sequences.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from mmedge.errors import InputError, UsageError

Randn = Callable[[tuple[int, ...]], np.ndarray]  # draws standard-normal float32 noise of a shape

#: Options every scheduler here shares, with the values it implements (None: any value).
COMMON_SUPPORTED: dict[str, tuple | None] = {
    "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "timestep_spacing": ("leading", "trailing", "linspace"),
    "thresholding": (False,),
}


def torch_linspace_f32(start: float, end: float, n: int) -> np.ndarray:
    """``torch.linspace(start, end, n, dtype=torch.float32)`` bit for bit: float32 steps from both ends, each point
    one fused multiply-add (the product of two float32 is exact in float64, then one rounding)."""
    start32, end32 = np.float32(start), np.float32(end)
    if n == 1:
        return np.array([start32], np.float32)
    step = np.float64((end32 - start32) / np.float32(n - 1))
    idx = np.arange(n)
    return np.where(idx < n // 2, np.float64(start32) + step * idx,
                    np.float64(end32) - step * (n - 1 - idx)).astype(np.float32)


def torch_cumprod_f32(x: np.ndarray) -> np.ndarray:
    """``torch.cumprod`` of a float32 vector on CPU: accumulated in float64, stored as float32."""
    return np.cumprod(x.astype(np.float64)).astype(np.float32)


def _cosine_betas(n: int, max_beta: float = 0.999) -> np.ndarray:
    """``squaredcos_cap_v2`` (diffusers' ``betas_for_alpha_bar`` with the cosine alpha-bar), in float64 then float32."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)], np.float32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Betas rescaled to a zero terminal SNR (arXiv 2305.08891, algorithm 1), float32 like diffusers."""
    alphas_bar_sqrt = np.sqrt(torch_cumprod_f32(np.float32(1.0) - betas))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (np.float32(1.0) - alphas).astype(np.float32)


def training_alphas_cumprod(config: dict) -> np.ndarray:
    """The cumulative product of ``1 - beta`` over the training timesteps, float32."""
    n = int(config["num_train_timesteps"])
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], np.float32)
    elif config["beta_schedule"] == "linear":
        betas = torch_linspace_f32(config["beta_start"], config["beta_end"], n)
    elif config["beta_schedule"] == "scaled_linear":
        betas = torch_linspace_f32(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n) ** 2
    else:
        betas = _cosine_betas(n)
    if config.get("rescale_betas_zero_snr"):
        betas = _rescale_zero_terminal_snr(betas)
    return torch_cumprod_f32(np.float32(1.0) - betas)


def karras_sigmas(sigmas: np.ndarray, steps: int, sigma_min: float | None = None,
                  sigma_max: float | None = None, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) noise levels between the schedule's ends (``sigmas`` ordered high to low)."""
    lo = sigma_min if sigma_min is not None else float(sigmas[-1])
    hi = sigma_max if sigma_max is not None else float(sigmas[0])
    ramp = np.linspace(0, 1, steps)
    return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def sigma_to_t(sigma: np.floating, log_sigmas: np.ndarray) -> np.ndarray:
    """The (fractional) training timestep of a noise level, by interpolating in log-sigma."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(np.shape(sigma))


def predicted_original(prediction_type: str, model_output: np.ndarray, sample: np.ndarray,
                       alpha_prod_t: np.float32) -> np.ndarray:
    """x0 from a model output at a timestep with cumulative alpha ``alpha_prod_t`` (DDIM and LCM)."""
    beta_prod_t = np.float32(1.0) - alpha_prod_t
    if prediction_type == "epsilon":
        return (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
    if prediction_type == "v_prediction":
        return alpha_prod_t ** 0.5 * sample - beta_prod_t ** 0.5 * model_output
    return model_output


class Scheduler:
    """Base of the numpy schedulers. ``DEFAULTS`` are the mirrored diffusers class's ``__init__`` defaults: as
    ``from_config``, a config key the class knows overrides its default and the others are ignored.
    ``SUPPORTED`` (with ``COMMON_SUPPORTED``) lists the values implemented; anything else is a ``UsageError``.

    Use as diffusers' pipelines do: ``set_timesteps(n)``, multiply the initial noise by ``init_noise_sigma``,
    then for each ``t`` in ``timesteps``: ``scale_model_input`` → model → ``step``."""

    name = ""
    DEFAULTS: dict[str, Any] = {}
    SUPPORTED: dict[str, tuple | None] = {}
    order = 1

    def __init__(self, config: dict, **overrides: Any):
        self.config = {**self.DEFAULTS, **{k: v for k, v in config.items() if k in self.DEFAULTS}, **overrides}
        for key, allowed in {**COMMON_SUPPORTED, **self.SUPPORTED}.items():
            if key in self.config and allowed is not None and self.config[key] not in allowed:
                raise UsageError(f"the package's scheduler config sets {key}={self.config[key]!r}, which mmedge's "
                                 f"numpy '{self.name}' scheduler does not implement (it supports "
                                 f"{', '.join(map(repr, allowed))}); choose another --scheduler")
        self.num_train_timesteps = int(self.config["num_train_timesteps"])
        self.alphas_cumprod = training_alphas_cumprod(self.config)
        self.timesteps = np.zeros(0)
        self.num_inference_steps = 0
        self.step_index: int | None = None
        self.begin_index: int | None = None

    # ------------------------------------------------------------------------------------------ schedule

    def set_timesteps(self, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) \
                or not 1 <= steps <= self.num_train_timesteps:
            raise InputError(f"steps must be an integer from 1 to {self.num_train_timesteps} (the model's training "
                             f"timesteps), got {steps!r}")
        self.num_inference_steps = int(steps)
        self.step_index = self.begin_index = None
        self._set_timesteps(int(steps))

    def _set_timesteps(self, steps: int) -> None:
        raise NotImplementedError

    def set_begin_index(self, index: int) -> None:
        """Start the step counter at ``index`` (image-to-image skips the first, noisiest steps)."""
        self.begin_index = index

    def index_for_timestep(self, timestep: float) -> int:
        """Position of ``timestep`` in the schedule; the second of two equal entries, as diffusers does."""
        found = np.flatnonzero(self.timesteps == timestep)
        return int(found[1] if len(found) > 1 else found[0])

    def _current_index(self, timestep: float) -> int:
        if self.step_index is None:
            self.step_index = self.begin_index if self.begin_index is not None else self.index_for_timestep(timestep)
        return self.step_index

    # ---------------------------------------------------------------------------------------------- steps

    @property
    def init_noise_sigma(self) -> np.float32:
        return np.float32(1.0)

    def scale_model_input(self, sample: np.ndarray, timestep: float) -> np.ndarray:
        return sample

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray, *,
             randn: Randn | None = None) -> np.ndarray:
        """The sample at the next (less noisy) timestep. ``randn`` draws noise for stochastic schedulers (LCM)."""
        raise NotImplementedError

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: float) -> np.ndarray:
        """``original`` noised to ``timestep`` (the start of image-to-image), for alpha-based schedulers."""
        a = self.alphas_cumprod[int(timestep)]
        return a ** 0.5 * original + (np.float32(1.0) - a) ** 0.5 * noise
