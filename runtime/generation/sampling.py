"""Greedy decoding and multinomial sampling for one sequence, as a generator of tokens.

The per-token path is kept lean: plain greedy takes ``argmax`` of the logits the engine returned, with no
copy; with processors, the logits are copied once into a reused buffer that the processors edit in place;
the token goes back to the engine through a reused [1, 1] array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np

from mmedge.runtime.generation.config import GenerationConfig
from mmedge.runtime.generation.processors import apply, build_processors
from mmedge.runtime.generation.protocol import StepModel, StopReason


@dataclass
class LoopState:
    """What the generator leaves behind: the tokens it yielded, the eos it stopped on, and why it stopped."""

    tokens: list[int] = field(default_factory=list)
    eos: Optional[int] = None
    stop_reason: StopReason = "max_new_tokens"


def sample_next(scores: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token from ``softmax(scores)`` (1-D). -inf tokens are never drawn; only the live ones are
    exponentiated, which after top-k is a handful instead of the whole vocabulary."""
    live = np.flatnonzero(scores != -np.inf)
    probs = scores[live]
    np.exp(probs - probs.max(), out=probs)
    cdf = np.cumsum(probs, dtype=np.float64)
    return int(live[min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), live.shape[0] - 1)])


def token_loop(model: StepModel, prompt: np.ndarray, config: GenerationConfig, new_limit: int,
               state: LoopState, *, continue_cache: bool = False,
               decode: Optional[Callable[[list[int]], str]] = None) -> Iterator[int]:
    """Prefill, then yield each new token (never the eos) until eos, a stop string or ``new_limit`` tokens.

    The consumer may stop early by closing the generator; ``state`` then holds what was produced.
    """
    if not continue_cache:
        model.reset()
    logits = model.extend(prompt[None, :])
    length = prompt.shape[0]
    procs = build_processors(config, length, logits.shape[-1])
    rng = np.random.default_rng(config.seed) if config.do_sample else None
    eos = frozenset(config.eos_token_ids)
    stops = config.stop_strings
    work = np.empty((1, logits.shape[-1]), np.float32) if procs or rng is not None else None
    ids = np.empty((1, length + new_limit), np.int64)
    ids[0, :length] = prompt
    step = np.empty((1, 1), np.int64)
    for n in range(new_limit):
        if work is None:
            tok = int(logits[0].argmax())
        else:
            np.copyto(work, logits)
            scores = apply(procs, ids[:, :length + n], work)[0]
            tok = int(scores.argmax()) if rng is None else sample_next(scores, rng)
        if tok in eos:
            state.eos, state.stop_reason = tok, "eos"
            return
        ids[0, length + n] = tok
        state.tokens.append(tok)
        yield tok
        if stops and decode is not None:
            text = decode(state.tokens)
            if any(s in text for s in stops):
                state.stop_reason = "stop_string"
                return
        if n + 1 < new_limit:
            step[0, 0] = tok
            logits = model.extend(step)
    state.stop_reason = "max_new_tokens"
