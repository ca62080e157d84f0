"""Image classification: one ``classifier`` component, ``pixel_values`` [batch, 3, H, W] → ``logits``
[batch, num_labels], for ViT (``ViTForImageClassification``, pre-processing from its ``ViTImageProcessor``) and
EfficientNet-Lite (folders written by ``importers.efficientnet_lite``: real ImageNet Lite0 weights, the TF
crop-fraction pre-processing).

The image size is fixed by the model (ViT's position embeddings, Lite's static "same" padding), so only the batch
is dynamic; the static variant has batch 1 (the runtime feeds a batch image by image). Labels (``id2label``) and
the activation (softmax, or sigmoid for ``multi_label_classification`` heads) go into the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmedge.errors import ExportError
from mmedge.exporter.families import efficientnet_lite
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl
from mmedge.exporter.families.captioning import image_preprocessing


class Classifier(torch.nn.Module):
    """``pixel_values`` → ``{"logits": ...}`` for a transformers classifier (``.logits``) or a plain module."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(pixel_values)
        return {"logits": getattr(out, "logits", out)}


def _load_vit(model_dir: Path) -> tuple[torch.nn.Module, list[str], dict[str, Any], str]:
    from transformers import ViTForImageClassification

    try:
        model = ViTForImageClassification.from_pretrained(model_dir).eval()
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot load a ViTForImageClassification from {model_dir}: "
                          f"{str(e).splitlines()[0][:300]}") from None
    config = model.config
    labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    activation = "sigmoid" if config.problem_type == "multi_label_classification" else "softmax"
    return model, labels, image_preprocessing(model_dir), activation


class ImageClassificationSpec(FamilySpec):
    name = "image-classification"
    task = "image-classification"
    model_types = ("vit", efficientnet_lite.MODEL_TYPE)

    def matches(self, config: dict) -> bool:
        """EfficientNet-Lite folders, and ViT checkpoints with a classification head (not bare ViT encoders)."""
        archs = config.get("architectures") or []
        return super().matches(config) and (config.get("model_type") != "vit"
                                            or any(a.endswith("ForImageClassification") for a in archs))

    def load(self, model_dir: Path) -> LoadedFamily:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") == efficientnet_lite.MODEL_TYPE:
            model, labels, image = efficientnet_lite.load_folder(model_dir)
            activation, size, what = "softmax", int(image["size"]), str(config.get("model_name"))
        else:
            model, labels, image, activation = _load_vit(model_dir)
            size, what = int(image["size"]["height"]), type(model).__name__
            if image["size"] != {"height": model.config.image_size, "width": model.config.image_size}:
                raise ExportError(f"{model_dir}: the processor resizes to {image['size']} but the model takes "
                                  f"{model.config.image_size}x{model.config.image_size} images")

        def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(seed)
            return {"pixel_values": torch.randn(sizes["batch"], 3, size, size, generator=g)}

        classifier = ComponentSpec(
            name="classifier", description=f"{what}: pixel_values -> logits over {len(labels)} labels",
            module=Classifier(model).eval(),
            inputs=(TensorDecl("pixel_values", "float32", ("batch", 3, size, size)),),
            outputs=(TensorDecl("logits", "float32", ("batch", len(labels))),),
            sample=sample, export_sizes={"batch": 2}, second_sizes={"batch": 3},
            static_signatures={"default": {"batch": 1}})
        return LoadedFamily(family=self.name, task=self.task, components=[classifier],
                            preprocessing={"image": image},
                            postprocessing={"labels": labels, "activation": activation})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.image_classification_tiny import write_tiny_vit

        return write_tiny_vit(out_dir)
