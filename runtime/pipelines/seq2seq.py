"""Text-to-text generation (translation, summarisation) with an encoder-decoder package (T5, Marian...).

Per input: tokenize (the package's ``tokenizer.json``, whose post-processor appends ``</s>`` as transformers'
tokenizer does) -> ``encoder`` once (the cross-attention keys/values of every decoder layer) -> greedy, sampling
or beam decoding on the ``decoder`` with its KV cache, starting from ``decoder_start_token_id``; the cross
keys/values and the encoder mask ride along as the decoder's ``extra_feeds``, shared by all beams. Decoding is
``mmedge.runtime.generation`` (token-equal to transformers' ``generate``); the package's generation config is the
default, callers override it.

Forced tokens (``forced_bos_token_id``: BART/mBART's first token; ``forced_eos_token_id``: Marian's eos at the
length limit) are applied by ``ForcedTokens`` around the decoder, as transformers' forced-token processors do.

Static packages take a fixed source length (``max_source_len``): shorter inputs are padded and masked, longer
ones are a ``StaticShapeError`` before any engine runs (invariant 3: never silently truncated).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from mmedge.errors import InputError, StaticShapeError, UsageError
from mmedge.runtime.decoder import CachedDecoder
from mmedge.runtime.generation import GenerationConfig, stream
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.text_generation import GenerationResult, _Timer, timed_generate
from mmedge.runtime.preprocess.tokenizer import IncrementalDecoder, TextTokenizer
from mmedge.runtime.runner import ComponentRunner

TASK = "text2text-generation"


class ForcedTokens:
    """A ``StepModel`` around the decoder that forces tokens where transformers' ``ForcedBOSTokenLogitsProcessor``
    (the first generated token) and ``ForcedEOSTokenLogitsProcessor`` (the last token the length limit allows)
    would. Forcing the logits to 0 for the token and -inf elsewhere is what those processors leave after any
    other processor (a repetition penalty keeps 0 and -inf as they are), and log-softmax keeps it for beams;
    the one difference is ``min_new_tokens >= max_new_tokens`` with a forced eos, where transformers' forced eos
    wins over the minimum length and here the minimum does."""

    def __init__(self, model: CachedDecoder, *, bos: int | None, eos: list[int], last_length: int):
        self.model, self.bos, self.eos, self.last_length = model, bos, eos, last_length
        self.max_length = model.max_length

    @property
    def cache_length(self) -> int:
        return self.model.cache_length

    def reset(self) -> None:
        self.model.reset()

    def reorder(self, rows: np.ndarray) -> None:
        self.model.reorder(rows)

    def extend(self, ids: np.ndarray) -> np.ndarray:
        logits = self.model.extend(ids)
        length = self.model.cache_length  # the decoder tokens so far: transformers' cur_len
        # transformers applies the forced-eos processor after the forced-bos one: eos wins when both apply
        forced = (self.eos if self.eos and length == self.last_length
                  else [self.bos] if length == 1 and self.bos is not None else None)
        if forced:
            logits = np.full_like(logits, -np.inf)
            logits[:, forced] = 0.0
        return logits


@dataclass
class Seq2SeqResult(GenerationResult):
    """``GenerationResult`` of the decoder-only pipeline with this task's name: same fields, so callers and
    the CLI treat both alike. ``prompt_tokens`` counts the *source* tokens the encoder read (eos included)."""

    def to_dict(self) -> dict:
        return {**super().to_dict(), "task": TASK}


class Seq2SeqPipeline:
    family = "seq2seq"
    task = TASK

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        m = package.manifest
        text = m.preprocessing["text"]
        self.package, self.ran = package, ran
        self.encoder, self.decoder_runner = runners["encoder"], runners["decoder"]
        self.tokenizer = TextTokenizer(package.path(text["tokenizer_file"]))
        self.gen = dict(m.generation["config"])
        self.cache = m.generation["cache"]
        self.config = GenerationConfig.from_dict(self.gen)
        self.decoder_start = int(self.gen["decoder_start_token_id"])
        pad = text.get("pad_token_id")
        self.pad_token_id = int(pad) if pad is not None else 0
        #: the fixed source length of a static encoder, None for dynamic graphs
        self.static_source_len: int | None = self.encoder.fixed_dim("input_ids", 1)
        limit = text.get("max_source_positions")
        self.max_source_positions: int | None = int(limit) if limit else None
        #: prefixes the model was trained with, by task (T5: "translation_en_to_de" -> "translate English to German: ")
        self.task_prefixes: dict[str, str] = dict(text.get("task_prefixes") or {})
        #: prepended to every input unless ``generate(prefix=...)`` says otherwise
        self.prefix = ""
        bos, eos = self.gen.get("forced_bos_token_id"), self.gen.get("forced_eos_token_id")
        self.forced_bos_token_id: int | None = int(bos) if bos is not None else None
        self.forced_eos_token_ids: list[int] = [int(e) for e in (eos if isinstance(eos, list) else [eos])
                                                if e is not None]

    # ------------------------------------------------------------------ input

    def source_ids(self, text: str, prefix: str | None = None) -> list[int]:
        """The encoder's token ids for ``prefix + text`` (eos appended by the tokenizer), checked against the
        package's limits before any engine runs."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("the input text is empty; give some text to translate or summarise, "
                             "e.g. generate('The house is wonderful.')")
        ids = self.tokenizer.encode((self.prefix if prefix is None else prefix) + text)
        if self.static_source_len is not None and len(ids) > self.static_source_len:
            raise StaticShapeError(
                f"the input has {len(ids)} tokens but this static package's encoder takes at most "
                f"{self.static_source_len} (max_source_len); shorten the text, split it into sentences, or use a "
                "dynamic variant (variant='fp32')")
        if self.max_source_positions is not None and len(ids) > self.max_source_positions:
            raise InputError(f"the input has {len(ids)} tokens but the model reads at most "
                             f"{self.max_source_positions} (its position table); shorten or split the text")
        return ids

    def encode(self, ids: list[int]) -> dict[str, np.ndarray]:
        """Run the encoder on one source: the decoder's extra feeds (cross keys/values and the source mask).
        A static encoder gets the source right-padded to its fixed length, the padding masked out."""
        length = self.static_source_len or len(ids)
        feed = np.full((1, length), self.pad_token_id, np.int64)
        feed[0, :len(ids)] = ids
        mask = np.zeros((1, length), np.int64)
        mask[0, :len(ids)] = 1
        cross = self.encoder(input_ids=feed, attention_mask=mask)
        return {**cross, "encoder_attention_mask": mask}

    def decoder(self, ids: list[int], config: GenerationConfig | None = None) -> CachedDecoder | ForcedTokens:
        """A ``StepModel`` over the decoder for one encoded source (its cache is sized once per input), with the
        model's forced tokens when it has any (``config`` says where the length limit is)."""
        model = CachedDecoder(self.decoder_runner, self.cache, pad_token_id=self.pad_token_id,
                              extra_feeds=self.encode(ids))
        if self.forced_bos_token_id is None and not self.forced_eos_token_ids:
            return model
        config = config or self.config
        limit = config.max_new_tokens if config.max_length is None else min(config.max_new_tokens,
                                                                             config.max_length - 1)
        # transformers forces eos at cur_len == max_length - 1, max_length = 1 (the start token) + limit: the
        # step that produces the last allowed token, when the decoder holds `limit` tokens
        return ForcedTokens(model, bos=self.forced_bos_token_id, eos=self.forced_eos_token_ids, last_length=limit)

    def _config(self, overrides: dict) -> GenerationConfig:
        return self.config.with_overrides(**{k: v for k, v in overrides.items() if v is not None})

    # ------------------------------------------------------------------ generation

    def generate(self, text: str, *, prefix: str | None = None, on_text: Callable[[str], None] | None = None,
                 **overrides) -> Seq2SeqResult:
        """Translate / summarise ``text``. ``prefix`` is prepended (T5 task prefixes such as
        ``"translate English to German: "``; default: ``self.prefix``); ``on_text`` receives text pieces as they
        come (greedy and sampling). Overrides are ``GenerationConfig`` fields (max_new_tokens, num_beams,
        repetition_penalty, do_sample, seed...)."""
        config = self._config(overrides)
        timer = _Timer()  # started before the encoder: time to first token includes reading the source
        ids = self.source_ids(text, prefix)
        start = time.perf_counter()
        model = self.decoder(ids, config)
        encode_ms = 1000 * (time.perf_counter() - start)
        out, timings = timed_generate(model, [self.decoder_start], config, self.tokenizer, on_text=on_text,
                                      timer=timer)
        timings["encode_ms"] = encode_ms
        return Seq2SeqResult(text=self.tokenizer.decode(out.tokens), tokens=out.tokens, stop_reason=out.stop_reason,
                             prompt_tokens=len(ids), timings=timings, ran=self.ran)

    def stream(self, text: str, *, prefix: str | None = None, **overrides) -> Iterator[str]:
        """Text pieces as they are generated (greedy or sampling); checks run at the call."""
        config = self._config(overrides)
        model = self.decoder(self.source_ids(text, prefix), config)
        tokens = stream(model, [self.decoder_start], config)
        pieces = IncrementalDecoder(self.tokenizer)

        def texts() -> Iterator[str]:
            for token in tokens:
                piece = pieces.push(token)
                if piece:
                    yield piece
        return texts()

    def chat(self, system: str | None = None):
        """Encoder-decoder models answer one input at a time; refused with the fix (lets the CLI's text
        generation path treat both generation pipelines alike)."""
        raise UsageError("an encoder-decoder (text2text-generation) model has no chat; give one input with "
                         "generate()/--prompt")
