"""DPM-Solver++ multistep (Lu et al. 2022; "DPM++ 2M" at order 2): numpy mirror of diffusers'
``DPMSolverMultistepScheduler`` with ``algorithm_type="dpmsolver++"`` (the deterministic data-prediction solver),
midpoint or Heun second-order updates, orders 1-3, lower-order warm-up and final steps, Karras sigmas."""

from __future__ import annotations

import numpy as np

from mmedge.runtime.schedulers.base import Randn, Scheduler, karras_sigmas, sigma_to_t
from mmedge.runtime.schedulers.euler import training_sigmas


def _alpha_sigma(sigma: np.float32) -> tuple[np.float32, np.float32]:
    alpha = 1 / (sigma ** 2 + 1) ** 0.5
    return alpha, sigma * alpha


def _lambda(alpha: np.float32, sigma: np.float32) -> np.float32:
    with np.errstate(divide="ignore"):  # the final sigma 0 gives lambda = +inf, as in diffusers
        return np.log(alpha) - np.log(sigma)


class DPMSolverScheduler(Scheduler):
    name = "dpm++2m"
    DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                "trained_betas": None, "solver_order": 2, "prediction_type": "epsilon", "thresholding": False,
                "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++",
                "solver_type": "midpoint", "lower_order_final": True, "euler_at_final": False,
                "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
                "use_lu_lambdas": False, "use_flow_sigmas": False, "flow_shift": 1.0, "final_sigmas_type": "zero",
                "lambda_min_clipped": -float("inf"), "variance_type": None, "timestep_spacing": "linspace",
                "steps_offset": 0, "rescale_betas_zero_snr": False, "use_dynamic_shifting": False,
                "time_shift_type": "exponential"}
    SUPPORTED = {"algorithm_type": ("dpmsolver++",), "solver_type": ("midpoint", "heun"), "solver_order": (1, 2, 3),
                 "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,), "use_lu_lambdas": (False,),
                 "use_flow_sigmas": (False,), "variance_type": (None,), "final_sigmas_type": ("zero", "sigma_min"),
                 "use_dynamic_shifting": (False,)}

    def __init__(self, config: dict, **overrides):
        super().__init__(config, **overrides)
        if self.config["rescale_betas_zero_snr"]:
            self.alphas_cumprod[-1] = 2.0 ** -24
        self.order_max = int(self.config["solver_order"])
        self.sigmas = training_sigmas(self.alphas_cumprod)
        self.model_outputs: list[np.ndarray | None] = [None] * self.order_max
        self.lower_order_nums = 0

    def _set_timesteps(self, steps: int) -> None:
        c, n = self.config, self.num_train_timesteps
        lambdas = _lambda(np.sqrt(self.alphas_cumprod), np.sqrt(np.float32(1.0) - self.alphas_cumprod))
        last = n - int(np.searchsorted(lambdas[::-1], c["lambda_min_clipped"]))
        if c["timestep_spacing"] == "linspace":
            timesteps = np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
        elif c["timestep_spacing"] == "leading":
            ratio = last // (steps + 1)
            timesteps = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + c["steps_offset"]
        else:
            timesteps = np.arange(last, 0, -n / steps).round().astype(np.int64) - 1
        table = training_sigmas(self.alphas_cumprod)
        if c["use_karras_sigmas"]:
            sigmas = karras_sigmas(table[::-1].copy(), steps)
            timesteps = np.array([sigma_to_t(s, np.log(table)) for s in sigmas])
            if c["beta_schedule"] != "squaredcos_cap_v2":
                timesteps = timesteps.round()
        else:
            sigmas = np.interp(timesteps, np.arange(0, len(table)), table)
        last_sigma = table[0] if c["final_sigmas_type"] == "sigma_min" else 0
        self.sigmas = np.concatenate([sigmas, [last_sigma]]).astype(np.float32)
        self.timesteps = np.ascontiguousarray(timesteps.astype(np.int64))
        self.num_inference_steps = len(self.timesteps)
        self.model_outputs = [None] * self.order_max
        self.lower_order_nums = 0

    def index_for_timestep(self, timestep: float) -> int:
        found = np.flatnonzero(self.timesteps == timestep)
        if not len(found):
            return len(self.timesteps) - 1
        return int(found[1] if len(found) > 1 else found[0])

    def _data_prediction(self, model_output: np.ndarray, sample: np.ndarray, i: int) -> np.ndarray:
        kind = self.config["prediction_type"]
        if kind == "sample":
            return model_output
        alpha, sigma = _alpha_sigma(self.sigmas[i])
        if kind == "epsilon":
            return (sample - sigma * model_output) / alpha
        return alpha * sample - sigma * model_output

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray, *,
             randn: Randn | None = None) -> np.ndarray:
        i = self._current_index(timestep)
        count, c = len(self.timesteps), self.config
        short = c["lower_order_final"] and count < 15
        final = i == count - 1 and (c["euler_at_final"] or short or c["final_sigmas_type"] == "zero")
        second_to_last = i == count - 2 and short
        self.model_outputs = self.model_outputs[1:] + [self._data_prediction(model_output, sample, i)]
        sample = sample.astype(np.float32, copy=False)
        if self.order_max == 1 or self.lower_order_nums < 1 or final:
            out = self._first_order(sample, i)
        elif self.order_max == 2 or self.lower_order_nums < 2 or second_to_last:
            out = self._second_order(sample, i)
        else:
            out = self._third_order(sample, i)
        self.lower_order_nums = min(self.lower_order_nums + 1, self.order_max)
        self.step_index = i + 1
        return out

    def _first_order(self, sample: np.ndarray, i: int) -> np.ndarray:
        alpha_t, sigma_t = _alpha_sigma(self.sigmas[i + 1])
        alpha_s, sigma_s = _alpha_sigma(self.sigmas[i])
        h = _lambda(alpha_t, sigma_t) - _lambda(alpha_s, sigma_s)
        return sigma_t / sigma_s * sample - alpha_t * (np.exp(-h) - 1.0) * self.model_outputs[-1]

    def _second_order(self, sample: np.ndarray, i: int) -> np.ndarray:
        alpha_t, sigma_t = _alpha_sigma(self.sigmas[i + 1])
        alpha_s0, sigma_s0 = _alpha_sigma(self.sigmas[i])
        lambda_s0 = _lambda(alpha_s0, sigma_s0)
        h = _lambda(alpha_t, sigma_t) - lambda_s0
        h_0 = lambda_s0 - _lambda(*_alpha_sigma(self.sigmas[i - 1]))
        m0, m1 = self.model_outputs[-1], self.model_outputs[-2]
        d1 = 1.0 / (h_0 / h) * (m0 - m1)
        base = sigma_t / sigma_s0 * sample - alpha_t * (np.exp(-h) - 1.0) * m0
        if self.config["solver_type"] == "midpoint":
            return base - 0.5 * (alpha_t * (np.exp(-h) - 1.0)) * d1
        return base + alpha_t * ((np.exp(-h) - 1.0) / h + 1.0) * d1

    def _third_order(self, sample: np.ndarray, i: int) -> np.ndarray:
        alpha_t, sigma_t = _alpha_sigma(self.sigmas[i + 1])
        alpha_s0, sigma_s0 = _alpha_sigma(self.sigmas[i])
        lambda_s0 = _lambda(alpha_s0, sigma_s0)
        lambda_s1 = _lambda(*_alpha_sigma(self.sigmas[i - 1]))
        lambda_s2 = _lambda(*_alpha_sigma(self.sigmas[i - 2]))
        m0, m1, m2 = self.model_outputs[-1], self.model_outputs[-2], self.model_outputs[-3]
        h = _lambda(alpha_t, sigma_t) - lambda_s0
        r0, r1 = (lambda_s0 - lambda_s1) / h, (lambda_s1 - lambda_s2) / h
        d1_0, d1_1 = 1.0 / r0 * (m0 - m1), 1.0 / r1 * (m1 - m2)
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = 1.0 / (r0 + r1) * (d1_0 - d1_1)
        return (sigma_t / sigma_s0 * sample - alpha_t * (np.exp(-h) - 1.0) * m0
                + alpha_t * ((np.exp(-h) - 1.0) / h + 1.0) * d1 - alpha_t * ((np.exp(-h) - 1.0 + h) / h ** 2 - 0.5) * d2)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: float) -> np.ndarray:
        i = self.index_for_timestep(timestep) if self.begin_index is None else (
            self.step_index if self.step_index is not None else self.begin_index)
        alpha, sigma = _alpha_sigma(self.sigmas[i])
        return alpha * original + sigma * noise
