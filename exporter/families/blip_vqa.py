"""BLIP visual question answering (``blip-vqa``): transformers' ``BlipForQuestionAnswering``.

What its ``generate`` does (transformers 4.57, ``modeling_blip.py``) and how it is split into two components:

1. ``vision_model(pixel_values)`` -> image embeddings;
2. ``text_encoder(input_ids=question, attention_mask=question mask, encoder_hidden_states=image)`` -> question
   embeddings (a bidirectional BERT whose layers cross-attend to the image);
3. ``text_decoder.generate`` from ``[bos]`` (``text_config.bos_token_id``, BLIP's ``[DEC]``) with
   ``encoder_hidden_states`` = the question embeddings, eos = ``sep_token_id``, pad = ``pad_token_id``.

- ``encoder`` = 1 + 2 + every decoder layer's cross-attention key/value projection of the question embeddings:
  ``pixel_values`` + ``input_ids`` + ``attention_mask`` -> per layer ``cross_keys_i`` [B, H, D, Q] (transposed)
  and ``cross_values_i`` [B, H, Q, D] (``decoder_cache.cross_decls``). Q is the named dynamic dim ``question``;
  static variants fix it (``max_question_len``) and the image size, the runtime right-pads the question and
  masks the padding. BERT masks padded keys with -10000 before the softmax,
  which is exactly 0 in float32, so the real positions come out as without padding.
- ``decoder`` = the shared KV-cache graph (``decoder_cache``) plus ``encoder_attention_mask`` [B, Q] and the
  per-layer cross keys/values: the cross-attention must not look at the padding of a static question.
  HF passes an all-ones mask (one unpadded question), which is what the runtime feeds for real positions.

The decoder prompt is always the start token alone, so the static decoder has only the ``decode`` signature (no
``prefill_N`` graph to convert and check). The cross-attention mask is a graph input, never a constant: the
pitfall of ``seq2seq`` (OpenVINO's CPU plugin folding a constant additive bias into ``finfo.min`` at fixed shapes)
has no constant to fold here; the parity checks at both static seeds use padded masks to show it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers.cache_utils import EncoderDecoderCache

from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl, tokenizer_json
from mmedge.exporter.families.captioning import TOKENIZER_FILE, VisionEncoderWithCross, load_blip
from mmedge.exporter.families.decoder_cache import (CrossDecoderWithCache, cache_io, cache_sample, cross_cache,
                                                    cross_decls, cross_outputs, cross_sample, fill_cache,
                                                    new_entries, static_signatures)

ARCHITECTURE = "BlipForQuestionAnswering"
#: The static question length of real checkpoints: a VQA question is one short sentence, and 32 WordPiece tokens
#: ([CLS] and [SEP] included) leave room for long ones while keeping the fixed-shape question encoder small. A
#: config's ``mmedge_max_question_len`` overrides it (the tiny model's 16).
DEFAULT_MAX_QUESTION_LEN = 32
#: Answers are a few words and HF's default is 20 new tokens after the start token: a 32-slot static cache
#: holds them and keeps each static decode step small.
MAX_CACHE_LEN = 32
QUESTION = "question"  # the named dynamic dim of the question's token axis


class VqaEncoderWithCross(VisionEncoderWithCross):
    """Vision tower -> question encoder over the image -> every decoder layer's cross keys/values of the question
    embeddings: everything that depends only on the image and the question, run once per question."""

    def __init__(self, model: torch.nn.Module, num_layers: int):
        super().__init__(model.vision_model, None, model.text_decoder, model.config.text_config.model_type,
                         num_layers)
        self.text_encoder = model.text_encoder

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        image = self.vision(pixel_values=pixel_values).last_hidden_state
        # .long(): TFLite graphs take int32 ids and masks; a no-op for the ONNX/OpenVINO graphs.
        question = self.text_encoder(input_ids=input_ids.long(), attention_mask=attention_mask.long(),
                                     encoder_hidden_states=image, return_dict=True).last_hidden_state
        keys, values = zip(*(self._project(attn, question) for attn in self.cross))
        return cross_outputs(list(keys), list(values))


def honour_cross_attention_mask(attention: torch.nn.Module) -> None:
    """Make a ``BlipTextSelfAttention`` used for cross-attention apply the encoder mask it is given.

    transformers 4.57 drops it: ``BlipTextLayer`` hands the (inverted) encoder mask to ``BlipTextAttention`` as
    ``attention_mask``, which passes it on as ``attention_mask``, and the self-attention module then takes the
    cross-attention mask from its ``encoder_attention_mask`` parameter, always None there. Harmless for HF's own
    ``generate`` (one unpadded question, an all-ones mask), but a static question is padded and the padding must
    not be attended. With an all-ones mask the numbers are exactly transformers' (the inverted mask adds 0).
    Installed once per attention module of the exported decoder.
    """
    if getattr(attention, "_mmedge_cross_mask", False):
        return
    original = attention.forward

    def forward(hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, **kwargs):
        if encoder_hidden_states is not None and encoder_attention_mask is None:
            encoder_attention_mask = attention_mask
        return original(hidden_states, attention_mask=attention_mask, head_mask=head_mask,
                        encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
                        **kwargs)

    attention.forward = forward
    attention._mmedge_cross_mask = True


class MaskedCrossDecoderWithCache(CrossDecoderWithCache):
    """``CrossDecoderWithCache`` with one more input, ``encoder_attention_mask`` [B, Q] (1 = a real question
    token), applied by the decoder's cross-attention (see ``honour_cross_attention_mask``); everything else is
    the shared graph's contract."""

    def __init__(self, decoder: torch.nn.Module, num_layers: int, marker_width: int):
        super().__init__(decoder, num_layers, marker_width)
        for layer in decoder.bert.encoder.layer:
            honour_cross_attention_mask(layer.crossattention.self)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                past_keys: torch.Tensor, past_values: torch.Tensor, encoder_attention_mask: torch.Tensor,
                *cross: torch.Tensor) -> dict[str, torch.Tensor]:
        layers = self.num_layers
        cache = EncoderDecoderCache(fill_cache(past_keys, past_values, layers), cross_cache(cross, layers))
        # The one-position marker only makes each layer run cross-attention (keys/values come from the cache);
        # the [B, Q] mask broadcasts over the cached question positions.
        out = self.decoder(input_ids=input_ids.long(), attention_mask=attention_mask.long(),
                           position_ids=position_ids.long(),
                           encoder_hidden_states=past_keys.new_zeros(input_ids.shape[0], 1, self.marker_width),
                           encoder_attention_mask=encoder_attention_mask.long(), past_key_values=cache,
                           use_cache=True, return_dict=True)
        new_keys, new_values = new_entries(out.past_key_values.self_attention_cache, layers, input_ids.shape[1])
        return {"logits": out.logits, "new_keys": new_keys, "new_values": new_values}


def _padded_mask(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """A right-padded question mask, as the runtime feeds a static encoder: row 0 keeps a random number of tokens
    (at least 1, and fewer than ``length`` when ``length`` > 1), the other rows all of them."""
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[0, int(torch.randint(1, max(2, length), (1,), generator=generator)):] = 0
    return mask


def _encoder_spec(model: torch.nn.Module, layers: int, heads: int, head_dim: int, vocab: int,
                  image: tuple[int, int], max_question_len: int) -> ComponentSpec:
    """The encoder, checked at two batch sizes and question lengths with padded masks (a dimension the exporter
    silently fixed, or padding leaking into real positions, shows up there)."""

    def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        batch, length = sizes["batch"], sizes[QUESTION]
        return {"pixel_values": torch.randn(batch, 3, *image, generator=g),
                "input_ids": torch.randint(0, vocab, (batch, length), generator=g),
                "attention_mask": _padded_mask(batch, length, g)}

    return ComponentSpec(
        name="encoder", description="BLIP vision encoder + question encoder + per-layer cross-attention keys/values",
        module=VqaEncoderWithCross(model, layers).eval(),
        inputs=(TensorDecl("pixel_values", "float32", ("batch", 3, *image)),
                TensorDecl("input_ids", "int64", ("batch", QUESTION)),
                TensorDecl("attention_mask", "int64", ("batch", QUESTION))),
        outputs=cross_decls(layers, heads, head_dim, QUESTION), sample=sample,
        export_sizes={"batch": 2, QUESTION: 7}, second_sizes={"batch": 1, QUESTION: 12},
        static_signatures={"default": {"batch": 1, QUESTION: max_question_len}}, needs_dynamo=True, atol=1e-4)


def _decoder_spec(model: torch.nn.Module, layers: int, heads: int, head_dim: int, vocab: int, max_positions: int,
                  max_question_len: int, max_cache_len: int) -> ComponentSpec:
    """The answer decoder: the shared KV-cache contract + the question mask + per-layer cross keys/values. The
    static variant has ``decode`` only: the answer starts from the start token alone, no prompt to prefill."""
    text = model.config.text_config
    inputs, outputs = cache_io(layers, heads, head_dim, vocab)
    inputs += (TensorDecl("encoder_attention_mask", "int64", ("batch", QUESTION)),
               *cross_decls(layers, heads, head_dim, QUESTION))
    lm_sample = cache_sample(layers, heads, head_dim, vocab, max_positions)

    def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed + 1000)
        batch, length = sizes["batch"], sizes[QUESTION]
        return {**lm_sample(sizes, seed), "encoder_attention_mask": _padded_mask(batch, length, g),
                **cross_sample(layers, heads, head_dim, batch, length, g)}

    return ComponentSpec(
        name="decoder", description="BLIP answer decoder with explicit self/cross KV caches and the question mask "
                                    "-> logits, new keys/values",
        module=MaskedCrossDecoderWithCache(model.text_decoder, layers, text.encoder_hidden_size).eval(),
        inputs=inputs, outputs=outputs, sample=sample,
        export_sizes={"batch": 2, "sequence": 3, "past_sequence": 4, QUESTION: 7},
        second_sizes={"batch": 1, "sequence": 1, "past_sequence": 9, QUESTION: 12},
        more_sizes=({"batch": 1, "sequence": 1, "past_sequence": 0, QUESTION: 5},  # the start token
                    {"batch": 3, "sequence": 1, "past_sequence": 6, QUESTION: 9}),  # a step of 3 beams
        static_signatures={name: {**sizes, QUESTION: max_question_len}
                           for name, sizes in static_signatures(max_cache_len, ()).items()},
        needs_dynamo=True, derived_dims=("total_sequence",), atol=1e-4)


class BlipVqaSpec(FamilySpec):
    name = "blip-vqa"
    task = "visual-question-answering"
    model_types = ("blip",)

    def matches(self, config: dict) -> bool:
        """BLIP checkpoints share ``model_type`` across heads: only the question-answering one is this family
        (a config without ``architectures`` stays with captioning, see ``BlipCaptioningSpec.matches``)."""
        return config.get("model_type") in self.model_types and ARCHITECTURE in (config.get("architectures") or ())

    def load(self, model_dir: Path) -> LoadedFamily:
        blip = load_blip(model_dir, ARCHITECTURE)
        model, text = blip.model, blip.text
        geometry = (blip.layers, blip.heads, blip.head_dim, blip.vocab)
        # The question encoder has absolute positions too: a static question never exceeds its table.
        max_question_len = min(int(getattr(model.config, "mmedge_max_question_len", None)
                                   or DEFAULT_MAX_QUESTION_LEN), blip.max_positions)
        max_cache_len = min(MAX_CACHE_LEN, blip.max_positions)
        components = [_encoder_spec(model, *geometry, blip.image, max_question_len),
                      _decoder_spec(model, *geometry, blip.max_positions, max_question_len, max_cache_len)]
        cache: dict[str, Any] = {"layers": blip.layers, "kv_heads": blip.heads, "head_dim": blip.head_dim,
                                 "max_positions": blip.max_positions, "max_cache_len": max_cache_len,
                                 "prompt_buckets": []}
        return LoadedFamily(
            family=self.name, task=self.task, components=components,
            preprocessing={"image": blip.preprocessing,
                           "text": {"tokenizer_file": TOKENIZER_FILE, "pad_token_id": int(text.pad_token_id),
                                    "max_question_len": max_question_len,
                                    "max_question_positions": blip.max_positions}},
            postprocessing={},
            generation={"config": blip.generation_config(), "cache": cache,
                        "prompt": {"start_token_id": int(text.bos_token_id), "text_prompt": None}},
            files={TOKENIZER_FILE: tokenizer_json(blip.tokenizer, model_dir)})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.blip_vqa_tiny import write_tiny_blip_vqa

        return write_tiny_blip_vqa(out_dir)
