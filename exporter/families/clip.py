"""CLIP: a text tower and a vision tower, each *with* its projection (optimum's vision export drops the
projection and it has no standalone text tower for transformers, so these wrappers are ours), plus the
logit scale for zero-shot probabilities. Static variant: batch 1, the model's full text length."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmedge.errors import ExportError
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl, tokenizer_json

IMAGE_KEYS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
              "do_normalize", "image_mean", "image_std", "do_convert_rgb")


class ClipText(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        # .long(): TFLite graphs take int32 ids; a no-op for the int64 ONNX/OpenVINO graphs.
        embeds = self.model.get_text_features(input_ids=input_ids.long(), attention_mask=attention_mask.long())
        return {"text_embeds": embeds}


class ClipVision(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_embeds": self.model.get_image_features(pixel_values=pixel_values)}


def _text_sample(vocab: int, bos: int, eos: int, pad: int):
    def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        batch, seq = sizes["batch"], sizes["sequence"]
        ordinary = torch.tensor([t for t in range(vocab) if t not in (bos, eos, pad)])
        ids = ordinary[torch.randint(0, len(ordinary), (batch, seq), generator=g)]
        mask = torch.zeros(batch, seq, dtype=torch.int64)
        for row in range(batch):  # rows of different lengths, padded after eos, as the tokenizer does
            length = seq if row == 0 else int(torch.randint(2, seq + 1, (1,), generator=g))
            ids[row, 0], ids[row, length - 1] = bos, eos
            ids[row, length:] = pad
            mask[row, :length] = 1
        return {"input_ids": ids, "attention_mask": mask}
    return sample


def _vision_sample(sizes: dict[str, int], seed: int, *, image_size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(sizes["batch"], 3, image_size, image_size, generator=g)}


class ClipSpec(FamilySpec):
    name = "clip"
    task = "zero-shot-image-classification"
    model_types = ("clip",)

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

        try:
            model = CLIPModel.from_pretrained(model_dir).eval()
            tokenizer = CLIPTokenizerFast.from_pretrained(model_dir)
            image_processor = CLIPImageProcessor.from_pretrained(model_dir)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot load a CLIP model, tokenizer and image processor from {model_dir}: {e}") from None
        text_cfg, vision_cfg = model.config.text_config, model.config.vision_config
        size = vision_cfg.image_size
        sample_text = _text_sample(text_cfg.vocab_size, tokenizer.bos_token_id, tokenizer.eos_token_id,
                                   tokenizer.pad_token_id)
        text = ComponentSpec(
            name="text", description="CLIP text tower with projection -> text_embeds",
            module=ClipText(model).eval(),
            inputs=(TensorDecl("input_ids", "int64", ("batch", "sequence")),
                    TensorDecl("attention_mask", "int64", ("batch", "sequence"))),
            outputs=(TensorDecl("text_embeds", "float32", ("batch", model.config.projection_dim)),),
            sample=sample_text, export_sizes={"batch": 2, "sequence": 7},
            second_sizes={"batch": 3, "sequence": 12},
            static_signatures={"default": {"batch": 1, "sequence": text_cfg.max_position_embeddings}})
        vision = ComponentSpec(
            name="vision", description="CLIP vision tower with projection -> image_embeds",
            module=ClipVision(model).eval(),
            inputs=(TensorDecl("pixel_values", "float32", ("batch", 3, size, size)),),
            outputs=(TensorDecl("image_embeds", "float32", ("batch", model.config.projection_dim)),),
            sample=lambda sizes, seed: _vision_sample(sizes, seed, image_size=size),
            export_sizes={"batch": 2}, second_sizes={"batch": 3}, static_signatures={"default": {"batch": 1}})
        image_cfg = {k: v for k, v in image_processor.to_dict().items() if k in IMAGE_KEYS}
        return LoadedFamily(
            family=self.name, task=self.task, components=[text, vision],
            preprocessing={"image": json.loads(json.dumps(image_cfg)),
                           "text": {"tokenizer_file": "tokenizer/tokenizer.json",
                                    "max_length": text_cfg.max_position_embeddings}},
            postprocessing={"logit_scale": float(model.logit_scale.exp().item())},
            files={"tokenizer/tokenizer.json": tokenizer_json(tokenizer, model_dir)})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.clip_tiny import write_tiny_clip

        return write_tiny_clip(out_dir)
