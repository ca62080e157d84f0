"""Text-to-image and image-to-image (Stable Diffusion) on the slim runtime: prompt → CLIP tokens → text encoder →
denoising loop with classifier-free guidance and a numpy scheduler (``runtime.schedulers``) → VAE decoder → image.

Each step is the one diffusers' ``StableDiffusionPipeline`` / ``StableDiffusionImg2ImgPipeline`` takes, in the
same order and float32 arithmetic, so for the same initial latents (and, for LCM and image-to-image, the same
noise) the image equals diffusers' ``output_type="np"`` image within float rounding:

- prompts padded to the tokenizer's ``model_max_length`` with its pad token; a prompt longer than that is a
  ``StaticShapeError`` (diffusers cuts it with a warning) unless ``truncate=True``;
- guidance > 1: the negative prompt (``""`` when none) and the prompt are encoded, the UNet sees both and the
  noise prediction is ``uncond + guidance * (cond - uncond)``; guidance <= 1 runs the prompt alone and a negative
  prompt is refused (it would be silently ignored). An empty prompt is allowed: it is the unconditional image.
- noise comes from ``randn``: by default numpy's PCG64 seeded with ``seed``, drawn in diffusers' order (initial
  latents, then the VAE posterior sample and the image-to-image noise, then LCM's per-step noise). numpy's
  stream differs from torch's, so a seed gives another image than the same seed in diffusers; pass ``latents``
  (and a ``randn`` of your own) to reproduce a diffusers run exactly.
- image-to-image: the input image is resized (Lanczos) to the output size and scaled to [-1, 1]; the VAE encoder's
  latent mean + std * noise, times the VAE scaling factor, is noised to the first of the last
  ``int(steps * strength)`` timesteps, which are then run.

Resolution: a static package generates exactly its contract's size (``height``/``width`` of the manifest); a
dynamic one any size whose sides are multiples of ``size_multiple``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from mmedge.errors import InputError, PackageError, StaticShapeError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.preprocess import ClipTextTokenizer
from mmedge.runtime.preprocess.image import ImageInput, load_image, save_image
from mmedge.runtime.runner import ComponentRunner
from mmedge.runtime.schedulers import Randn, Scheduler, make_scheduler


@dataclass
class ImageResult:
    """One generated image: ``pixels`` HxWx3 float32 in [0, 1] (diffusers' ``output_type="np"`` image)."""

    pixels: np.ndarray
    prompt: str
    negative_prompt: str | None
    scheduler: str
    steps: int
    guidance: float
    seed: int | None
    strength: float | None
    timings: dict
    ran: RunInfo
    timesteps: list[float] = field(default_factory=list)

    @property
    def image(self) -> Image.Image:
        """The image as 8-bit RGB, rounded as diffusers' ``numpy_to_pil``."""
        return Image.fromarray((self.pixels * 255).round().astype(np.uint8))

    def save(self, path: str | Path) -> Path:
        return save_image(self.image, path)

    def to_dict(self) -> dict:
        height, width = self.pixels.shape[:2]
        return {"task": "text-to-image" if self.strength is None else "image-to-image", "prompt": self.prompt,
                "negative_prompt": self.negative_prompt, "width": width, "height": height,
                "scheduler": self.scheduler, "steps": self.steps, "guidance": self.guidance, "seed": self.seed,
                "strength": self.strength, "timesteps": self.timesteps, "timings": self.timings,
                "ran": self.ran.to_dict()}


def _numpy_randn(seed: int | None) -> tuple[Randn, int]:
    """Standard-normal float32 noise from numpy's PCG64; a missing seed is drawn (and reported) for repeatability."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    return (lambda shape: rng.standard_normal(shape, dtype=np.float32)), int(seed)


class TextToImagePipeline:
    """Runs a ``text-to-image`` package. Build it with ``mmedge.runtime.load(path)``."""

    family = "text-to-image"
    task = "text-to-image"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        manifest = package.manifest
        pre, gen = manifest.preprocessing, manifest.generation
        try:
            self.max_length = int(pre["text"]["max_length"])
            self.tokenizer = ClipTextTokenizer(package.path(pre["text"]["tokenizer_file"]),
                                               pad_token=pre["text"]["pad_token"])
            image = pre["image"]
            self.scale, self.size_multiple = int(image["vae_scale_factor"]), int(image["size_multiple"])
            self.default_size = (int(image["height"]), int(image["width"]))
            self.channels = int(image["latent_channels"])
            self.scheduler_config: dict = json.loads(
                package.file_path(pre["scheduler"]["config_file"]).read_text(encoding="utf-8"))
            self.default_scheduler: str = pre["scheduler"]["default"]
            self.vae_scaling = float(manifest.postprocessing["vae_scaling_factor"])
            self.default_steps, self.default_guidance = int(gen["default_steps"]), float(gen["default_guidance"])
            self.text_encoder, self.unet = runners["text_encoder"], runners["unet"]
            self.vae_decoder, self.vae_encoder = runners["vae_decoder"], runners["vae_encoder"]
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"this text-to-image package lacks {e} in its manifest; re-export it") from None
        self.package, self.ran = package, ran
        fixed = (self.unet.fixed_dim("sample", 2), self.unet.fixed_dim("sample", 3))
        #: (height, width) of a static package, None for a dynamic one.
        self.static_size: tuple[int, int] | None = (
            (fixed[0] * self.scale, fixed[1] * self.scale) if None not in fixed else None)

    # ------------------------------------------------------------------------------------------- inputs

    def _size(self, height: int | None, width: int | None, image: Image.Image | None) -> tuple[int, int]:
        if height is None and width is None:
            if self.static_size is not None:
                return self.static_size
            if image is None:
                return self.default_size
            m = self.size_multiple  # diffusers keeps the input's size, rounded down to what the model takes
            height, width = image.height // m * m, image.width // m * m
            if not height or not width:
                raise InputError(f"the input image ({image.width}x{image.height}) is smaller than {m} pixels on a "
                                 f"side; give a larger image or pass height= and width=")
            return height, width
        height = self.default_size[0] if height is None else height
        width = self.default_size[1] if width is None else width
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0 \
                    or value % self.size_multiple:
                raise InputError(f"{name} must be a positive multiple of {self.size_multiple} (the VAE and UNet "
                                 f"downsampling), got {value!r}")
        if self.static_size is not None and (height, width) != self.static_size:
            raise StaticShapeError(
                f"this {self.ran.format}/{self.ran.variant} package generates {self.static_size[1]}x"
                f"{self.static_size[0]} images only (its fixed-resolution contract), asked for {width}x{height}; "
                "leave height/width unset or load a dynamic variant (variant='fp32')")
        return int(height), int(width)

    def _checked_settings(self, prompt: str, negative_prompt: str | None, steps: int | None,
                          guidance: float | None, image: ImageInput | None, latents: np.ndarray | None,
                          strength: float | None) -> tuple[int, float, float | None]:
        """(steps, guidance, strength) with the package defaults filled in; a typed error naming the fix if unusable."""
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string (an empty one gives an unconditional image), got "
                             f"{type(prompt).__name__}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise InputError(f"negative_prompt must be a string, got {type(negative_prompt).__name__}")
        steps = self.default_steps if steps is None else steps
        guidance = self.default_guidance if guidance is None else guidance
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise InputError(f"steps must be a positive integer (e.g. 25), got {steps!r}")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
                or guidance < 0:
            raise InputError(f"guidance must be a finite number >= 0 (7.5 is typical; <= 1 turns classifier-free "
                             f"guidance off), got {guidance!r}")
        if negative_prompt is not None and guidance <= 1:
            raise InputError(f"a negative prompt needs classifier-free guidance: raise guidance above 1 (it is "
                             f"{guidance}) or drop the negative prompt")
        if image is None:
            if strength is not None:
                raise InputError("strength applies to image-to-image: give an image too, or drop strength")
            return int(steps), float(guidance), None
        if latents is not None:
            raise InputError("give either an input image (image-to-image) or initial latents, not both")
        strength = 0.8 if strength is None else strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            raise InputError(f"strength must be in (0, 1] (how much of the input image is re-noised; 0.8 is "
                             f"typical), got {strength!r}")
        return int(steps), float(guidance), float(strength)

    def encode_prompt(self, prompts: list[str], *, truncate: bool = False,
                      names: tuple[str, ...] = ()) -> np.ndarray:
        """Text-encoder hidden states, one row per prompt, padded to the tokenizer's max length as diffusers pads.
        ``names`` says what each prompt is (for the error of a prompt too long)."""
        rows = []
        for i, text in enumerate(prompts):
            try:
                rows.append(self.tokenizer([text], pad_to=self.max_length, max_length=self.max_length,
                                           truncate=truncate)["input_ids"])
            except StaticShapeError as e:
                what = names[i] if i < len(names) else f"prompt #{i}"
                raise StaticShapeError(f"the {what} is too long for the text encoder ({e})") from None
        return self.text_encoder(input_ids=np.concatenate(rows))["last_hidden_state"]

    def _initial_latents(self, latents: np.ndarray | None, shape: tuple[int, ...], randn: Randn) -> np.ndarray:
        if latents is None:
            return randn(shape)
        latents = np.asarray(latents)
        if latents.shape != shape or latents.dtype.kind != "f" or not np.isfinite(latents).all():
            raise InputError(f"latents must be finite floats of shape {list(shape)} (batch, channels, height / "
                             f"{self.scale}, width / {self.scale}), got {latents.dtype} {list(latents.shape)}")
        return latents.astype(np.float32)

    def _encode_image(self, image: Image.Image, height: int, width: int, randn: Randn) -> np.ndarray:
        """Scaled VAE latents of ``image`` (diffusers' ``VaeImageProcessor.preprocess`` + ``latent_dist.sample``)."""
        rgb = image.convert("RGB").resize((width, height), resample=Image.Resampling.LANCZOS)
        pixels = np.asarray(rgb).astype(np.float32) / 255.0
        pixels = np.ascontiguousarray((2.0 * pixels - 1.0).transpose(2, 0, 1)[None])
        out = self.vae_encoder(pixel_values=pixels)
        sample = out["latent_mean"] + out["latent_std"] * randn(out["latent_mean"].shape)
        return self.vae_scaling * sample

    # ------------------------------------------------------------------------------------------ generate

    def generate(self, prompt: str, *, negative_prompt: str | None = None, steps: int | None = None,
                 guidance: float | None = None, scheduler: str | None = None, seed: int | None = None,
                 height: int | None = None, width: int | None = None, latents: np.ndarray | None = None,
                 image: ImageInput | None = None, strength: float | None = None, randn: Randn | None = None,
                 truncate: bool = False, on_step: Callable[[int, int], None] | None = None) -> ImageResult:
        """One image for ``prompt`` (see the module docstring). ``image`` + ``strength`` (default 0.8) start from an
        image instead of noise; ``latents`` are the initial noise of text-to-image (shape
        [1, channels, height / vae_scale_factor, width / vae_scale_factor]); ``randn`` replaces the seeded noise
        source; ``on_step(done, total)`` is called after each denoising step."""
        steps, guidance, strength = self._checked_settings(prompt, negative_prompt, steps, guidance, image, latents,
                                                           strength)
        cfg = guidance > 1
        name = scheduler or self.default_scheduler
        sched = make_scheduler(name, self.scheduler_config)
        picture = load_image(image) if image is not None else None
        height, width = self._size(height, width, picture)
        if randn is None:
            randn, seed = _numpy_randn(seed)
        start = time.perf_counter()
        embeds = self.encode_prompt([negative_prompt or "", prompt] if cfg else [prompt], truncate=truncate,
                                    names=("negative prompt", "prompt") if cfg else ("prompt",))
        timings = {"text_encoder_ms": 1000 * (time.perf_counter() - start)}
        sched.set_timesteps(steps)
        if picture is None:
            timesteps = sched.timesteps
            shape = (1, self.channels, height // self.scale, width // self.scale)
            x = self._initial_latents(latents, shape, randn) * sched.init_noise_sigma
        else:
            x, timesteps = self._noised_image(picture, height, width, steps, strength, sched, randn)
        step_start = time.perf_counter()
        x = self._denoise(x, timesteps, embeds, guidance, sched, randn, on_step)
        timings["denoise_ms"] = 1000 * (time.perf_counter() - step_start)
        timings["step_ms"] = timings["denoise_ms"] / len(timesteps)
        decode_start = time.perf_counter()
        decoded = self.vae_decoder(latents=x / self.vae_scaling)["image"]
        pixels = np.ascontiguousarray(np.clip(decoded / 2 + 0.5, 0, 1)[0].transpose(1, 2, 0))
        timings["vae_decoder_ms"] = 1000 * (time.perf_counter() - decode_start)
        timings["total_ms"] = 1000 * (time.perf_counter() - start)
        return ImageResult(pixels=pixels, prompt=prompt, negative_prompt=negative_prompt, scheduler=name, steps=steps,
                           guidance=guidance, seed=seed, strength=strength, timings=timings, ran=self.ran,
                           timesteps=[float(t) for t in timesteps])

    def _denoise(self, x: np.ndarray, timesteps: np.ndarray, embeds: np.ndarray, guidance: float,
                 sched: Scheduler, randn: Randn, on_step: Callable[[int, int], None] | None) -> np.ndarray:
        """The denoising loop; with guidance > 1 (``embeds`` = [unconditional, conditional]) the UNet sees both
        halves and the prediction is ``uncond + guidance * (cond - uncond)``."""
        cfg = len(embeds) == 2
        for i, t in enumerate(timesteps):
            model_in = sched.scale_model_input(np.concatenate([x, x]) if cfg else x, t)
            noise = self.unet(sample=model_in, timestep=np.full(len(model_in), t, np.float32),
                              encoder_hidden_states=embeds)["noise_pred"]
            if cfg:
                uncond, cond = noise[:1], noise[1:]
                noise = uncond + guidance * (cond - uncond)
            x = sched.step(noise, t, x, randn=randn)
            if on_step is not None:
                on_step(i + 1, len(timesteps))
        return x

    def _noised_image(self, picture: Image.Image, height: int, width: int, steps: int, strength: float,
                      sched: Scheduler, randn: Randn) -> tuple[np.ndarray, np.ndarray]:
        """Image-to-image start: the encoded image noised to the first kept timestep, and the kept timesteps."""
        kept = min(int(steps * strength), steps)
        if kept < 1:
            raise InputError(f"steps x strength = {steps} x {strength} leaves no denoising step; raise steps or "
                             f"strength so that their product is at least 1")
        start = (steps - kept) * sched.order
        timesteps = sched.timesteps[start:]
        sched.set_begin_index(start)
        encoded = self._encode_image(picture, height, width, randn)
        return sched.add_noise(encoded, randn(encoded.shape), timesteps[0]), timesteps
