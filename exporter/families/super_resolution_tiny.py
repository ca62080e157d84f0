"""A tiny random-weight Swin2SR upscaler in Hugging Face format (``Swin2SRForImageSuperResolution`` +
``Swin2SRImageProcessor``), written fully offline.

Why: the exporter, the processor padding and the tiling of the slim runtime must be checked against transformers
on a real Swin2SR folder without a model hub. Layout as ``caidas/swin2SR-classical-sr-x2-64`` where it matters to
the contract (pixel-shuffle upsampler, x2, the processor's symmetric padding to multiples of 8, a shifted-window
layer); only the sizes are tiny: one stage of two attention layers of width 16 with 4x4 windows, so the receptive
field (about 12 input pixels) fits the tile overlap and tiled output can equal whole-image output.
"""

from __future__ import annotations

from pathlib import Path

TINY = {"image_size": 64, "patch_size": 1, "embed_dim": 16, "depths": [2], "num_heads": [2], "window_size": 4,
        "mlp_ratio": 2.0, "upscale": 2, "upsampler": "pixelshuffle", "drop_path_rate": 0.0}


def write_tiny_swin2sr(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``Swin2SRForImageSuperResolution`` with its image processor to ``out_dir``.

    Deterministic for a given ``seed``."""
    import torch
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution, Swin2SRImageProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    Swin2SRImageProcessor(do_rescale=True, rescale_factor=1 / 255, do_pad=True, size_divisor=8).save_pretrained(out)
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = Swin2SRForImageSuperResolution(Swin2SRConfig(**TINY)).eval()
    model.save_pretrained(out, safe_serialization=True)
    return out
