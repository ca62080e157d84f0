"""Text generation with a decoder LM package: prompt -> text, streaming, and multi-turn chat that keeps
the KV cache between turns. Decoding is ``mmedge.runtime.generation`` (token-equal to transformers'
``generate``); the model's ``generation_config`` from the package is the default, callers override it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator


from mmedge.errors import InputError, UsageError
from mmedge.runtime.decoder import CachedDecoder
from mmedge.runtime.generation import GenerationConfig, GenerationOutput, generate, stream
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.preprocess.tokenizer import IncrementalDecoder, TextTokenizer
from mmedge.runtime.runner import ComponentRunner


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    stop_reason: str
    prompt_tokens: int
    timings: dict
    ran: RunInfo
    task: str = "text-generation"

    def to_dict(self) -> dict:
        return {"task": self.task, "text": self.text, "tokens": self.tokens, "stop_reason": self.stop_reason,
                "prompt_tokens": self.prompt_tokens, "timings": self.timings, "ran": self.ran.to_dict()}


class _Timer:
    """Time to first token and tokens/s, measured around the decoder calls the loop makes."""

    def __init__(self):
        self.start, self.first, self.count = time.perf_counter(), None, 0

    def token(self, _token: int) -> None:
        self.count += 1
        if self.first is None:
            self.first = time.perf_counter()

    def result(self) -> dict:
        end = time.perf_counter()
        ttft = (self.first or end) - self.start
        rest = end - (self.first or end)
        return {"time_to_first_token_ms": 1000 * ttft, "total_ms": 1000 * (end - self.start),
                "new_tokens": self.count, "tokens_per_s": (self.count - 1) / rest if self.count > 1 and rest > 0 else None}


def timed_generate(model, prompt: list[int], config: GenerationConfig, tokenizer: TextTokenizer, *,
                   on_text: Callable[[str], None] | None = None, timer: _Timer | None = None,
                   continue_cache: bool = False) -> tuple[GenerationOutput, dict]:
    """``generate`` with streaming text pieces and timings (time to first token, tokens/s); shared by every
    text-producing pipeline. Pass a ``timer`` started earlier to count work done before decoding."""
    timer, pieces = timer or _Timer(), IncrementalDecoder(tokenizer)

    def on_token(token: int) -> None:
        timer.token(token)
        if on_text is not None:
            piece = pieces.push(token)
            if piece:
                on_text(piece)

    streaming = config.num_beams == 1
    out = generate(model, prompt, config, continue_cache=continue_cache, on_token=on_token if streaming else None,
                   decode=tokenizer.decode if config.stop_strings else None)
    timings = timer.result()
    if not streaming:  # beams know their tokens only at the end: no time to first token
        total = timings["total_ms"] / 1000
        timings.update(time_to_first_token_ms=None, new_tokens=len(out.tokens),
                       tokens_per_s=len(out.tokens) / total if total > 0 else None)
    return out, timings


class TextGenerationPipeline:
    """Runs a ``causal-lm`` package. Build it with ``mmedge.runtime.load(path)``.

    Thread-safe: one pipeline may serve ``generate``/``stream`` calls from several threads at once. The KV
    cache is per call state, so every call (and every ``ChatSession``) gets its own ``CachedDecoder`` over the
    shared engine sessions, which are themselves safe to call from several threads (see ``runtime/engines``).
    A ``ChatSession`` is one conversation: its turns are sequential by nature, so give each thread its own.
    """

    family = "causal-lm"
    task = "text-generation"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        text = package.manifest.preprocessing["text"]
        gen = package.manifest.generation
        self.package, self.ran = package, ran
        self.tokenizer = TextTokenizer(package.path(text["tokenizer_file"]))
        self.config = GenerationConfig.from_dict(gen.get("config", {}))
        self.chat_markers = text.get("chat")
        pad = text.get("pad_token_id")
        self.decoder_runner, self.cache = runners["decoder"], gen["cache"]
        self.pad_token_id = pad if pad is not None else 0

    def new_decoder(self) -> CachedDecoder:
        """A fresh, empty KV cache over the package's decoder: one per call or chat, never shared."""
        return CachedDecoder(self.decoder_runner, self.cache, pad_token_id=self.pad_token_id)

    def _config(self, overrides: dict) -> GenerationConfig:
        return self.config.with_overrides(**{k: v for k, v in overrides.items() if v is not None})

    def _prompt_ids(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt:
            raise InputError("the prompt is empty; give some text, e.g. --prompt 'Once upon a time'")
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise InputError("the prompt produced no tokens; give text the model can read, "
                             "e.g. --prompt 'Once upon a time'")
        return ids

    def generate(self, prompt: str, *, on_text: Callable[[str], None] | None = None, **overrides) -> GenerationResult:
        """Generate a continuation of ``prompt``; ``on_text`` receives text pieces as they come (streaming).
        Overrides are ``GenerationConfig`` fields (max_new_tokens, temperature, top_p, num_beams, seed...)."""
        out, timings = timed_generate(self.new_decoder(), self._prompt_ids(prompt), self._config(overrides),
                                      self.tokenizer, on_text=on_text)
        return GenerationResult(text=self.tokenizer.decode(out.tokens), tokens=out.tokens, stop_reason=out.stop_reason,
                                prompt_tokens=out.num_prompt_tokens, timings=timings, ran=self.ran)

    def stream(self, prompt: str, **overrides) -> Iterator[str]:
        """Text pieces as they are generated (greedy or sampling)."""
        config = self._config(overrides)
        pieces = IncrementalDecoder(self.tokenizer)
        for token in stream(self.new_decoder(), self._prompt_ids(prompt), config):
            piece = pieces.push(token)
            if piece:
                yield piece

    def chat(self, system: str | None = None) -> ChatSession:
        if not self.chat_markers:
            raise UsageError("this model has no chat template; use generate()/--prompt instead of --chat")
        return ChatSession(self, system)


@dataclass
class ChatSession:
    """Multi-turn chat on one kept KV cache: each turn only feeds the new tokens (the chat template's turn
    markers around the user message), never the whole history again."""

    pipe: TextGenerationPipeline
    system: str | None = None
    history: list[dict] = field(default_factory=list)
    _last: tuple[int, str] | None = None  # the last generated token (not yet in the cache) and why it stopped
    # Multimodal chats (``vlm``): the first user turn's opening text (with the image placeholder), the ids
    # transform that expands the placeholder, and the step model that splices image features in.
    first_user_prefix: str | None = None
    prepare_ids: Callable[[list[int]], list[int]] | None = None
    model: object | None = None  # the session's own step model (default: a new decoder of ``pipe``)

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = self.pipe.new_decoder()

    def send(self, message: str, *, on_text: Callable[[str], None] | None = None, **overrides) -> GenerationResult:
        if not message.strip():
            raise InputError("empty chat message")
        m = self.pipe.chat_markers
        if not self.history:
            text = (m["system_prefix"] + self.system + (m["system_suffix"] or "") if self.system and m.get("system_suffix") is not None
                    else "") + (self.first_user_prefix or m["user_prefix"]) + message + m["assistant_prefix"]
            if self.system and m.get("system_suffix") is None:
                raise UsageError("this chat template has no separable system turn; start the chat without one")
        tok = self.pipe.tokenizer
        pending: list[int] = []
        if self._last is not None:
            # The loop never feeds its last token back; it opens this turn. An eos that is the template's own
            # end-of-turn marker is not repeated.
            last, reason = self._last
            suffix, last_text = m["assistant_suffix"], tok.decode([last], skip_special_tokens=False)
            if reason == "eos" and suffix.startswith(last_text):
                suffix = suffix[len(last_text):]
            pending = [last]
            text = suffix + m["user_prefix"] + message + m["assistant_prefix"]
        ids = pending + tok.encode(text, add_special_tokens=not self.history)
        if self.prepare_ids is not None:
            ids = self.prepare_ids(ids)
        config = self.pipe._config({**overrides, "num_beams": 1})
        out, timings = timed_generate(self.model, ids, config, tok, on_text=on_text,
                                      continue_cache=bool(self.history))
        self._last = (out.sequence[-1], out.stop_reason)
        reply = tok.decode(out.tokens)
        self.history += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
        return GenerationResult(text=reply, tokens=out.tokens, stop_reason=out.stop_reason,
                                prompt_tokens=out.num_prompt_tokens, timings=timings, ran=self.pipe.ran)
