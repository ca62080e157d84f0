"""The KV-cache decoder graph shared by every generative family.

One graph serves both cache strategies. Inputs: ``input_ids`` [B, T], explicit ``position_ids`` [B, T],
``attention_mask`` [B, P+T] (1 = a cache slot or new token that may be attended), and the past keys and
values of all layers stacked as ``past_keys``/``past_values`` [L, B, H, P, D]. Outputs: ``logits``
[B, T, V] and only the *new* keys/values [L, B, H, T, D]. The runtime owns the cache:

- dynamic: P grows with the text (P may be 0 at prefill); ORT/OpenVINO run it with any P.
- static: P is a fixed ``max_cache_len`` buffer whose unused slots are masked out; the runtime writes the
  new keys/values into the buffer in place. Fixed shapes for TFLite and NPUs; prompts go through
  ``prefill_N`` signatures (N = bucket) and tokens through ``decode`` (T = 1).

Because positions are explicit and invalid slots are masked, both give the same logits as the model's
own cache. transformers' ``DynamicCache`` is filled from the stacked inputs inside the graph, so the
model's attention code is used unchanged (no re-implementation to drift from upstream).

Decoders with cross-attention take the encoder's keys/values as one input per layer, keys pre-transposed
(``cross_keys_i`` [B, H, D, S], ``cross_values_i`` [B, H, S, D]), and run with eager attention. Profiled on
Whisper tiny.en (ORT and OpenVINO CPU), a stacked [L, B, H, S, D] input cost a copy of every layer's slice per
token (ORT's Split) and a transpose of every layer's keys per token (eager and SDPA attention both compute
``q @ k^T``): 5 of 13 ms per step. Pre-transposed keys meet the attention's own transpose, and the engines'
optimisers cancel the pair (SDPA's exported form reshapes in between, so the pair survives: hence eager
cross-attention, ``eager_cross_attention``).
"""

from __future__ import annotations

import copy

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from mmedge.exporter.families.base import TensorDecl

CACHE_DIMS = ("layers", "batch", "kv_heads", "past_sequence", "head_dim")


def fill_cache(past_keys: torch.Tensor, past_values: torch.Tensor, num_layers: int) -> DynamicCache:
    cache = DynamicCache()
    for layer in range(num_layers):
        cache.update(past_keys[layer], past_values[layer], layer)
    return cache


def new_entries(cache, num_layers: int, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    layers = cache.layers
    return (torch.stack([layers[i].keys[:, :, -new:] for i in range(num_layers)]),
            torch.stack([layers[i].values[:, :, -new:] for i in range(num_layers)]))


class EmbedsDecoderWithCache(torch.nn.Module):
    """The same graph fed with ``inputs_embeds`` [B, T, hidden] instead of token ids, for multimodal LMs
    whose prompt mixes token embeddings with projected image features. The runtime looks token
    embeddings up itself (the table ships in the package as ``.npy``), so one graph serves both."""

    def __init__(self, language_model: torch.nn.Module, lm_head: torch.nn.Module, num_layers: int):
        super().__init__()
        self.language_model, self.lm_head, self.num_layers = language_model, lm_head, num_layers

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                past_keys: torch.Tensor, past_values: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.language_model(inputs_embeds=inputs_embeds, position_ids=position_ids.long(),
                                  attention_mask=attention_mask.long(),
                                  past_key_values=fill_cache(past_keys, past_values, self.num_layers), use_cache=True)
        keys, values = new_entries(out.past_key_values, self.num_layers, inputs_embeds.shape[1])
        return {"logits": self.lm_head(out.last_hidden_state), "new_keys": keys, "new_values": values}


class DecoderWithCache(torch.nn.Module):
    """Wraps a causal LM (``forward(input_ids, position_ids, attention_mask, past_key_values)``)."""

    def __init__(self, model: torch.nn.Module, num_layers: int):
        super().__init__()
        self.model, self.num_layers = model, num_layers

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                past_keys: torch.Tensor, past_values: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(input_ids=input_ids.long(), position_ids=position_ids.long(),
                         attention_mask=attention_mask.long(),
                         past_key_values=fill_cache(past_keys, past_values, self.num_layers), use_cache=True)
        keys, values = new_entries(out.past_key_values, self.num_layers, input_ids.shape[1])
        return {"logits": out.logits, "new_keys": keys, "new_values": values}


def cross_decls(layers: int, heads: int, head_dim: int, length: int | str) -> tuple[TensorDecl, ...]:
    """The per-layer cross-attention inputs of a decoder (= the outputs of its encoder component): all keys
    [B, H, D, S] (transposed), then all values [B, H, S, D]; ``length`` is S (a size or a dim name)."""
    keys = tuple(TensorDecl(f"cross_keys_{i}", "float32", ("batch", heads, head_dim, length)) for i in range(layers))
    values = tuple(TensorDecl(f"cross_values_{i}", "float32", ("batch", heads, length, head_dim))
                   for i in range(layers))
    return keys + values


def cross_outputs(keys: list[torch.Tensor], values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """An encoder's per-layer keys/values [B, H, S, D] as the named outputs of ``cross_decls``."""
    return {**{f"cross_keys_{i}": k.transpose(-1, -2) for i, k in enumerate(keys)},
            **{f"cross_values_{i}": v for i, v in enumerate(values)}}


def cross_sample(layers: int, heads: int, head_dim: int, batch: int, length: int,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random inputs for ``cross_decls`` (decoder parity samples)."""
    return {t.name: torch.randn(tuple(batch if d == "batch" else length if isinstance(d, str) else d for d in t.dims),
                                generator=generator)
            for t in cross_decls(layers, heads, head_dim, length)}


def cross_cache(cross: tuple[torch.Tensor, ...], num_layers: int) -> DynamicCache:
    """transformers' cross-attention cache from the ``cross_decls`` inputs (keys transposed back)."""
    cache = DynamicCache()
    for layer in range(num_layers):
        cache.update(cross[layer].transpose(-1, -2), cross[num_layers + layer], layer)
    return cache


#: Names of the cross-attention modules of the decoders exported here (Whisper, Marian/BART: ``encoder_attn``;
#: GPT-2: ``crossattention``). T5's and BLIP's attention code is eager whatever the config says.
CROSS_ATTENTION_NAMES = ("encoder_attn", "crossattention")


def eager_cross_attention(decoder: torch.nn.Module) -> torch.nn.Module:
    """Give the cross-attention modules eager attention, whose ``k^T`` cancels the pre-transposed cross keys (see
    the module doc). Only those: self-attention keeps the model's choice (GPT-2's eager self-attention slices a
    causal table of ``n_positions`` keys, which a static cache buffer plus a prefill chunk exceeds)."""
    for name, module in decoder.named_modules():
        if name.rsplit(".", 1)[-1] in CROSS_ATTENTION_NAMES and hasattr(module, "config"):
            module.config = copy.copy(module.config)  # the model's config object is shared by every module
            module.config._attn_implementation_internal = "eager"
    return decoder


class CrossDecoderWithCache(torch.nn.Module):
    """A decoder with cross-attention (Whisper, ViT+GPT-2, BLIP) over explicit self-attention and
    cross-attention caches: the ``DecoderWithCache`` contract plus the per-layer ``cross_decls`` inputs, which
    the encoder component computed once. ``head`` maps hidden states to logits when the decoder module returns
    hidden states (Whisper's ``proj_out``); otherwise ``out.logits`` is used."""

    def __init__(self, decoder: torch.nn.Module, num_layers: int, marker_width: int,
                 head: torch.nn.Module | None = None):
        super().__init__()
        self.decoder, self.num_layers, self.marker_width, self.head = eager_cross_attention(decoder), num_layers, \
            marker_width, head

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                past_keys: torch.Tensor, past_values: torch.Tensor, *cross: torch.Tensor) -> dict[str, torch.Tensor]:
        cache = EncoderDecoderCache(fill_cache(past_keys, past_values, self.num_layers),
                                    cross_cache(cross, self.num_layers))  # cross entries present: computed
        # A stand-in for the encoder states: it only tells each layer to run cross-attention, whose keys and
        # values then come from the cache (transformers' attention reuses an updated cross cache). Its one
        # position gives an all-zero additive encoder mask that broadcasts over the real encoder positions.
        marker = past_keys.new_zeros(input_ids.shape[0], 1, self.marker_width)
        out = self.decoder(input_ids=input_ids.long(), attention_mask=attention_mask.long(),
                           position_ids=position_ids.long(), encoder_hidden_states=marker,
                           past_key_values=cache, use_cache=True, return_dict=True)
        keys, values = new_entries(out.past_key_values.self_attention_cache, self.num_layers, input_ids.shape[1])
        logits = self.head(out.last_hidden_state) if self.head is not None else out.logits
        return {"logits": logits, "new_keys": keys, "new_values": values}


def cache_io(layers: int, kv_heads: int, head_dim: int, vocab: int, *, embeds_width: int | None = None
             ) -> tuple[tuple[TensorDecl, ...], tuple[TensorDecl, ...]]:
    """The declared inputs and outputs of ``DecoderWithCache`` (``EmbedsDecoderWithCache`` with ``embeds_width``)."""
    past = (layers, "batch", kv_heads, "past_sequence", head_dim)
    new = (layers, "batch", kv_heads, "sequence", head_dim)
    first = (TensorDecl("inputs_embeds", "float32", ("batch", "sequence", embeds_width)) if embeds_width
             else TensorDecl("input_ids", "int64", ("batch", "sequence")))
    inputs = (first,
              TensorDecl("position_ids", "int64", ("batch", "sequence")),
              TensorDecl("attention_mask", "int64", ("batch", "total_sequence")),
              TensorDecl("past_keys", "float32", past), TensorDecl("past_values", "float32", past))
    outputs = (TensorDecl("logits", "float32", ("batch", "sequence", vocab)),
               TensorDecl("new_keys", "float32", new), TensorDecl("new_values", "float32", new))
    return inputs, outputs


def cache_sample(layers: int, kv_heads: int, head_dim: int, vocab: int, max_positions: int, *,
                 embeds_width: int | None = None):
    """Sample inputs at ``sizes`` (batch, sequence, past_sequence): random tokens (or embeddings) at explicit
    positions, a past whose last slots are masked out (as unused static slots would be)."""
    def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        batch, seq, past = sizes["batch"], sizes["sequence"], sizes["past_sequence"]
        start = max(0, min(past, max_positions - seq))
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        positions = (torch.arange(seq) + start).repeat(batch, 1)
        mask = torch.ones(batch, past + seq, dtype=torch.int64)
        if past > 2:
            mask[:, past // 2: past] = 0  # unused slots at the end of the past, as in a static buffer
        shape = (layers, batch, kv_heads, past, head_dim)
        first = ({"inputs_embeds": torch.randn(batch, seq, embeds_width, generator=g) * 0.05} if embeds_width
                 else {"input_ids": ids})
        return {**first, "position_ids": positions, "attention_mask": mask,
                "past_keys": torch.randn(shape, generator=g), "past_values": torch.randn(shape, generator=g)}
    return sample


def static_signatures(max_cache_len: int, prompt_buckets: tuple[int, ...]) -> dict[str, dict[str, int]]:
    """``decode`` (one token) and one ``prefill_N`` per prompt bucket, all over a fixed cache."""
    sigs = {"decode": {"batch": 1, "sequence": 1, "past_sequence": max_cache_len, "total_sequence": max_cache_len + 1}}
    for n in prompt_buckets:
        sigs[f"prefill_{n}"] = {"batch": 1, "sequence": n, "past_sequence": max_cache_len,
                                "total_sequence": max_cache_len + n}
    return sigs
