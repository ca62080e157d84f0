"""``CachedDecoder``: the engine-backed ``StepModel`` for the shared KV-cache decoder graph.

The graph (see the exporter's ``decoder_cache``) takes the past keys/values of all layers stacked as
[L, N, H, P, D] plus explicit positions and a mask, and returns logits and only the *new* keys/values.
This class owns the cache:

- dynamic artifacts: the past is exactly the cached tokens (P grows; P = 0 at prefill); each step appends
  the new keys/values (one concatenation, the copy any growing cache needs);
- static artifacts: the past is a fixed ``max_cache_len`` buffer, unused slots masked out; new keys/values
  are written into it in place; prompts go through the ``prefill_N`` signatures (smallest bucket that fits,
  longer prompts in chunks), single tokens through ``decode``.

Exceeding the cache or the model's position range is a ``StaticShapeError`` before the engine runs.
"""

from __future__ import annotations

import numpy as np

from mmedge.errors import StaticShapeError, UsageError
from mmedge.runtime.runner import ComponentRunner


class CachedDecoder:
    """Implements ``mmedge.runtime.generation.StepModel``. ``extra_feeds`` are passed on every call
    (e.g. an encoder's cross-attention keys/values). A graph fed with ``inputs_embeds`` (multimodal LMs)
    gets token embeddings looked up in ``embeddings`` [vocab, hidden]; ``extend_embeds`` feeds ready-made
    embeddings (a prompt with image features spliced in)."""

    def __init__(self, runner: ComponentRunner, cache: dict, *, pad_token_id: int = 0,
                 extra_feeds: dict[str, np.ndarray] | None = None, embeddings: np.ndarray | None = None):
        self.runner, self.extra_feeds = runner, dict(extra_feeds or {})
        self._token_input = "inputs_embeds" if any(t.name == "inputs_embeds" for t in runner.artifact.inputs) else "input_ids"
        if self._token_input == "inputs_embeds" and embeddings is None:
            raise UsageError("this decoder takes embeddings: give CachedDecoder the token embedding table")
        self.embeddings = embeddings
        # Extra feeds (an encoder's cross keys/values) are the same for every row: expanded once to the row
        # count along their batch axis, never re-gathered by beam reordering.
        self._extra_axes = {k: runner.input_spec(k).axis("batch") for k in self.extra_feeds}
        self._extra_rows = {k: v if a is None or v.shape[a] == 1 else np.take(v, [0], axis=a)
                            for k, v in self.extra_feeds.items() for a in [self._extra_axes[k]]}
        # The cache and the encoder outputs come from the model itself: no NaN/Inf scan per step.
        runner.trust({"past_keys", "past_values", "inputs_embeds", *self.extra_feeds})
        self.layers, self.kv_heads, self.head_dim = int(cache["layers"]), int(cache["kv_heads"]), int(cache["head_dim"])
        self.max_positions = int(cache["max_positions"])
        self.static = runner.artifact.static
        self.pad_token_id = int(pad_token_id)
        if self.static:
            self.capacity = int(cache["max_cache_len"])
            self.buckets = sorted(int(name.split("_", 1)[1]) for name in runner.signatures if name.startswith("prefill_"))
            self.max_length: int | None = min(self.capacity, self.max_positions)
        else:
            self.max_length = self.max_positions
        self.reset()

    @property
    def cache_length(self) -> int:
        return self.length

    def reset(self, rows: int = 1) -> None:
        self.length = 0
        self.extra_feeds = dict(self._extra_rows)
        shape = (self.layers, rows, self.kv_heads, self.capacity if self.static else 0, self.head_dim)
        self.keys = np.zeros(shape, np.float32)
        self.values = np.zeros(shape, np.float32)

    def reorder(self, rows: np.ndarray) -> None:
        self.keys = np.ascontiguousarray(self.keys[:, rows])
        self.values = np.ascontiguousarray(self.values[:, rows])
        n = len(rows)
        for k, axis in self._extra_axes.items():
            if axis is not None and self.extra_feeds[k].shape[axis] != n:
                self.extra_feeds[k] = np.ascontiguousarray(np.repeat(self._extra_rows[k], n, axis=axis))

    def _rows(self, n: int) -> None:
        if self.keys.shape[1] != n:
            if self.keys.shape[1] != 1:
                raise StaticShapeError(f"the cache holds {self.keys.shape[1]} rows, the call has {n}")
            self.reorder(np.zeros(n, np.int64))
        elif any(a is not None and self.extra_feeds[k].shape[a] != n for k, a in self._extra_axes.items()):
            self.reorder(np.arange(n))

    def extend(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        if self.embeddings is not None:
            return self.extend_embeds(self.embeddings[ids])
        return self._extend(ids)

    def extend_embeds(self, embeds: np.ndarray) -> np.ndarray:
        """Append ready-made input embeddings [N, T, hidden] (e.g. text with image features spliced in)."""
        if self._token_input != "inputs_embeds":
            raise UsageError("this decoder takes token ids, not embeddings")
        return self._extend(np.ascontiguousarray(embeds, dtype=np.float32))

    def _extend(self, tokens: np.ndarray) -> np.ndarray:
        n, t = tokens.shape[:2]
        if self.length + t > (self.max_length or self.length + t):
            raise StaticShapeError(
                f"{self.length} cached + {t} new tokens exceed this decoder's limit of {self.max_length} "
                f"({'max_cache_len' if self.static and self.capacity <= self.max_positions else 'max positions'}); "
                "shorten the prompt or lower max_new_tokens")
        self._rows(n)
        return self._extend_static(tokens) if self.static else self._extend_dynamic(tokens)

    def _extend_dynamic(self, tokens: np.ndarray) -> np.ndarray:
        n, t = tokens.shape[:2]
        positions = np.broadcast_to(np.arange(self.length, self.length + t, dtype=np.int64), (n, t))
        out = self.runner(**{self._token_input: tokens}, position_ids=np.ascontiguousarray(positions),
                          attention_mask=np.ones((n, self.length + t), np.int64),
                          past_keys=self.keys, past_values=self.values, **self.extra_feeds)
        self.keys = np.concatenate([self.keys, out["new_keys"]], axis=3)
        self.values = np.concatenate([self.values, out["new_values"]], axis=3)
        self.length += t
        return out["logits"][:, -1]

    def _extend_static(self, tokens: np.ndarray) -> np.ndarray:
        logits = None
        start = 0
        while start < tokens.shape[1]:
            remaining = tokens.shape[1] - start
            if remaining == 1:
                name, size = "decode", 1
            else:
                size = next((b for b in self.buckets if b >= remaining), self.buckets[-1])
                name = f"prefill_{size}"
            real = min(size, remaining)
            logits = self._run_static(name, size, tokens[:, start:start + real])
            start += real
        return logits

    def _run_static(self, signature: str, size: int, chunk: np.ndarray) -> np.ndarray:
        n, real = chunk.shape[:2]
        if chunk.ndim == 2:  # token ids, padded with the pad token
            feed = np.full((n, size), self.pad_token_id, np.int64)
        else:  # embeddings, padded with zeros
            feed = np.zeros((n, size, chunk.shape[2]), np.float32)
        feed[:, :real] = chunk
        # Padded positions continue the sequence (clamped to the position table); they are masked out and,
        # coming after the real tokens, never seen by them (causal attention).
        positions = np.minimum(np.arange(self.length, self.length + size, dtype=np.int64), self.max_positions - 1)
        mask = np.zeros((n, self.capacity + size), np.int64)
        mask[:, : self.length] = 1
        mask[:, self.capacity: self.capacity + real] = 1
        out = self.runner.signature(signature)(
            **{self._token_input: feed}, position_ids=np.ascontiguousarray(np.broadcast_to(positions, (n, size))),
            attention_mask=mask, past_keys=self.keys, past_values=self.values, **self.extra_feeds)
        self.keys[:, :, :, self.length: self.length + real] = out["new_keys"][:, :, :, :real]
        self.values[:, :, :, self.length: self.length + real] = out["new_values"][:, :, :, :real]
        self.length += real
        return out["logits"][:, real - 1]
