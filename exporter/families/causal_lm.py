"""Decoder-only language models (GPT-2, Llama, Qwen2, Mistral... anything ``AutoModelForCausalLM`` loads
whose attention uses transformers' cache API): one ``decoder`` component with the shared KV-cache graph
(``decoder_cache``), the tokenizer, generation settings and the chat template's turn markers.

The static contract (``max_cache_len``, prompt buckets) is stated in the manifest's ``generation``
section and in the static signatures' fixed shapes; the runtime refuses a prompt + ``max_new_tokens``
that does not fit before any engine runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmedge.errors import ExportError
from mmedge.exporter.families.base import (ComponentSpec, FamilySpec, LoadedFamily, model_generation_config,
                                           tokenizer_json)
from mmedge.exporter.families.decoder_cache import DecoderWithCache, cache_io, cache_sample, static_signatures

DEFAULT_MAX_CACHE_LEN = 512
DEFAULT_PROMPT_BUCKETS = (16, 64)
CHAT_PROBE = "\x00MMEDGE\x00"


def kv_geometry(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a transformers decoder config."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = text.num_hidden_layers
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    # GPT-2 with heads pruned by transformers' prune_heads (quantize.prune): the config keeps the original head
    # count and lists the removed heads; every layer lost the same number (the pruner guarantees it)
    pruned = {len(v) for v in (getattr(text, "pruned_heads", None) or {}).values()}
    if len(pruned) > 1:
        raise ExportError(f"layers lost different numbers of attention heads ({sorted(pruned)}); the KV cache needs "
                          "one head count: prune the same number of heads in every layer (mmedge optimize --prune)")
    if pruned:
        kv_heads -= pruned.pop()
    return layers, kv_heads, head_dim


def parity_atol(layers: int) -> float:
    """Export parity tolerance (max abs diff on logits and keys/values), 1e-4 per two layers.

    Why it grows with depth: float32 rounding differences between PyTorch and an engine accumulate layer by
    layer. Measured on Qwen2.5-0.5B (24 layers; logits up to ~19, keys up to ~216): up to 4.7e-4 on onnxruntime,
    1.5e-4 on OpenVINO, while the tiny 2-layer test models stay near 1e-6. 1.2e-3 there keeps a 2.5x margin; a
    wrong conversion differs by O(0.1-1).
    """
    return 1e-4 * max(1, layers / 2)


def chat_markers(tokenizer) -> dict | None:
    """The chat template reduced to literal turn markers, so the runtime needs no Jinja: render a
    user turn and a user/assistant exchange with a probe string and cut around it. None when the
    tokenizer has no template or the template is not of that shape."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        user = tokenizer.apply_chat_template([{"role": "user", "content": CHAT_PROBE}], tokenize=False,
                                             add_generation_prompt=True)
        pair = tokenizer.apply_chat_template([{"role": "user", "content": CHAT_PROBE},
                                              {"role": "assistant", "content": CHAT_PROBE}], tokenize=False)
        system = tokenizer.apply_chat_template([{"role": "system", "content": CHAT_PROBE},
                                                {"role": "user", "content": CHAT_PROBE}], tokenize=False,
                                               add_generation_prompt=True)
    except Exception:  # templates that reject these message shapes
        return None
    u_before, u_after = user.split(CHAT_PROBE)
    p_parts = pair.split(CHAT_PROBE)
    s_parts = system.split(CHAT_PROBE)
    if len(p_parts) != 3 or len(s_parts) != 3 or not p_parts[0] == u_before:
        return None
    return {"user_prefix": u_before, "assistant_prefix": u_after, "assistant_suffix": p_parts[2],
            "system_prefix": s_parts[0], "system_suffix": s_parts[1][: len(s_parts[1]) - len(u_before)]
            if s_parts[1].endswith(u_before) else None}


class CausalLmSpec(FamilySpec):
    name = "causal-lm"
    task = "text-generation"
    model_types = ("gpt2", "llama", "qwen2", "mistral", "phi3", "gemma", "smollm3")

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot load a causal LM and its tokenizer from {model_dir}: {e}") from None
        tokenizer_file = tokenizer_json(tokenizer, model_dir)
        generation = model_generation_config(model, model_dir)
        layers, kv_heads, head_dim = kv_geometry(model.config)
        vocab = model.get_output_embeddings().weight.shape[0]
        max_positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions")
        max_cache_len = min(DEFAULT_MAX_CACHE_LEN, max_positions)
        buckets = tuple(b for b in DEFAULT_PROMPT_BUCKETS if b < max_cache_len) or (max(1, max_cache_len // 4),)
        inputs, outputs = cache_io(layers, kv_heads, head_dim, vocab)
        decoder = ComponentSpec(
            name="decoder", description=f"{model.config.model_type} decoder with explicit KV cache -> logits, new keys/values",
            module=DecoderWithCache(model, layers).eval(), inputs=inputs, outputs=outputs,
            sample=cache_sample(layers, kv_heads, head_dim, vocab, max_positions),
            export_sizes={"batch": 2, "sequence": 3, "past_sequence": 4},
            second_sizes={"batch": 1, "sequence": 1, "past_sequence": 9},
            more_sizes=({"batch": 1, "sequence": 5, "past_sequence": 0},),
            static_signatures=static_signatures(max_cache_len, buckets),
            needs_dynamo=True, derived_dims=("total_sequence",), atol=parity_atol(layers))
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
        return LoadedFamily(
            family=self.name, task=self.task, components=[decoder],
            preprocessing={"text": {"tokenizer_file": "tokenizer/tokenizer.json", **special,
                                    "chat": chat_markers(tokenizer)}},
            postprocessing={},
            generation={"config": json.loads(json.dumps(generation, default=str)),
                        "cache": {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim,
                                  "max_positions": max_positions, "max_cache_len": max_cache_len,
                                  "prompt_buckets": list(buckets)}},
            files={"tokenizer/tokenizer.json": tokenizer_file})

    def write_tiny(self, out_dir: Path, variant: str = "gpt2") -> Path:
        from mmedge.exporter.families.causal_lm_tiny import write_tiny_causal_lm

        return write_tiny_causal_lm(out_dir, variant)
