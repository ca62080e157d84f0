"""Whisper: an ``encoder`` component (log-mel features -> the cross-attention keys/values of every decoder
layer, computed once per 30 s window) and a ``decoder`` component (the shared KV-cache graph of
``decoder_cache`` plus the cross keys/values as inputs), so each decoding step costs only the decoder's
self-attention and projections. The log-mel front end runs in numpy on the device
(``runtime.preprocess.whisper_features``, equal to ``WhisperFeatureExtractor``); its mel filter bank is
stored in the package as ``.npy``. CTranslate2 (faster-whisper) directories are imported first.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from mmedge.errors import ExportError
from mmedge.exporter.families.base import (ComponentSpec, FamilySpec, LoadedFamily, TensorDecl, model_generation_config,
                                           tokenizer_json)
from mmedge.exporter.families.decoder_cache import (CrossDecoderWithCache, cache_io, cache_sample, cross_decls,
                                                   cross_outputs, cross_sample, static_signatures)

PROMPT_BUCKETS = (4, 32)
GENERATION_KEYS = ("decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id", "suppress_tokens",
                   "begin_suppress_tokens", "max_length", "no_timestamps_token_id", "is_multilingual",
                   "lang_to_id", "task_to_id", "max_initial_timestamp_index")


class WhisperEncoderWithCross(torch.nn.Module):
    """Encoder + every decoder layer's cross-attention key/value projections (they only depend on the audio)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.encoder = model.model.encoder
        self.layers = model.model.decoder.layers
        self.heads = model.config.decoder_attention_heads

    def forward(self, input_features: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.encoder(input_features=input_features).last_hidden_state
        batch, frames, width = hidden.shape
        head_dim = width // self.heads

        def project(proj: torch.nn.Module) -> torch.Tensor:
            return proj(hidden).view(batch, frames, self.heads, head_dim).transpose(1, 2)

        return cross_outputs([project(layer.encoder_attn.k_proj) for layer in self.layers],
                             [project(layer.encoder_attn.v_proj) for layer in self.layers])


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


class WhisperSpec(FamilySpec):
    name = "whisper"
    task = "automatic-speech-recognition"
    model_types = ("whisper",)

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, \
            WhisperTokenizerFast

        try:
            model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
            tokenizer = WhisperTokenizerFast.from_pretrained(model_dir)
            features = WhisperFeatureExtractor.from_pretrained(model_dir)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot load a Whisper model, tokenizer and feature extractor from {model_dir}: {e}") from None
        generation = model_generation_config(model, model_dir, only_changed=False)
        cfg = model.config
        layers, heads = cfg.decoder_layers, cfg.decoder_attention_heads
        head_dim, vocab = cfg.d_model // heads, cfg.vocab_size
        frames = cfg.max_source_positions  # encoder output length for 30 s (3000 mel frames / 2)
        mels, mel_frames = cfg.num_mel_bins, 2 * cfg.max_source_positions
        encoder = ComponentSpec(
            name="encoder", description="Whisper encoder + per-layer cross-attention keys/values",
            module=WhisperEncoderWithCross(model).eval(),
            inputs=(TensorDecl("input_features", "float32", ("batch", mels, mel_frames)),),
            outputs=cross_decls(layers, heads, head_dim, frames),
            sample=lambda sizes, seed: {"input_features": torch.randn(
                sizes["batch"], mels, mel_frames, generator=torch.Generator().manual_seed(seed))},
            export_sizes={"batch": 2}, second_sizes={"batch": 1}, static_signatures={"default": {"batch": 1}},
            atol=1e-3)
        inputs, outputs = cache_io(layers, heads, head_dim, vocab)
        inputs += cross_decls(layers, heads, head_dim, frames)
        lm_sample = cache_sample(layers, heads, head_dim, vocab, cfg.max_target_positions)

        def decoder_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(seed + 1000)
            return {**lm_sample(sizes, seed), **cross_sample(layers, heads, head_dim, sizes["batch"], frames, g)}

        max_cache_len = cfg.max_target_positions
        decoder = ComponentSpec(
            name="decoder", description="Whisper decoder with explicit self/cross KV caches -> logits, new keys/values",
            module=CrossDecoderWithCache(model.model.decoder, layers, cfg.d_model, head=model.proj_out).eval(), inputs=inputs, outputs=outputs, sample=decoder_sample,
            export_sizes={"batch": 2, "sequence": 3, "past_sequence": 4},
            second_sizes={"batch": 1, "sequence": 1, "past_sequence": 9},
            more_sizes=({"batch": 1, "sequence": 4, "past_sequence": 0},),
            static_signatures=static_signatures(max_cache_len, PROMPT_BUCKETS),
            needs_dynamo=True, derived_dims=("total_sequence",), atol=1e-3)
        gen = {k: generation[k] for k in GENERATION_KEYS if generation.get(k) is not None}
        gen.setdefault("is_multilingual", cfg.vocab_size >= 51865)
        feature_cfg = {k: v for k, v in features.to_dict().items()
                       if k in ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft", "n_samples",
                                "nb_max_frames", "padding_value", "dither")}
        return LoadedFamily(
            family=self.name, task=self.task, components=[encoder, decoder],
            preprocessing={"audio": {**feature_cfg, "mel_filters_file": "preprocessor/mel_filters.npy"},
                           "text": {"tokenizer_file": "tokenizer/tokenizer.json"}},
            postprocessing={},
            generation={"config": json.loads(json.dumps(gen)),
                        "cache": {"layers": layers, "kv_heads": heads, "head_dim": head_dim,
                                  "max_positions": cfg.max_target_positions, "max_cache_len": max_cache_len,
                                  "prompt_buckets": list(PROMPT_BUCKETS)}},
            files={"tokenizer/tokenizer.json": tokenizer_json(tokenizer, model_dir),
                   "preprocessor/mel_filters.npy": _npy(features.mel_filters.astype(np.float64))})
