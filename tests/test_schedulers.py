"""The numpy schedulers (``mmedge.runtime.schedulers``) against diffusers' own, step for step: from the same
scheduler config, the same timesteps and initial noise scale; then, fed the same model-output sequence (which
depends on the sample, as a UNet's does), the same scaled model inputs and the same latents after every step, for
several step counts, prediction types, spacings and beta schedules. LCM's per-step noise comes from one seeded
torch generator on both sides. Image-to-image's start (``set_begin_index`` + ``add_noise``) is checked too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler

from mmedge.errors import InputError, UsageError
from mmedge.exporter.families.stable_diffusion_tiny import SD15_SCHEDULER
from mmedge.runtime.schedulers import SCHEDULERS, make_scheduler

REFERENCE = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm++2m": DPMSolverMultistepScheduler,
             "lcm": LCMScheduler}
SD15 = {**SD15_SCHEDULER, "_class_name": "PNDMScheduler"}
#: Config variants over SD 1.5's scheduler config: what real pipelines ship (SD 2.x v-prediction, zero-SNR
#: "trailing", DPM++ 2M Karras) and the other spacings and beta schedules.
VARIANTS = {
    "sd15": {},
    "v-prediction": {"prediction_type": "v_prediction"},
    "sample": {"prediction_type": "sample"},
    "trailing": {"timestep_spacing": "trailing"},
    "linspace": {"timestep_spacing": "linspace"},
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
    "karras": {"use_karras_sigmas": True},
    "zero-snr": {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
    "no-offset-set-alpha": {"steps_offset": 0, "set_alpha_to_one": True, "clip_sample": True},
}
STEPS = (1, 2, 4, 10, 25, 50)
RTOL = 1e-5  # of the largest magnitude: ~1e-6 is what float32 rounding leaves (torch's sqrt/exp are not numpy's)


def _close(got: np.ndarray, want: torch.Tensor) -> float:
    want = want.numpy()
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def _torch_randn(seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=g).numpy()


def _pair(name: str, config: dict, steps: int):
    ref, ours = REFERENCE[name].from_config(config), make_scheduler(name, config)
    ref.set_timesteps(steps)
    ours.set_timesteps(steps)
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy(), rtol=1e-6)  # Karras: fractional timesteps
    return ref, ours


def _denoise(ref, ours, name: str, x: np.ndarray, timesteps: tuple, seed: int = 0) -> None:
    """Run both schedulers over ``timesteps`` from ``x`` with the same sample-dependent model outputs."""
    rng = np.random.default_rng(seed)
    xt, generator, randn = torch.from_numpy(x.copy()), torch.Generator().manual_seed(seed), _torch_randn(seed)
    for i, (t_ref, t) in enumerate(zip(*timesteps)):
        scaled_ref, scaled = ref.scale_model_input(xt, t_ref), ours.scale_model_input(x, t)
        assert _close(scaled, scaled_ref) < RTOL, f"scale_model_input at step {i}"
        r = rng.standard_normal(x.shape, dtype=np.float32)
        out = (r + np.float32(0.1) * scaled).astype(np.float32)  # depends on the sample, as a UNet does
        extra = {"generator": generator} if name == "lcm" else {}
        xt = ref.step(torch.from_numpy(r) + 0.1 * scaled_ref, t_ref, xt, **extra).prev_sample
        x = ours.step(out, t, x, randn=randn)
        assert x.dtype == np.float32 and _close(x, xt) < RTOL, f"step {i} (t={t})"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", SCHEDULERS)
def test_steps_equal_diffusers(name, variant):
    config = {**SD15, **VARIANTS[variant]}
    if name == "ddim" and variant == "zero-snr":
        config["timestep_spacing"] = "trailing"  # DDIM's last alpha is 0 with zero SNR: needs trailing (as diffusers)
    for steps in STEPS:
        ref, ours = _pair(name, config, steps)
        assert float(ours.init_noise_sigma) == pytest.approx(float(ref.init_noise_sigma), rel=1e-6)
        x = np.random.default_rng(steps).standard_normal((1, 4, 6, 5), dtype=np.float32) * ours.init_noise_sigma
        _denoise(ref, ours, name, x, (ref.timesteps, ours.timesteps), seed=steps)


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("strength", [0.3, 0.75])
def test_image_to_image_start_equals_diffusers(name, strength):
    """diffusers' img2img: keep the last int(steps * strength) timesteps, begin the step counter there, noise the
    image latents to the first kept timestep, then denoise."""
    steps = 12
    ref, ours = _pair(name, {**SD15, "prediction_type": "v_prediction"}, steps)
    start = (steps - int(steps * strength)) * ours.order
    if hasattr(ref, "set_begin_index"):
        ref.set_begin_index(start)
    ours.set_begin_index(start)
    rng = np.random.default_rng(1)
    image, noise = (rng.standard_normal((1, 4, 6, 5), dtype=np.float32) for _ in range(2))
    t_ref, t = ref.timesteps[start:], ours.timesteps[start:]
    noised_ref = ref.add_noise(torch.from_numpy(image), torch.from_numpy(noise), t_ref[:1])
    noised = ours.add_noise(image, noise, t[0])
    assert _close(noised, noised_ref) < RTOL
    _denoise(ref, ours, name, noised, (t_ref, t))


def test_training_schedule_is_bit_identical():
    """Betas (torch.linspace in float32) and their cumulative products (torch.cumprod) as diffusers computes them."""
    for variant in ("sd15", "linear", "cosine"):
        config = {**SD15, **VARIANTS[variant]}
        assert np.array_equal(make_scheduler("ddim", config).alphas_cumprod,
                              DDIMScheduler.from_config(config).alphas_cumprod.numpy()), variant


def test_config_is_read_as_from_config_reads_it():
    """Keys another class owns are ignored, missing keys take the class's defaults (DDIM: clip_sample=True), and
    "dpm++2m" is the deterministic DPM-Solver++ at order 2 whatever the config says."""
    assert make_scheduler("ddim", {"beta_schedule": "scaled_linear"}).config["clip_sample"] is True
    assert make_scheduler("ddim", SD15).config["clip_sample"] is False
    assert "skip_prk_steps" not in make_scheduler("euler", SD15).config
    dpm = make_scheduler("dpm++2m", {**SD15, "solver_order": 3, "algorithm_type": "sde-dpmsolver++"})
    assert (dpm.config["solver_order"], dpm.config["algorithm_type"]) == (2, "dpmsolver++")


@pytest.mark.parametrize("name, option", [("euler", {"use_beta_sigmas": True}),
                                          ("euler", {"interpolation_type": "log_linear"}),
                                          ("dpm++2m", {"use_flow_sigmas": True}),
                                          ("dpm++2m", {"use_lu_lambdas": True}),
                                          ("ddim", {"thresholding": True}),
                                          ("lcm", {"timestep_spacing": "cosine"})])
def test_unimplemented_options_are_refused(name, option):
    key = next(iter(option))
    with pytest.raises(UsageError, match=f"{key}=.*choose another --scheduler"):
        make_scheduler(name, {**SD15, **option})


def test_bad_step_counts_are_input_errors():
    with pytest.raises(UsageError, match="unknown scheduler 'pndm'.*ddim, euler, dpm\\+\\+2m, lcm"):
        make_scheduler("pndm", SD15)
    for steps in (0, 1001, 2.5, True):
        with pytest.raises(InputError, match="steps must be an integer from 1 to 1000"):
            make_scheduler("euler", SD15).set_timesteps(steps)
    with pytest.raises(InputError, match="at most original_inference_steps=50"):
        make_scheduler("lcm", SD15).set_timesteps(51)
    lcm = make_scheduler("lcm", SD15)
    lcm.set_timesteps(2)
    x = np.zeros((1, 4, 2, 2), np.float32)
    with pytest.raises(InputError, match="pass randn"):
        lcm.step(x, lcm.timesteps[0], x)
