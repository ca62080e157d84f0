"""DDIM (Song et al. 2020), deterministic (eta = 0, what diffusers' Stable Diffusion pipelines use): numpy mirror
of diffusers' ``DDIMScheduler``. Note diffusers' quirk kept on purpose: the previous timestep is always
``t - num_train_timesteps // steps``, whatever the spacing."""

from __future__ import annotations

import numpy as np

from mmedge.runtime.schedulers.base import Randn, Scheduler, predicted_original


class DDIMScheduler(Scheduler):
    name = "ddim"
    DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                "trained_betas": None, "clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0,
                "prediction_type": "epsilon", "thresholding": False, "dynamic_thresholding_ratio": 0.995,
                "clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "leading",
                "rescale_betas_zero_snr": False}

    def __init__(self, config: dict, **overrides):
        super().__init__(config, **overrides)
        self.final_alpha_cumprod = np.float32(1.0) if self.config["set_alpha_to_one"] else self.alphas_cumprod[0]

    def _set_timesteps(self, steps: int) -> None:
        n, spacing = self.num_train_timesteps, self.config["timestep_spacing"]
        if spacing == "linspace":
            timesteps = np.linspace(0, n - 1, steps).round()[::-1].astype(np.int64)
        elif spacing == "leading":
            timesteps = (np.arange(0, steps) * (n // steps)).round()[::-1].astype(np.int64) + self.config["steps_offset"]
        else:
            timesteps = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
        self.timesteps = np.ascontiguousarray(timesteps)

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray, *,
             randn: Randn | None = None) -> np.ndarray:
        t = int(timestep)
        prev = t - self.num_train_timesteps // self.num_inference_steps
        alpha_t = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        beta_t = np.float32(1.0) - alpha_t
        x0 = predicted_original(self.config["prediction_type"], model_output, sample, alpha_t)
        if self.config["prediction_type"] == "epsilon":
            eps = model_output
        elif self.config["prediction_type"] == "v_prediction":
            eps = alpha_t ** 0.5 * model_output + beta_t ** 0.5 * sample
        else:
            eps = (sample - alpha_t ** 0.5 * x0) / beta_t ** 0.5
        if self.config["clip_sample"]:
            limit = self.config["clip_sample_range"]
            x0 = np.clip(x0, -limit, limit)
        return alpha_prev ** 0.5 * x0 + (np.float32(1.0) - alpha_prev) ** 0.5 * eps
