"""Logits processors in numpy, each equal to the Hugging Face class of the same job.

Every processor is ``proc(ids, scores) -> scores``: ``ids`` int64 [N, L] is the whole sequence so far
(prompt included, as HF's ``input_ids``), ``scores`` float32 [N, V]. They write into ``scores`` in place
(the caller owns that buffer) so the per-token path allocates nothing vocabulary-sized that it can avoid.
``build_processors`` puts them in HF's order (``GenerationMixin._get_logits_processor``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mmedge.runtime.generation.config import GenerationConfig

Processor = Callable[[np.ndarray, np.ndarray], np.ndarray]
NEG_INF = np.float32(-np.inf)


def _in_vocab(ids: Sequence[int], vocab_size: int) -> np.ndarray:
    """HF masks with ``isin(arange(V), ids)``, so ids outside the vocabulary are silently ignored."""
    arr = np.asarray(list(ids), dtype=np.int64)
    return arr[arr < vocab_size]


class RepetitionPenalty:
    """= ``RepetitionPenaltyLogitsProcessor``: every token seen (prompt too) is divided by / multiplied by penalty."""

    def __init__(self, penalty: float) -> None:
        self.penalty = float(penalty)

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        seen = np.take_along_axis(scores, ids, axis=1)
        np.put_along_axis(scores, ids, np.where(seen < 0, seen * self.penalty, seen / self.penalty), axis=1)
        return scores


class NoRepeatNGram:
    """= ``NoRepeatNGramLogitsProcessor``: ban the tokens that would repeat an n-gram already in the sequence."""

    def __init__(self, ngram_size: int) -> None:
        self.n = int(ngram_size)

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        n, length = self.n, ids.shape[1]
        if length < n:
            return scores
        windows = sliding_window_view(ids, n, axis=1)  # [N, L-n+1, n], a view
        hits = (windows[:, :, :-1] == ids[:, None, length - n + 1:]).all(axis=2)
        rows, starts = np.nonzero(hits)
        scores[rows, windows[rows, starts, -1]] = NEG_INF
        return scores


class MinNewTokens:
    """= ``MinNewTokensLengthLogitsProcessor``: no eos before ``min_new_tokens`` tokens past the prompt."""

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_token_ids: np.ndarray) -> None:
        self.until, self.eos = prompt_length + min_new_tokens, eos_token_ids

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if ids.shape[1] < self.until:
            scores[:, self.eos] = NEG_INF
        return scores


class SuppressTokens:
    """= ``SuppressTokensLogitsProcessor``: these tokens are never generated."""

    def __init__(self, token_ids: np.ndarray) -> None:
        self.ids = token_ids

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores[:, self.ids] = NEG_INF
        return scores


class SuppressTokensAtBegin:
    """= ``SuppressTokensAtBeginLogitsProcessor``: suppressed only when the sequence is ``begin_index`` long
    (Whisper: no blank or eos as the first generated token)."""

    def __init__(self, token_ids: np.ndarray, begin_index: int) -> None:
        self.ids, self.begin_index = token_ids, begin_index

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if ids.shape[1] == self.begin_index:
            scores[:, self.ids] = NEG_INF
        return scores


class Temperature:
    """= ``TemperatureLogitsWarper``."""

    def __init__(self, temperature: float) -> None:
        self.temperature = float(temperature)

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return np.divide(scores, self.temperature, out=scores)


class TopK:
    """= ``TopKLogitsWarper``: keep the ``max(top_k, min_tokens_to_keep)`` best (ties with the k-th kept too)."""

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1) -> None:
        self.top_k = max(int(top_k), min_tokens_to_keep)

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        vocab = scores.shape[1]
        k = min(self.top_k, vocab)
        kth = np.partition(scores, vocab - k, axis=1)[:, vocab - k, None]
        scores[scores < kth] = NEG_INF
        return scores


class TopP:
    """= ``TopPLogitsWarper``: drop the least likely tokens whose total probability is <= 1 - top_p, keeping
    at least ``min_tokens_to_keep``. Like torch, the cumulative sum is accumulated in float64."""

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1) -> None:
        self.top_p, self.min_keep = float(top_p), int(min_tokens_to_keep)

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        alive = scores != NEG_INF
        counts = np.count_nonzero(alive, axis=1)
        if counts[0] < scores.shape[1] and (counts == counts[0]).all():
            # after top-k only a few tokens are left: sort those (the rest are -inf already); argpartition
            # would crawl through the many tied -inf
            order = np.nonzero(alive)[1].reshape(scores.shape[0], -1)
            order = np.take_along_axis(order, np.argsort(np.take_along_axis(scores, order, 1), 1, kind="stable"), 1)
        else:
            order = np.argsort(scores, axis=1, kind="stable")  # ascending, as HF
        ranked = np.take_along_axis(scores, order, axis=1)
        probs = np.exp(ranked - ranked[:, -1:])
        probs /= probs.sum(axis=1, keepdims=True)
        cumulative = np.cumsum(probs, axis=1, dtype=np.float64).astype(np.float32)
        remove = cumulative <= np.float32(1 - self.top_p)
        remove[:, -self.min_keep:] = False
        rows = np.nonzero(remove)[0]
        scores[rows, order[remove]] = NEG_INF
        return scores


def build_processors(config: GenerationConfig, prompt_length: int, vocab_size: int) -> list[Processor]:
    """The processors ``model.generate`` would apply for this config, in HF's order; empty list = plain argmax.

    ``prompt_length`` is the length of the sequence the processors see before the first new token.
    """
    procs: list[Processor] = []
    eos = _in_vocab(config.eos_token_ids, vocab_size)
    if config.repetition_penalty != 1.0:
        procs.append(RepetitionPenalty(config.repetition_penalty))
    if config.no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGram(config.no_repeat_ngram_size))
    if config.min_new_tokens > 0 and config.eos_token_ids:
        procs.append(MinNewTokens(prompt_length, config.min_new_tokens, eos))
    if config.suppress_tokens:
        procs.append(SuppressTokens(_in_vocab(config.suppress_tokens, vocab_size)))
    if config.begin_suppress_tokens:
        procs.append(SuppressTokensAtBegin(_in_vocab(config.begin_suppress_tokens, vocab_size), prompt_length))
    if config.do_sample:
        # beams keep one non-eos token beyond the eos ones so a hypothesis can always continue (HF rule)
        keep = max(2, len(config.eos_token_ids) + 1) if config.num_beams > 1 else 1
        if config.temperature != 1.0:
            procs.append(Temperature(config.temperature))
        if config.top_k != 0:
            procs.append(TopK(config.top_k, keep))
        if config.top_p < 1.0:
            procs.append(TopP(config.top_p, keep))
    return procs


def apply(procs: list[Processor], ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Run the processors in order on ``scores`` (modified in place)."""
    for proc in procs:
        scores = proc(ids, scores)
    return scores
