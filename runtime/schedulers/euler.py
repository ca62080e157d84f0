"""Euler (Karras et al. 2022, algorithm 2 without churn): numpy mirror of diffusers' ``EulerDiscreteScheduler``.

Sigma-based: the model input is scaled by ``1 / sqrt(sigma^2 + 1)`` and the timesteps fed to the UNet are
fractional for ``linspace`` spacing and Karras sigmas (hence the float32 ``timestep`` input of the UNet)."""

from __future__ import annotations

import numpy as np

from mmedge.runtime.schedulers.base import Randn, Scheduler, karras_sigmas, sigma_to_t


def training_sigmas(alphas_cumprod: np.ndarray) -> np.ndarray:
    """Noise level of every training timestep, float32 (low to high)."""
    return ((np.float32(1.0) - alphas_cumprod) / alphas_cumprod) ** 0.5


def spaced_float_timesteps(config: dict, steps: int) -> np.ndarray:
    """The ``timestep_spacing`` of diffusers' sigma schedulers (Euler), as float32 timesteps from high to low."""
    n, spacing = int(config["num_train_timesteps"]), config["timestep_spacing"]
    if spacing == "linspace":
        return np.linspace(0, n - 1, steps, dtype=np.float32)[::-1].copy()
    if spacing == "leading":
        return (np.arange(0, steps) * (n // steps)).round()[::-1].astype(np.float32) + config["steps_offset"]
    return np.arange(n, 0, -n / steps).round().astype(np.float32) - 1


class EulerScheduler(Scheduler):
    name = "euler"
    DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                "trained_betas": None, "prediction_type": "epsilon", "interpolation_type": "linear",
                "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
                "sigma_min": None, "sigma_max": None, "timestep_spacing": "linspace", "timestep_type": "discrete",
                "steps_offset": 0, "rescale_betas_zero_snr": False, "final_sigmas_type": "zero"}
    SUPPORTED = {"interpolation_type": ("linear",), "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,),
                 "timestep_type": ("discrete",), "final_sigmas_type": ("zero", "sigma_min")}

    def __init__(self, config: dict, **overrides):
        super().__init__(config, **overrides)
        if self.config["rescale_betas_zero_snr"]:
            self.alphas_cumprod[-1] = 2.0 ** -24  # as diffusers: a finite last sigma
        self.sigmas = np.append(training_sigmas(self.alphas_cumprod)[::-1], np.float32(0.0))

    def _set_timesteps(self, steps: int) -> None:
        timesteps = spaced_float_timesteps(self.config, steps)
        table = training_sigmas(self.alphas_cumprod)
        sigmas = np.interp(timesteps, np.arange(0, len(table)), table)
        if self.config["use_karras_sigmas"]:
            sigmas = karras_sigmas(sigmas, steps, self.config["sigma_min"], self.config["sigma_max"])
            log_sigmas = np.log(table)
            timesteps = np.array([sigma_to_t(s, log_sigmas) for s in sigmas])
        last = table[0] if self.config["final_sigmas_type"] == "sigma_min" else 0
        self.sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        self.timesteps = timesteps.astype(np.float32)

    @property
    def init_noise_sigma(self) -> np.float32:
        top = self.sigmas.max()
        return top if self.config["timestep_spacing"] in ("linspace", "trailing") else (top ** 2 + 1) ** 0.5

    def scale_model_input(self, sample: np.ndarray, timestep: float) -> np.ndarray:
        sigma = self.sigmas[self._current_index(timestep)]
        return sample / (sigma ** 2 + 1) ** 0.5

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray, *,
             randn: Randn | None = None) -> np.ndarray:
        i = self._current_index(timestep)
        sample = sample.astype(np.float32, copy=False)
        sigma = self.sigmas[i]
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            x0 = sample - sigma * model_output
        elif kind == "v_prediction":
            x0 = model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + sample / (sigma ** 2 + 1)
        else:
            x0 = model_output
        derivative = (sample - x0) / sigma
        self.step_index = i + 1
        return sample + derivative * (self.sigmas[i + 1] - sigma)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: float) -> np.ndarray:
        i = self.index_for_timestep(timestep) if self.begin_index is None else (
            self.step_index if self.step_index is not None else self.begin_index)
        return original + noise * self.sigmas[i]
