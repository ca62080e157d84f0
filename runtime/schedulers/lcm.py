"""Latent Consistency Model sampling (Luo et al. 2023; also LCM-LoRA): numpy mirror of diffusers'
``LCMScheduler``. Each step predicts the clean latents through the consistency boundary condition and, except at
the last step, re-noises them to the next timestep with fresh noise from ``randn`` (the pipeline's seeded RNG,
drawn in the same order as diffusers draws from its generator)."""

from __future__ import annotations

import numpy as np

from mmedge.errors import InputError, UsageError
from mmedge.runtime.schedulers.base import Randn, Scheduler, predicted_original

SIGMA_DATA = 0.5


class LCMScheduler(Scheduler):
    name = "lcm"
    DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "trained_betas": None, "original_inference_steps": 50, "clip_sample": False,
                "clip_sample_range": 1.0, "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "epsilon",
                "thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0,
                "timestep_spacing": "leading", "timestep_scaling": 10.0, "rescale_betas_zero_snr": False}

    def __init__(self, config: dict, **overrides):
        super().__init__(config, **overrides)
        self.final_alpha_cumprod = np.float32(1.0) if self.config["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.original_steps = int(self.config["original_inference_steps"])
        if not 1 <= self.original_steps <= self.num_train_timesteps:
            raise UsageError(f"the scheduler config's original_inference_steps={self.original_steps} must be from 1 "
                             f"to num_train_timesteps={self.num_train_timesteps}")

    def _set_timesteps(self, steps: int) -> None:
        if steps > self.original_steps:
            raise InputError(f"the LCM scheduler takes at most original_inference_steps={self.original_steps} steps "
                             f"(its timesteps are a subset of that schedule), got {steps}; use fewer steps (LCM "
                             "models need 2-8)")
        k = self.num_train_timesteps // self.original_steps
        origin = (np.arange(1, self.original_steps + 1) * k - 1)[::-1]
        picks = np.floor(np.linspace(0, len(origin), num=steps, endpoint=False)).astype(np.int64)
        self.timesteps = np.ascontiguousarray(origin[picks].astype(np.int64))

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray, *,
             randn: Randn | None = None) -> np.ndarray:
        i = self._current_index(timestep)
        t = int(timestep)
        prev = int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else t
        alpha_t = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        scaled = np.float32(t) * np.float32(self.config["timestep_scaling"])
        c_skip = SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2)
        c_out = scaled / (scaled ** 2 + SIGMA_DATA ** 2) ** 0.5
        x0 = predicted_original(self.config["prediction_type"], model_output, sample, alpha_t)
        if self.config["clip_sample"]:
            limit = self.config["clip_sample_range"]
            x0 = np.clip(x0, -limit, limit)
        denoised = c_out * x0 + c_skip * sample
        self.step_index = i + 1
        if i == self.num_inference_steps - 1:
            return denoised
        if randn is None:
            raise InputError("the LCM scheduler re-noises between steps: pass randn (a seeded noise source)")
        noise = randn(model_output.shape)
        return alpha_prev ** 0.5 * denoised + (np.float32(1.0) - alpha_prev) ** 0.5 * noise
