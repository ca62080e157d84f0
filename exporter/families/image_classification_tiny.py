"""A tiny random-weight ViT image classifier in Hugging Face format (``ViTForImageClassification`` +
``ViTImageProcessor``), written fully offline.

Why: the exporter and the slim runtime's pre-processing must be checked against transformers on a real ViT
classifier folder without a model hub. Layout as ``google/vit-base-patch16-224`` where it matters to the contract
(``id2label``, a ``preprocessor_config.json`` with bilinear resize to a square and mean/std 0.5); only the sizes are
tiny (32x32 images, 8x8 patches, 2 layers of width 32), so export takes seconds.
"""

from __future__ import annotations

from pathlib import Path

LABELS = ("tabby cat", "espresso", "space shuttle", "horse cart", "teapot", "bicycle")
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 32, "patch_size": 8}


def write_tiny_vit(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``ViTForImageClassification`` with its image processor to ``out_dir``.

    Deterministic for a given ``seed``. Loads with ``ViTForImageClassification``/``AutoImageProcessor``."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = TINY["image_size"]
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(out)
    config = ViTConfig(**TINY, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                       label2id={label: i for i, label in enumerate(LABELS)})
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = ViTForImageClassification(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    return out
