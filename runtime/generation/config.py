"""The generation settings: one dataclass that a package manifest stores and a user overrides.

Defaults follow Hugging Face's ``GenerationConfig`` (``top_k=50``, ``temperature=1.0``...), so a model's
``generation_config.json`` means the same thing here as under ``model.generate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Union

from mmedge.errors import UsageError

EarlyStopping = Union[bool, str]  # True, False or "never", as in Hugging Face
DEFAULT_MAX_NEW_TOKENS = 64  # when the model sets no length (see GenerationConfig)


def _ids(value: Any) -> list[int]:
    """HF writes a token id list as an int, a list or null."""
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick tokens. ``max_length`` (prompt + new, HF's meaning) only caps ``max_new_tokens`` further.

    Length policy (the one place it is decided): a length the model's generation config sets is honoured
    exactly as ``model.generate`` reads it (families whose HF ``generate`` rewrites the default, like the
    captioners, store the rewritten value). When the model sets none, ``model.generate`` falls back to
    ``max_length=20`` *counting the prompt* (with a warning), so a chat prompt of 20 tokens gets no answer at
    all; mmedge generates up to ``DEFAULT_MAX_NEW_TOKENS`` new tokens instead. Comparisons with transformers
    therefore pass ``max_new_tokens`` explicitly to both sides."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_new_tokens: int = 0
    max_length: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: EarlyStopping = False
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    stop_strings: list[str] = field(default_factory=list)
    suppress_tokens: list[int] = field(default_factory=list)
    begin_suppress_tokens: list[int] = field(default_factory=list)
    seed: int | None = None

    def validate(self) -> GenerationConfig:
        """Raise ``UsageError`` naming the first bad value and its fix; return self to allow chaining."""
        def bad(what: str, fix: str) -> UsageError:
            return UsageError(f"generation config: {what}; {fix}")

        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise bad(f"max_new_tokens={self.max_new_tokens!r}", "give an integer >= 1")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise bad(f"max_length={self.max_length!r}", "give an integer >= 1 or None")
        if not isinstance(self.min_new_tokens, int) or self.min_new_tokens < 0:
            raise bad(f"min_new_tokens={self.min_new_tokens!r}", "give an integer >= 0")
        if self.do_sample and not self.temperature > 0:
            raise bad(f"temperature={self.temperature!r} with do_sample=True",
                      "give a temperature > 0, or do_sample=False for greedy decoding")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise bad(f"top_k={self.top_k!r}", "give an integer >= 0 (0 disables top-k)")
        if not 0 < self.top_p <= 1:
            raise bad(f"top_p={self.top_p!r}", "give a value in (0, 1] (1 disables top-p)")
        if not self.repetition_penalty > 0:
            raise bad(f"repetition_penalty={self.repetition_penalty!r}", "give a value > 0 (1 disables it)")
        if not isinstance(self.no_repeat_ngram_size, int) or self.no_repeat_ngram_size < 0:
            raise bad(f"no_repeat_ngram_size={self.no_repeat_ngram_size!r}", "give an integer >= 0 (0 disables it)")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise bad(f"num_beams={self.num_beams!r}", "give an integer >= 1 (1 = greedy or sampling)")
        if self.early_stopping not in (True, False, "never"):
            raise bad(f"early_stopping={self.early_stopping!r}", 'give True, False or "never"')
        for name in ("eos_token_ids", "suppress_tokens", "begin_suppress_tokens"):
            ids = getattr(self, name)
            if not isinstance(ids, list) or any(not isinstance(i, int) or i < 0 for i in ids):
                raise bad(f"{name}={ids!r}", "give non-negative integer token ids")
        if not isinstance(self.stop_strings, list) or any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise bad(f"stop_strings={self.stop_strings!r}", "give non-empty strings")
        if self.stop_strings and self.num_beams > 1:
            raise bad(f"stop_strings with num_beams={self.num_beams}",
                      "stop strings work with greedy decoding and sampling only: set num_beams=1")
        return self

    def with_overrides(self, **overrides: Any) -> GenerationConfig:
        """A validated copy with some fields changed (``eos_token_id`` etc. in HF spelling are accepted too)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(k for k in overrides if k not in known and k not in _HF_ALIASES)
        if unknown:
            raise UsageError(f"unknown generation setting(s) {unknown}; known: {sorted(known)}")
        return replace(self, **_normalise(overrides)).validate()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ``from_dict(to_dict())`` gives the same config back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """Read our own ``to_dict`` or a Hugging Face ``generation_config.json``; unknown keys are ignored.

        HF's ``max_length`` counts the prompt; it is kept as ``max_length`` (a cap on prompt + new tokens) and,
        without ``max_new_tokens``, also bounds ``max_new_tokens``, which is how ``model.generate`` reads it.
        """
        known = {f.name for f in fields(cls)}
        kw = _normalise({k: v for k, v in data.items() if (k in known or k in _HF_ALIASES) and v is not None})
        if "max_new_tokens" not in kw and kw.get("max_length"):
            kw["max_new_tokens"] = kw["max_length"]
        return cls(**kw).validate()


_HF_ALIASES = {"eos_token_id": "eos_token_ids"}
_LISTS = ("eos_token_ids", "suppress_tokens", "begin_suppress_tokens")


def _normalise(kw: dict[str, Any]) -> dict[str, Any]:
    out = {_HF_ALIASES.get(k, k): v for k, v in kw.items()}
    for name in _LISTS:
        if name in out:
            out[name] = _ids(out[name])
    if isinstance(out.get("stop_strings"), str):
        out["stop_strings"] = [out["stop_strings"]]
    if "stop_strings" in out:
        out["stop_strings"] = list(out["stop_strings"] or [])
    for name in ("temperature", "top_p", "repetition_penalty", "length_penalty"):
        if isinstance(out.get(name), int) and not isinstance(out[name], bool):
            out[name] = float(out[name])
    return out
