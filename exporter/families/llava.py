"""LLaVA-style vision-language models (``LlavaForConditionalGeneration``: a vision tower, a projector and a
decoder LM): image + question -> answer, and multi-turn chat on one kept KV cache.

Components: ``vision`` (pixel values -> projected image features, one row per image token) and ``decoder``
(the shared KV-cache graph fed with ``inputs_embeds``). The runtime builds the prompt embeddings itself:
token embeddings from the table shipped as ``.npy``, image features spliced in where the processor would
have expanded the ``<image>`` token, exactly as ``LlavaModel`` scatters them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmedge.errors import ExportError
from mmedge.exporter.families.base import (ComponentSpec, FamilySpec, LoadedFamily, TensorDecl, model_generation_config,
                                           tokenizer_json)
from mmedge.exporter.families.causal_lm import CHAT_PROBE, DEFAULT_MAX_CACHE_LEN, chat_markers, kv_geometry
from mmedge.exporter.families.clip import IMAGE_KEYS
from mmedge.exporter.families.decoder_cache import EmbedsDecoderWithCache, cache_io, cache_sample, static_signatures
from mmedge.exporter.families.whisper import _npy

PROMPT_BUCKETS = (32, 64)


class LlavaVision(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.model
        self.layer, self.strategy = model.config.vision_feature_layer, model.config.vision_feature_select_strategy

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        # LlavaModel.get_image_features without its final split into a per-image list (a traced split
        # fixes the batch size): select the layer, drop CLS for the "default" strategy, project.
        hidden = self.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        layers = [self.layer] if isinstance(self.layer, int) else list(self.layer)
        features = torch.cat([hidden[i] for i in layers], dim=-1)
        if self.strategy == "default":
            features = features[:, 1:]
        return {"image_features": self.model.multi_modal_projector(features)}


class LlavaSpec(FamilySpec):
    name = "llava"
    task = "image-text-to-text"
    model_types = ("llava",)

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        try:
            model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
            processor = AutoProcessor.from_pretrained(model_dir)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot load a LLaVA model and processor from {model_dir}: {e}") from None
        tokenizer, image_processor = processor.tokenizer, processor.image_processor
        generation = model_generation_config(model, model_dir)
        text_cfg, vision_cfg = model.config.text_config, model.config.vision_config
        layers, kv_heads, head_dim = kv_geometry(text_cfg)
        hidden, vocab = text_cfg.hidden_size, model.lm_head.weight.shape[0]
        size = vision_cfg.image_size
        with torch.no_grad():
            probe = LlavaVision(model)(torch.zeros(1, 3, size, size))["image_features"]
        image_tokens = probe.shape[1]
        vision = ComponentSpec(
            name="vision", description="vision tower + projector -> one embedding per image token",
            module=LlavaVision(model).eval(),
            inputs=(TensorDecl("pixel_values", "float32", ("batch", 3, size, size)),),
            outputs=(TensorDecl("image_features", "float32", ("batch", image_tokens, hidden)),),
            sample=lambda sizes, seed: {"pixel_values": torch.randn(sizes["batch"], 3, size, size,
                                                                    generator=torch.Generator().manual_seed(seed))},
            export_sizes={"batch": 2}, second_sizes={"batch": 1}, static_signatures={"default": {"batch": 1}})
        max_positions = text_cfg.max_position_embeddings
        max_cache_len = min(DEFAULT_MAX_CACHE_LEN, max_positions)
        buckets = tuple(b for b in PROMPT_BUCKETS if b < max_cache_len)
        inputs, outputs = cache_io(layers, kv_heads, head_dim, vocab, embeds_width=hidden)
        decoder = ComponentSpec(
            name="decoder", description="language model over input embeddings with explicit KV cache",
            module=EmbedsDecoderWithCache(model.model.language_model, model.lm_head, layers).eval(),
            inputs=inputs, outputs=outputs,
            sample=cache_sample(layers, kv_heads, head_dim, vocab, max_positions, embeds_width=hidden),
            export_sizes={"batch": 2, "sequence": 3, "past_sequence": 4},
            second_sizes={"batch": 1, "sequence": 1, "past_sequence": 9},
            more_sizes=({"batch": 1, "sequence": 5, "past_sequence": 0},),
            static_signatures=static_signatures(max_cache_len, buckets),
            needs_dynamo=True, derived_dims=("total_sequence",))
        image_cfg = {k: v for k, v in image_processor.to_dict().items() if k in IMAGE_KEYS}
        chat = chat_markers(tokenizer)
        if chat is not None:  # the first user turn as the template writes it with an image part
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CHAT_PROBE}]}],
                tokenize=False, add_generation_prompt=True)
            chat["user_prefix_image"] = rendered.split(CHAT_PROBE)[0]
        embeddings = model.get_input_embeddings().weight.detach().float().numpy()
        return LoadedFamily(
            family=self.name, task=self.task, components=[vision, decoder],
            preprocessing={"image": json.loads(json.dumps(image_cfg)),
                           "text": {"tokenizer_file": "tokenizer/tokenizer.json",
                                    "embeddings_file": "decoder/embeddings.npy",
                                    "image_token_id": model.config.image_token_index,
                                    "image_token": tokenizer.convert_ids_to_tokens(model.config.image_token_index),
                                    "image_tokens": image_tokens,
                                    "pad_token_id": tokenizer.pad_token_id, "chat": chat}},
            postprocessing={},
            generation={"config": json.loads(json.dumps(generation, default=str)),
                        "cache": {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim,
                                  "max_positions": max_positions, "max_cache_len": max_cache_len,
                                  "prompt_buckets": list(buckets)}},
            files={"tokenizer/tokenizer.json": tokenizer_json(tokenizer, model_dir),
                   "decoder/embeddings.npy": _npy(embeddings)})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.llava_tiny import write_tiny_llava

        return write_tiny_llava(out_dir)
