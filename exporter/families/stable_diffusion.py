"""Stable Diffusion (1.x / 2.x layout: a diffusers pipeline directory with ``model_index.json``).

Components, each a plain graph (the denoising loop, classifier-free guidance and the schedulers run in numpy on
the device, ``mmedge.runtime.schedulers``):

- ``text_encoder``: ``CLIPTextModel``, ``input_ids`` → ``last_hidden_state`` (what the pipeline feeds the UNet).
- ``unet``: ``UNet2DConditionModel``, (``sample``, ``timestep``, ``encoder_hidden_states``) → ``noise_pred``. The
  timestep has a batch dimension, shape ``(batch,)`` and float32 (Euler's timesteps are fractional): a 0-d
  timestep makes the dynamo exporter specialise the graph silently (design.md).
- ``vae_decoder``: ``AutoencoderKL.decode`` on scaled latents → image in [-1, 1].
- ``vae_encoder`` (image-to-image): ``AutoencoderKL.encode`` → the latent distribution's mean and std; the device
  draws the sample (``mean + std * noise``) with its own RNG, as diffusers' ``latent_dist.sample``.

Static contract (TFLite, NPUs): batch 1 everywhere, the text length fixed at the tokenizer's ``model_max_length``
and one resolution, the pipeline's default (``unet.sample_size * vae_scale_factor``). Classifier-free guidance
with a static UNet is two batch-1 calls per step (unconditional, then conditional: the runtime's fixed-batch
runner splits the batch-2 call); dynamic graphs take both halves in one batch-2 call, as diffusers does. Batch 1
keeps the static UNet's activations half as large, which is what NPUs and phones have room for; the choice is
stated in the manifest (``generation.classifier_free_guidance``).

TFLite files cannot pass 2 GB (flatbuffers): an fp32 SD 1.5 UNet (3.4 GB) fails its TFLite conversion; export real
SD 1.x/2.x with ``--formats onnx,openvino`` (ONNX keeps its weights in an external data file).

Dynamic graphs are checked at a second batch and a non-square second resolution. Latent sizes must be multiples
of ``2 ** num_upsamplers`` (the traced UNet has no branch for the odd sizes diffusers pads on the fly), so image
sides are multiples of ``preprocessing.image.size_multiple`` (64 for SD 1.5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmedge.errors import ExportError, MmedgeError
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl, tokenizer_json
from mmedge.exporter.families.causal_lm import parity_atol
from mmedge.runtime.schedulers import SCHEDULER_OF_CLASS, make_scheduler

PIPELINE_CLASSES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
#: Used when the pipeline's own scheduler (e.g. SD 1.5's PNDM) has no numpy implementation in mmedge.
FALLBACK_SCHEDULER = "dpm++2m"
#: diffusers' ``StableDiffusionPipeline.__call__`` defaults.
DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 7.5
SCHEDULER_FILE = "scheduler/scheduler_config.json"
TOKENIZER_FILE = "tokenizer/tokenizer.json"


class TextEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        # .long(): TFLite graphs take int32 ids; a no-op for the int64 ONNX/OpenVINO graphs.
        return {"last_hidden_state": self.model(input_ids=input_ids.long()).last_hidden_state}


class Unet(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"noise_pred": self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                        return_dict=False)[0]}


class VaeDecoder(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image": self.vae.decode(latents, return_dict=False)[0]}


class VaeEncoder(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        dist = self.vae.encode(pixel_values).latent_dist
        return {"latent_mean": dist.mean, "latent_std": dist.std}


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _sizes(batch: int, latent_h: int, latent_w: int, scale: int, sequence: int) -> dict[str, int]:
    return {"batch": batch, "latent_height": latent_h, "latent_width": latent_w, "height": latent_h * scale,
            "width": latent_w * scale, "sequence": sequence}


def _half(side: int, multiple: int) -> int:
    """About half a latent side, still a multiple of what the UNet's downsampling needs."""
    return max(multiple, side // 2 // multiple * multiple)


def _text_sample(vocab: int):
    def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {"input_ids": torch.randint(0, vocab, (sizes["batch"], sizes["sequence"]), generator=g)}
    return sample


def _unet_sample(channels: int, cross_dim: int):
    def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        b = sizes["batch"]
        # Fractional timesteps too: Euler's schedules are not integers.
        return {"sample": _randn(g, b, channels, sizes["latent_height"], sizes["latent_width"]),
                "timestep": torch.rand(b, generator=g) * 999,
                "encoder_hidden_states": _randn(g, b, sizes["sequence"], cross_dim)}
    return sample


def _components(text_encoder: Any, unet: Any, vae: Any, shapes: dict[str, dict[str, int]]) -> list[ComponentSpec]:
    """The four graphs; ``shapes``: the export, second (dynamic check) and static sizes of every named dimension."""
    channels, cross = int(unet.config.in_channels), int(unet.config.cross_attention_dim)
    hidden = int(text_encoder.config.hidden_size)
    latents = ("batch", channels, "latent_height", "latent_width")
    return [
        ComponentSpec(
            name="text_encoder", description="CLIP text encoder: input_ids -> last_hidden_state",
            module=TextEncoder(text_encoder).eval(),
            inputs=(TensorDecl("input_ids", "int64", ("batch", "sequence")),),
            outputs=(TensorDecl("last_hidden_state", "float32", ("batch", "sequence", hidden)),),
            sample=_text_sample(int(text_encoder.config.vocab_size)), export_sizes=shapes["export"],
            second_sizes=shapes["second"], static_signatures={"default": shapes["static"]},
            atol=parity_atol(int(text_encoder.config.num_hidden_layers))),
        ComponentSpec(
            name="unet", description="UNet2DConditionModel: noisy latents, timestep (batch,), text states -> "
                                     "noise prediction",
            module=Unet(unet).eval(),
            inputs=(TensorDecl("sample", "float32", latents), TensorDecl("timestep", "float32", ("batch",)),
                    TensorDecl("encoder_hidden_states", "float32", ("batch", "sequence", cross))),
            outputs=(TensorDecl("noise_pred", "float32", latents),),
            sample=_unet_sample(channels, cross), export_sizes=shapes["export"], second_sizes=shapes["second"],
            static_signatures={"default": shapes["static"]}, atol=1e-3),
        ComponentSpec(
            name="vae_decoder", description="AutoencoderKL decoder: latents / scaling_factor -> image in [-1, 1]",
            module=VaeDecoder(vae).eval(),
            inputs=(TensorDecl("latents", "float32", latents),),
            outputs=(TensorDecl("image", "float32", ("batch", 3, "height", "width")),),
            sample=lambda sizes, seed: {"latents": _randn(torch.Generator().manual_seed(seed), sizes["batch"],
                                                          channels, sizes["latent_height"], sizes["latent_width"])},
            export_sizes=shapes["export"], second_sizes=shapes["second"],
            static_signatures={"default": shapes["static"]}, atol=1e-3),
        ComponentSpec(
            name="vae_encoder", description="AutoencoderKL encoder (image-to-image): image in [-1, 1] -> latent "
                                            "mean and std",
            module=VaeEncoder(vae).eval(),
            inputs=(TensorDecl("pixel_values", "float32", ("batch", 3, "height", "width")),),
            outputs=(TensorDecl("latent_mean", "float32", latents), TensorDecl("latent_std", "float32", latents)),
            sample=lambda sizes, seed: {"pixel_values": torch.rand(
                sizes["batch"], 3, sizes["height"], sizes["width"],
                generator=torch.Generator().manual_seed(seed)) * 2 - 1},
            export_sizes=shapes["export"], second_sizes=shapes["second"],
            static_signatures={"default": shapes["static"]}, atol=1e-3),
    ]


def _check_supported(unet: Any, vae: Any, text_encoder: Any, model_dir: Path) -> None:
    c = unet.config
    unsupported = {"addition_embed_type (SDXL-style added conditioning)": c.addition_embed_type,
                   "class_embed_type": c.class_embed_type, "encoder_hid_dim": c.encoder_hid_dim,
                   "time_cond_proj_dim (LCM-distilled UNet with a guidance embedding)": c.time_cond_proj_dim,
                   "text encoder use_attention_mask": getattr(text_encoder.config, "use_attention_mask", None)}
    found = [name for name, value in unsupported.items() if value]
    if found:
        raise ExportError(f"{model_dir}: this UNet/text encoder uses {', '.join(found)}, which the text-to-image "
                          "family does not export; it supports Stable Diffusion 1.x/2.x pipelines")
    if c.in_channels != vae.config.latent_channels:
        raise ExportError(f"{model_dir}: the UNet takes {c.in_channels} channels but the VAE has "
                          f"{vae.config.latent_channels} latent channels (an inpainting UNet?); export a "
                          "text-to-image Stable Diffusion pipeline")


def _default_scheduler(config: dict) -> str:
    """The pipeline's own scheduler if mmedge has it in numpy, else ``FALLBACK_SCHEDULER``; checked to build."""
    name = SCHEDULER_OF_CLASS.get(config.get("_class_name", ""), FALLBACK_SCHEDULER)
    try:
        make_scheduler(name, config)
    except MmedgeError as e:  # an option our numpy scheduler does not implement
        raise ExportError(f"the pipeline's scheduler config does not work with mmedge's '{name}' scheduler: {e}") from None
    return name


class StableDiffusionSpec(FamilySpec):
    """Stable Diffusion 1.x/2.x text-to-image (and image-to-image with the VAE encoder)."""

    name = "text-to-image"
    task = "text-to-image"

    def matches(self, config: dict) -> bool:
        return config.get("_class_name") in PIPELINE_CLASSES

    def load(self, model_dir: Path) -> LoadedFamily:
        from diffusers import StableDiffusionPipeline
        from transformers import CLIPTokenizerFast

        try:
            pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None,
                                                           requires_safety_checker=False)
            tokenizer = CLIPTokenizerFast.from_pretrained(model_dir / "tokenizer")
        except (OSError, ValueError, TypeError) as e:
            raise ExportError(f"cannot load a Stable Diffusion pipeline from {model_dir}: "
                              f"{str(e).splitlines()[0][:300]}") from None
        unet, vae, text_encoder = pipe.unet.eval(), pipe.vae.eval(), pipe.text_encoder.eval()
        _check_supported(unet, vae, text_encoder, model_dir)
        scale = pipe.vae_scale_factor
        up = 2 ** (len(unet.config.block_out_channels) - 1)  # the UNet's upsamplers
        size = unet.config.sample_size
        latent_h, latent_w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if latent_h % up or latent_w % up:
            raise ExportError(f"the UNet's sample_size {size} is not a multiple of {up}; it cannot be traced")
        max_length = int(tokenizer.model_max_length)
        if max_length > text_encoder.config.max_position_embeddings:
            raise ExportError(f"the tokenizer's model_max_length {max_length} exceeds the text encoder's "
                              f"{text_encoder.config.max_position_embeddings} positions; fix tokenizer_config.json")
        shapes = {"export": _sizes(2, latent_h, latent_w, scale, max_length),
                  # A second batch, sequence and a non-square resolution: catches any dimension the exporter fixed.
                  "second": _sizes(1, _half(latent_h, up) + up, _half(latent_w, up), scale, max(2, max_length // 3)),
                  "static": _sizes(1, latent_h, latent_w, scale, max_length)}
        components = _components(text_encoder, unet, vae, shapes)
        # The scheduler's config as diffusers keeps it: with the file's keys its own class ignores (SD 1.5's PNDM file
        # has clip_sample: false, which DDIM reads), as ``OtherScheduler.from_config(pipe.scheduler.config)`` sees them.
        scheduler_config = dict(pipe.scheduler.config)
        default_scheduler = _default_scheduler(scheduler_config)
        return LoadedFamily(
            family=self.name, task=self.task, components=components,
            preprocessing={
                "text": {"tokenizer_file": TOKENIZER_FILE, "max_length": max_length,
                         "pad_token": str(tokenizer.pad_token)},
                "image": {"vae_scale_factor": scale, "size_multiple": scale * up, "height": latent_h * scale,
                          "width": latent_w * scale, "latent_channels": int(unet.config.in_channels),
                          "resample": "lanczos"},
                "scheduler": {"config_file": SCHEDULER_FILE, "default": default_scheduler,
                              "pipeline_class": scheduler_config.get("_class_name")}},
            postprocessing={"vae_scaling_factor": float(vae.config.scaling_factor),
                            "output": "image / 2 + 0.5, clipped to [0, 1] (diffusers' VaeImageProcessor)"},
            generation={"default_steps": DEFAULT_STEPS, "default_guidance": DEFAULT_GUIDANCE,
                        "classifier_free_guidance": "guidance > 1: unconditional (negative prompt) and conditional "
                                                    "noise predictions; dynamic UNet: one batch-2 call per step; "
                                                    "static UNet (batch 1): two calls per step"},
            files={TOKENIZER_FILE: tokenizer_json(tokenizer, model_dir),
                   SCHEDULER_FILE: json.dumps(scheduler_config, indent=2, sort_keys=True).encode()})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.stable_diffusion_tiny import write_tiny_stable_diffusion

        return write_tiny_stable_diffusion(out_dir)

