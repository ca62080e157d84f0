"""Encoder-decoder text generation (translation, summarisation): T5 / mT5 and Marian / BART / mBART.

The same split as Whisper (``whisper.py``), for text:

- ``encoder``: ``input_ids`` + ``attention_mask`` [B, S] -> the cross-attention keys/values of every decoder
  layer (per layer, keys transposed: ``decoder_cache.cross_decls``), computed once per input. S is the named dim
  ``encoder_sequence``; static variants fix it to the ``max_source_len`` bucket, the runtime pads the input
  to it and the padded positions are masked out (in the encoder's own attention and in cross-attention).
- ``decoder``: the shared KV-cache graph of ``decoder_cache`` (explicit positions, a mask over past + new
  slots, stacked past keys/values in, logits + only the new keys/values out; ``decode`` + ``prefill_N``
  static signatures) plus the cross keys/values and ``encoder_attention_mask`` [B, S] (cross-attention
  must not look at the padding of a static encoder bucket).

How the decoder reuses transformers unchanged although neither family takes ``position_ids``:
transformers 4.57's T5 and Marian decoders derive everything position-like from ``cache_position`` (Marian: the
sinusoidal table row; T5: the query side of the relative position bias) *and* build their causal mask from it.
With the static cache layout (a fixed buffer of ``max_cache_len`` slots, then the new tokens) the two needs
disagree: the causal structure is that of the buffer layout, the positions are the real ones. So the wrapper
passes the explicit positions as ``cache_position`` and the mask as a ready 4-D additive mask of the layout
(transformers uses a 4-D mask as given). T5 needs one more thing: its relative bias also takes the *key*
positions from ``arange(key_length)``, which is right for a dynamic past but not for the static buffer, where the
new keys sit at slot ``max_cache_len + j`` but have position ``length + j``. (For one new token this happens not
to matter: the decoder's unidirectional buckets put "itself" and "the future" in the same bucket 0, so ``decode``
steps come out right either way; a ``prefill_N`` chunk of several tokens does not.) ``explicit_position_bias``
swaps the bias computation for one that takes key positions as "slot i holds position i, new tokens hold their
explicit positions"; it is identical to transformers' own whenever the layout is dynamic (what ``model.generate``
computes). The explicit-positions input therefore matters for both families; rows share one position vector
(the runtime feeds them that way).

Two converter-driven details, both checked by the parity runs: T5's relative positions are int32 (TFLite has no
int64 ``abs``), and the T5 encoder's positions are computed from the data so that a fixed-shape graph does not
hold the bias as a constant (see ``EncoderWithCross.forward``: OpenVINO's CPU plugin folds a constant bias into
the mask's ``finfo.min`` and loses it).

The model's own ``forward`` (with ``encoder_outputs`` given) produces the logits, so head details stay
upstream's: T5's tied-head rescaling, Marian's ``final_logits_bias``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers.cache_utils import EncoderDecoderCache

from mmedge.errors import ExportError
from mmedge.exporter.families.base import (ComponentSpec, FamilySpec, LoadedFamily, TensorDecl, model_generation_config,
                                           right_padded_ids, tokenizer_json)
from mmedge.exporter.families.decoder_cache import (cache_io, cache_sample, cross_cache, cross_decls, cross_outputs,
                                                   cross_sample, eager_cross_attention, fill_cache, new_entries,
                                                   static_signatures)

#: Decoder prompts are one start token (two or three with forced language tokens): one small prefill bucket.
PROMPT_BUCKETS = (4,)
#: Static contract of real models: 256 source tokens (a long paragraph) and 256 target tokens.
DEFAULT_MAX_SOURCE_LEN = 256
DEFAULT_MAX_CACHE_LEN = 256
#: T5 has relative positions only; this bounds a dynamic decoder's length (T5 was trained on 512).
T5_MAX_POSITIONS = 512
T5_TYPES = ("t5", "mt5")
BART_LIKE_TYPES = ("marian", "bart", "mbart")
#: generation_config keys the slim runtime cannot honour yet: recorded in the manifest, not silently lost.
#: (forced_bos_token_id / forced_eos_token_id are honoured by the runtime pipeline: BART, mBART, Marian.)
UNSUPPORTED_GENERATION = ("forced_decoder_ids",)


@dataclass
class Architecture:
    """Where the parts of one encoder-decoder model type are, so the wrappers stay model-type agnostic."""

    encoder: torch.nn.Module
    cross_projections: list[tuple[torch.nn.Module, torch.nn.Module]]  # per decoder layer: (key, value) Linear
    layers: int
    heads: int
    head_dim: int
    d_model: int
    max_positions: int            # decoder positions the graph supports (Marian: its sinusoid table)
    max_source_positions: int | None  # encoder positions (None: relative positions, no table)
    # T5: the encoder / decoder attentions that own the relative position bias (None: absolute positions)
    encoder_relative_bias: torch.nn.Module | None
    decoder_relative_bias: torch.nn.Module | None


def architecture(model: torch.nn.Module) -> Architecture:
    """The ``Architecture`` of a loaded ``*ForConditionalGeneration`` model."""
    cfg = model.config
    if cfg.model_type in T5_TYPES:
        blocks = model.decoder.block
        positions = getattr(cfg, "n_positions", None) or T5_MAX_POSITIONS
        cross = [b.layer[1].EncDecAttention for b in blocks]
        return Architecture(encoder=model.get_encoder(), cross_projections=[(a.k, a.v) for a in cross],
                            layers=len(blocks), heads=cfg.num_heads, head_dim=cfg.d_kv, d_model=cfg.d_model,
                            max_positions=positions, max_source_positions=None,
                            encoder_relative_bias=model.encoder.block[0].layer[0].SelfAttention,
                            decoder_relative_bias=blocks[0].layer[0].SelfAttention)
    if cfg.model_type in BART_LIKE_TYPES:
        layers = model.get_decoder().layers
        heads = cfg.decoder_attention_heads
        cross = [layer.encoder_attn for layer in layers]
        return Architecture(encoder=model.get_encoder(), cross_projections=[(a.k_proj, a.v_proj) for a in cross],
                            layers=len(layers), heads=heads, head_dim=cfg.d_model // heads, d_model=cfg.d_model,
                            max_positions=cfg.max_position_embeddings,
                            max_source_positions=cfg.max_position_embeddings, encoder_relative_bias=None,
                            decoder_relative_bias=None)
    raise ExportError(f"the seq2seq family has no layout for model_type '{cfg.model_type}' "
                      f"(supported: {', '.join(T5_TYPES + BART_LIKE_TYPES)})")


def explicit_position_bias(attention: torch.nn.Module) -> None:
    """Make a T5 attention compute its relative bias from explicit positions (see the module doc).

    ``cache_position`` carries the new tokens' positions [T]; keys are the cache slots (slot i = position i)
    followed by the new tokens. With a dynamic past (and always in the encoder, which has no past) this is
    ``arange(key_length)``, i.e. exactly transformers' ``compute_bias``, so the model behaves as before for every
    other caller. The relative positions are int32: TFLite has no int64 ``abs``. Installed once per attention.
    """
    if getattr(attention, "_mmedge_explicit_bias", False):
        return
    original: Callable = attention.compute_bias

    def compute_bias(query_length, key_length, device=None, cache_position=None):
        if cache_position is None:
            return original(query_length, key_length, device=device)
        queries = cache_position.int()
        past = key_length - queries.shape[0]
        memory = torch.cat([torch.arange(past, dtype=torch.int32, device=queries.device), queries])
        relative = memory[None, :] - queries[:, None]  # [T, K]
        buckets = attention._relative_position_bucket(
            relative, bidirectional=not attention.is_decoder, num_buckets=attention.relative_attention_num_buckets,
            max_distance=attention.relative_attention_max_distance)
        return attention.relative_attention_bias(buckets).permute([2, 0, 1]).unsqueeze(0)  # [1, H, T, K]

    attention.compute_bias = compute_bias
    attention._mmedge_explicit_bias = True


def layout_mask(attention_mask: torch.Tensor, past: int, new: int, dtype: torch.dtype) -> torch.Tensor:
    """The additive [B, 1, T, P+T] mask of the cache layout: a new token sees the allowed past slots and the
    new tokens up to itself. Positions play no part: they are explicit."""
    keys = torch.arange(past + new, device=attention_mask.device)
    queries = torch.arange(new, device=attention_mask.device)
    causal = (keys[None, :] < past) | (keys[None, :] - past <= queries[:, None])  # [T, K]
    allowed = causal[None, :, :] & (attention_mask[:, None, :] != 0)  # [B, T, K]
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype)
    return torch.where(allowed, torch.zeros((), dtype=dtype), blocked)[:, None]


class EncoderWithCross(torch.nn.Module):
    """Encoder + every decoder layer's cross-attention key/value projections (they depend only on the input)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.encoder = arch.encoder
        self.keys = torch.nn.ModuleList(k for k, _ in arch.cross_projections)
        self.values = torch.nn.ModuleList(v for _, v in arch.cross_projections)
        self.heads, self.head_dim = arch.heads, arch.head_dim
        self.runtime_positions = arch.encoder_relative_bias is not None
        if self.runtime_positions:
            explicit_position_bias(arch.encoder_relative_bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        # .long(): TFLite graphs take int32 ids; a no-op for the int64 ONNX/OpenVINO graphs.
        mask = attention_mask.long()
        extra = {}
        if self.runtime_positions:
            # T5's encoder bias depends only on positions, so a fixed-shape graph holds it as a constant, and
            # OpenVINO's CPU plugin then folds "bias + (1 - mask) * finfo.min" into "mask * -min + (bias + min)",
            # where float32 loses the bias entirely (0.1-0.3 off at every static shape; dynamic graphs are
            # fine). Positions 0..S-1 computed from the data (a cumsum over an always-true test) keep the bias a
            # runtime value; the numbers are those of transformers' own arange.
            extra["cache_position"] = torch.cumsum((mask[0] >= 0).long(), 0) - 1
        hidden = self.encoder(input_ids=input_ids.long(), attention_mask=mask, **extra).last_hidden_state
        batch, length = hidden.shape[:2]

        def project(proj: torch.nn.Module) -> torch.Tensor:
            return proj(hidden).view(batch, length, self.heads, self.head_dim).transpose(1, 2)

        return cross_outputs([project(k) for k in self.keys], [project(v) for v in self.values])


class Seq2SeqDecoderWithCache(torch.nn.Module):
    """The decoder over explicit self-attention and cross-attention caches (see the module doc)."""

    def __init__(self, model: torch.nn.Module, arch: Architecture):
        super().__init__()
        self.model, self.num_layers, self.d_model = eager_cross_attention(model), arch.layers, arch.d_model
        if arch.decoder_relative_bias is not None:
            explicit_position_bias(arch.decoder_relative_bias)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                past_keys: torch.Tensor, past_values: torch.Tensor, encoder_attention_mask: torch.Tensor,
                *cross: torch.Tensor) -> dict[str, torch.Tensor]:
        # cross entries present -> marked as computed
        cache = EncoderDecoderCache(fill_cache(past_keys, past_values, self.num_layers),
                                    cross_cache(cross, self.num_layers))
        new = input_ids.shape[1]
        mask = layout_mask(attention_mask, past_keys.shape[3], new, past_keys.dtype)
        # A stand-in for the encoder states: it only makes each layer run cross-attention, whose keys and values
        # then come from the cache (the attention modules reuse an updated cross cache).
        marker = past_keys.new_zeros(input_ids.shape[0], 1, self.d_model)
        out = self.model(encoder_outputs=(marker,), attention_mask=encoder_attention_mask.long(),
                         decoder_input_ids=input_ids.long(), decoder_attention_mask=mask, past_key_values=cache,
                         use_cache=True, cache_position=position_ids[0].long())
        keys, values = new_entries(out.past_key_values.self_attention_cache, self.num_layers, new)
        return {"logits": out.logits, "new_keys": keys, "new_values": values}


def static_limits(config: Any, arch: Architecture) -> tuple[int, int]:
    """(max_source_len, max_cache_len) of the static variants: the family defaults, or the
    ``mmedge_max_source_len`` / ``mmedge_max_cache_len`` a config asks for (the tiny test models do), never
    beyond the model's position tables."""
    source = int(getattr(config, "mmedge_max_source_len", None) or DEFAULT_MAX_SOURCE_LEN)
    cache = int(getattr(config, "mmedge_max_cache_len", None) or DEFAULT_MAX_CACHE_LEN)
    if arch.max_source_positions:
        source = min(source, arch.max_source_positions)
    return source, min(cache, arch.max_positions)


def generation_settings(generation: dict, config: Any) -> tuple[dict, dict]:
    """The manifest's generation config and what of the model's could not be kept.

    ``bad_words_ids`` made of single tokens (Marian bans its pad token this way) become ``suppress_tokens``,
    which ``NoBadWordsLogitsProcessor`` and ``SuppressTokensLogitsProcessor`` treat alike. Multi-token bad words
    and ``forced_decoder_ids`` have no runtime equivalent: they are listed under ``unsupported`` so the package
    says so. ``forced_bos_token_id``/``forced_eos_token_id`` stay (the runtime pipeline applies them).
    """
    gen = dict(generation)
    for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
        if gen.get(key) is None and getattr(config, key, None) is not None:
            gen[key] = getattr(config, key)
    if gen.get("decoder_start_token_id") is None:
        raise ExportError("the model has no decoder_start_token_id (config or generation_config); set one")
    unsupported = {}
    bad = gen.pop("bad_words_ids", None)
    if bad:
        singles = [ids[0] for ids in bad if len(ids) == 1]
        if len(singles) != len(bad):
            unsupported["bad_words_ids"] = [ids for ids in bad if len(ids) != 1]
        gen["suppress_tokens"] = sorted(set(gen.get("suppress_tokens") or []) | set(singles))
    for key in UNSUPPORTED_GENERATION:
        if gen.get(key) is not None:
            unsupported[key] = gen.pop(key)
    return json.loads(json.dumps(gen, default=str)), unsupported


class Seq2SeqSpec(FamilySpec):
    name = "seq2seq"
    task = "text2text-generation"
    model_types = T5_TYPES + BART_LIKE_TYPES

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot load an encoder-decoder model and its tokenizer from {model_dir}: {e}") from None
        if not getattr(tokenizer, "is_fast", False):
            raise ExportError(f"{model_dir} has only a slow {type(tokenizer).__name__} (no tokenizer.json); the slim "
                              "runtime needs a fast tokenizer: save one with tokenizer.json next to the model "
                              "(Marian's two SentencePiece models have no converter in transformers)")
        generation = model_generation_config(model, model_dir)
        arch = architecture(model)
        cfg = model.config
        vocab = model.get_output_embeddings().weight.shape[0]
        layers, heads, head_dim = arch.layers, arch.heads, arch.head_dim
        max_source_len, max_cache_len = static_limits(cfg, arch)
        buckets = tuple(b for b in PROMPT_BUCKETS if b < max_cache_len)

        encoder_sample = right_padded_ids(vocab)

        encoder = ComponentSpec(
            name="encoder", description=f"{cfg.model_type} encoder + per-layer cross-attention keys/values",
            module=EncoderWithCross(arch).eval(),
            inputs=(TensorDecl("input_ids", "int64", ("batch", "encoder_sequence")),
                    TensorDecl("attention_mask", "int64", ("batch", "encoder_sequence"))),
            outputs=cross_decls(layers, heads, head_dim, "encoder_sequence"),
            sample=encoder_sample, export_sizes={"batch": 2, "encoder_sequence": 7},
            second_sizes={"batch": 1, "encoder_sequence": 12},
            static_signatures={"default": {"batch": 1, "encoder_sequence": max_source_len}},
            needs_dynamo=True, atol=1e-4)

        inputs, outputs = cache_io(layers, heads, head_dim, vocab)
        inputs += (TensorDecl("encoder_attention_mask", "int64", ("batch", "encoder_sequence")),
                   *cross_decls(layers, heads, head_dim, "encoder_sequence"))
        lm_sample = cache_sample(layers, heads, head_dim, vocab, arch.max_positions)

        def decoder_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(seed + 1000)
            batch, length = sizes["batch"], sizes["encoder_sequence"]
            mask = torch.ones(batch, length, dtype=torch.int64)
            mask[:, max(1, length - length // 4):] = 0  # a padded static bucket
            return {**lm_sample(sizes, seed), "encoder_attention_mask": mask,
                    **cross_sample(layers, heads, head_dim, batch, length, g)}

        signatures = {name: {**sizes, "encoder_sequence": max_source_len}
                      for name, sizes in static_signatures(max_cache_len, buckets).items()}
        decoder = ComponentSpec(
            name="decoder", description=f"{cfg.model_type} decoder with explicit self/cross KV caches -> logits, "
                                        "new keys/values",
            module=Seq2SeqDecoderWithCache(model, arch).eval(), inputs=inputs, outputs=outputs, sample=decoder_sample,
            export_sizes={"batch": 2, "sequence": 3, "past_sequence": 4, "encoder_sequence": 7},
            second_sizes={"batch": 1, "sequence": 1, "past_sequence": 9, "encoder_sequence": 5},
            more_sizes=({"batch": 1, "sequence": 4, "past_sequence": 0, "encoder_sequence": 6},),
            static_signatures=signatures, needs_dynamo=True, derived_dims=("total_sequence",), atol=1e-4)

        gen, unsupported = generation_settings(generation, cfg)
        task_params = getattr(cfg, "task_specific_params", None) or {}
        prefixes = {task: params["prefix"] for task, params in task_params.items()
                    if isinstance(params, dict) and params.get("prefix")}
        return LoadedFamily(
            family=self.name, task=self.task, components=[encoder, decoder],
            preprocessing={"text": {"tokenizer_file": "tokenizer/tokenizer.json",
                                    "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
                                    "max_source_len": max_source_len,
                                    "max_source_positions": arch.max_source_positions,
                                    "task_prefixes": prefixes}},
            postprocessing={},
            generation={"config": gen, "unsupported": unsupported,
                        "cache": {"layers": layers, "kv_heads": heads, "head_dim": head_dim,
                                  "max_positions": arch.max_positions, "max_cache_len": max_cache_len,
                                  "prompt_buckets": list(buckets)}},
            files={"tokenizer/tokenizer.json": tokenizer_json(tokenizer, model_dir)})

    def write_tiny(self, out_dir: Path, variant: str = "t5") -> Path:
        from mmedge.exporter.families.seq2seq_tiny import write_tiny_seq2seq

        return write_tiny_seq2seq(out_dir, variant)
