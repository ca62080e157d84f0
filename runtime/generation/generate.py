"""``generate`` and ``stream``: check the request, then run greedy, sampling or beam search on a ``StepModel``.

Everything that can be refused is refused before the model is called (invariant 3: a static cache that is
too small is a ``StaticShapeError`` naming the limit, never a truncated answer).
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np

from mmedge.errors import InputError, StaticShapeError, UsageError
from mmedge.runtime.generation.beam import beam_search
from mmedge.runtime.generation.config import GenerationConfig
from mmedge.runtime.generation.protocol import GenerationOutput, StepModel
from mmedge.runtime.generation.sampling import LoopState, token_loop

Prompt = Union[np.ndarray, Sequence[int]]
Decode = Callable[[list[int]], str]


def _prompt(prompt: Prompt) -> np.ndarray:
    arr = np.asarray(prompt)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"prompt must be a non-empty 1-D list of token ids (got shape {arr.shape}); "
                         "generate() takes one prompt at a time")
    if not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
        raise InputError(f"prompt must hold non-negative integer token ids (got dtype {arr.dtype})")
    return arr.astype(np.int64)


def _new_limit(model: StepModel, num_prompt: int, config: GenerationConfig, continue_cache: bool) -> int:
    """How many tokens may be generated; raise before any model call if the cache cannot hold them."""
    limit = config.max_new_tokens
    if config.max_length is not None:
        limit = min(limit, config.max_length - num_prompt)
        if limit < 1:
            raise InputError(f"the prompt has {num_prompt} tokens but max_length={config.max_length} "
                             "leaves no room for new ones; shorten the prompt or raise max_length")
    capacity = getattr(model, "max_length", None)
    if capacity is not None:
        cached = int(getattr(model, "cache_length", 0) or 0) if continue_cache else 0
        need = cached + num_prompt + limit
        if need > capacity:
            room = capacity - cached - num_prompt
            fix = (f"lower max_new_tokens to {room}" if room >= 1
                   else f"shorten the prompt below {capacity - cached} tokens")
            raise StaticShapeError(
                f"{'cached ' + str(cached) + ' + ' if cached else ''}prompt {num_prompt} + max_new_tokens "
                f"{limit} = {need} tokens exceed the model's cache capacity max_length={capacity}; {fix} "
                "(or export the model with a larger cache)")
    return limit


def _check(config: GenerationConfig, decode: Optional[Decode], streaming: bool) -> None:
    config.validate()
    if config.stop_strings and decode is None:
        raise UsageError(f"stop_strings={config.stop_strings} need decode=<token ids -> text> to be given")
    if streaming and config.num_beams > 1:
        raise UsageError(f"streaming tokens needs num_beams=1 (got {config.num_beams}): beams only know the "
                         "best sequence at the end")


def stream(model: StepModel, prompt: Prompt, config: GenerationConfig, *, continue_cache: bool = False,
           decode: Optional[Decode] = None) -> Iterator[int]:
    """Yield new tokens as they are generated (greedy or sampling; the final eos is not yielded).

    Checks run at the call, not at the first ``next()``. Stop early by leaving the loop. With
    ``continue_cache`` the model's cache is kept (multi-turn chat); it holds every generated token except
    the last one, so the next turn's prompt should start with that token.
    """
    ids = _prompt(prompt)
    _check(config, decode, streaming=True)
    limit = _new_limit(model, ids.shape[0], config, continue_cache)
    return token_loop(model, ids, config, limit, LoopState(), continue_cache=continue_cache, decode=decode)


def generate(model: StepModel, prompt: Prompt, config: GenerationConfig, *, continue_cache: bool = False,
             on_token: Optional[Callable[[int], Optional[bool]]] = None,
             decode: Optional[Decode] = None) -> GenerationOutput:
    """Generate from one prompt: greedy, sampling (``do_sample``, seeded) or beam search (``num_beams > 1``).

    ``on_token(token)`` sees each new token as it comes (not the final eos) and stops generation by returning
    True (greedy and sampling only). ``decode`` turns token ids into text; it is needed for stop strings and
    fills ``GenerationOutput.text``. See ``stream`` for ``continue_cache``.
    """
    ids = _prompt(prompt)
    _check(config, decode, streaming=on_token is not None)
    limit = _new_limit(model, ids.shape[0], config, continue_cache)
    num_prompt = ids.shape[0]
    if config.num_beams > 1:
        sequence, score, ended = beam_search(model, ids, config, limit, continue_cache=continue_cache)
        tokens = sequence[num_prompt:len(sequence) - ended]
        return GenerationOutput(tokens, sequence, "eos" if ended else "max_new_tokens", num_prompt, score,
                                decode(tokens) if decode else None)
    state = LoopState()
    loop = token_loop(model, ids, config, limit, state, continue_cache=continue_cache, decode=decode)
    if on_token is None:
        for _ in loop:
            pass
    else:
        for tok in loop:
            if on_token(tok) is True:
                loop.close()
                state.stop_reason = "callback"
                break
    sequence = ids.tolist() + state.tokens + ([state.eos] if state.eos is not None else [])
    return GenerationOutput(state.tokens, sequence, state.stop_reason, num_prompt, None,
                            decode(state.tokens) if decode else None)
