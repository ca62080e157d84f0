"""What the decoding loop needs from a model (``StepModel``) and what it gives back (``GenerationOutput``).

The model keeps its own KV cache (dynamic past, static buffers or engine state) so the loop never touches
cache tensors: it passes token ids in and gets last-position logits out, one engine call per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Protocol, runtime_checkable

import numpy as np

StopReason = Literal["eos", "max_new_tokens", "stop_string", "callback"]


@runtime_checkable
class StepModel(Protocol):
    """A decoder with its KV cache held inside.

    Prefill is ``reset()`` then ``extend(prompt)``; each step is ``extend(next_ids[:, None])``. A multi-turn
    chat ``extend``s the next prompt on the kept cache. ``max_length`` is the total number of tokens the cache
    holds (``None`` = unbounded). A model may also expose ``cache_length`` (tokens now cached) so that
    ``generate(..., continue_cache=True)`` can check capacity before calling it.
    """

    max_length: Optional[int]

    def reset(self) -> None:
        """Forget the cache."""

    def extend(self, ids: np.ndarray) -> np.ndarray:
        """Append ids int64 [N, T] to the cache; return float32 logits [N, V] of the last position."""

    def reorder(self, rows: np.ndarray) -> None:
        """Beam search: new row i continues old row ``rows[i]`` (int64 [N]; N may differ from the old N)."""


@dataclass
class GenerationOutput:
    """One finished generation.

    ``tokens`` are the new tokens without a final eos; ``sequence`` is prompt + new tokens including the eos
    (what HF's ``generate`` returns). ``score`` is the length-penalised log-probability of the chosen beam
    (HF's ``sequences_scores``), ``None`` for greedy and sampling. ``text`` is ``decode(tokens)`` when a
    ``decode`` was given.
    """

    tokens: list[int]
    sequence: list[int]
    stop_reason: StopReason
    num_prompt_tokens: int
    score: Optional[float] = None
    text: Optional[str] = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)
