"""A tiny random-weight Stable Diffusion pipeline in diffusers format, written fully offline.

Why: the text-to-image family must be checked against diffusers' own ``StableDiffusionPipeline`` on a real
pipeline directory (``model_index.json``; ``text_encoder/``, ``tokenizer/``, ``unet/``, ``vae/`` and
``scheduler/`` subfolders, safetensors weights) without a model hub. The layout and conventions are those of
``stable-diffusion-v1-5``: a ``CLIPTextModel`` text encoder with a slow CLIP tokenizer (vocab.json + merges.txt,
padded with ``<|endoftext|>``), a ``UNet2DConditionModel`` with cross-attention, an ``AutoencoderKL`` with SD's
latent scaling factor, and SD 1.5's own scheduler config (``PNDMScheduler``, scaled-linear betas,
``leading`` spacing with ``steps_offset`` 1), which mmedge does not implement, so the export must choose a
default scheduler for it.

The tokenizer is the tiny CLIP one (``clip_tiny``: a CLIP-style BPE learnt on the embedded corpus), written by
``write_tiny_clip`` into a scratch folder and re-saved here. Only the widths are tiny: UNet blocks (32, 64), one
layer per block, 16x16 latents; a VAE with blocks (32, 64) (scale factor 2), so images are 32x32 by default.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

#: SD 1.5's scheduler_config.json (diffusers 0.39 writes the same keys for a PNDMScheduler).
SD15_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
                  "steps_offset": 1, "trained_betas": None, "clip_sample": False, "prediction_type": "epsilon",
                  "timestep_spacing": "leading"}
TINY = {"text_hidden": 32, "text_layers": 2, "text_heads": 4, "max_length": 77, "unet_blocks": (32, 64),
        "latent_size": 16, "vae_blocks": (32, 64), "latent_channels": 4, "scaling_factor": 0.18215}


def write_tiny_stable_diffusion(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight Stable Diffusion pipeline directory to ``out_dir``; return the path.

    Deterministic for a given ``seed``. Loads with ``StableDiffusionPipeline.from_pretrained`` (no safety checker).
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from mmedge.exporter.families.clip_tiny import write_tiny_clip

    out = Path(out_dir)
    t = TINY
    with tempfile.TemporaryDirectory(prefix="mmedge-tinysd-") as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_tiny_clip(Path(tmp) / "clip"),
                                                  model_max_length=t["max_length"])
    text_config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=t["text_hidden"],
                                 intermediate_size=2 * t["text_hidden"], num_hidden_layers=t["text_layers"],
                                 num_attention_heads=t["text_heads"], max_position_embeddings=t["max_length"],
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config).eval()
        unet = UNet2DConditionModel(
            sample_size=t["latent_size"], in_channels=t["latent_channels"], out_channels=t["latent_channels"],
            block_out_channels=t["unet_blocks"], layers_per_block=1, attention_head_dim=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=t["text_hidden"], norm_num_groups=16).eval()
        vae = AutoencoderKL(
            block_out_channels=t["vae_blocks"], in_channels=3, out_channels=3, latent_channels=t["latent_channels"],
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1, norm_num_groups=16, sample_size=t["latent_size"] * 2,
            scaling_factor=t["scaling_factor"]).eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    # As SD 1.5's file: diffusers drops keys PNDM does not know (clip_sample), but DDIM reads it (default True).
    config_file = out / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **SD15_SCHEDULER}, indent=2))
    return out
