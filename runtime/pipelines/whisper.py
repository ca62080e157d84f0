"""Whisper speech recognition on the slim runtime.

Per 30 s window: numpy log-mel features (equal to ``WhisperFeatureExtractor``) -> ``encoder`` (cross-attention
keys/values, once) -> greedy/beam decoding on the ``decoder`` with its KV cache. The forced prompt is built
as transformers does: start-of-transcript, then for multilingual models the language (given, or detected
from the first step's language-token logits) and the task, then no-timestamps; the package's suppress and
begin-suppress tokens apply. Longer audio is cut into consecutive 30 s windows whose texts are joined.
"""

from __future__ import annotations

import numpy as np

from mmedge.errors import InputError, UsageError
from mmedge.runtime.decoder import CachedDecoder
from mmedge.runtime.generation import GenerationConfig, generate
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.asr_result import TranscriptionResult
from mmedge.runtime.preprocess.audio import chunk_audio, load_audio
from mmedge.runtime.preprocess.tokenizer import TextTokenizer
from mmedge.runtime.preprocess.whisper_features import WhisperFeatures, load_mel_filters
from mmedge.runtime.runner import ComponentRunner

TASKS = ("transcribe", "translate")


class WhisperPipeline:
    family = "whisper"
    task = "automatic-speech-recognition"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        m = package.manifest
        audio = m.preprocessing["audio"]
        self.package, self.ran = package, ran
        self.encoder, self.decoder_runner = runners["encoder"], runners["decoder"]
        self.features = WhisperFeatures.from_config(audio, load_mel_filters(package.path(audio["mel_filters_file"])))
        self.tokenizer = TextTokenizer(package.path(m.preprocessing["text"]["tokenizer_file"]))
        self.gen = dict(m.generation["config"])
        self.cache = m.generation["cache"]
        self.config = GenerationConfig.from_dict(self.gen)
        self.multilingual = bool(self.gen.get("is_multilingual"))
        self.lang_to_id: dict[str, int] = dict(self.gen.get("lang_to_id") or {})
        self.task_to_id: dict[str, int] = dict(self.gen.get("task_to_id") or {})

    # ------------------------------------------------------------------ prompt

    def _language_token(self, language: str) -> int:
        code = language.strip().lower()
        for key in (f"<|{code}|>", code):
            if key in self.lang_to_id:
                return int(self.lang_to_id[key])
        known = sorted(k.strip("<|>") for k in self.lang_to_id)
        raise InputError(f"unknown language '{language}'; use a Whisper language code such as "
                         f"{', '.join(known[:12])}{' ...' if len(known) > 12 else ''}")

    def prompt_ids(self, language: str | None, task: str | None, language_token: int | None = None) -> list[int]:
        ids = [int(self.gen["decoder_start_token_id"])]
        if self.multilingual:
            if language_token is None:
                language_token = self._language_token(language or "en")
            ids.append(language_token)
            task = task or "transcribe"
            if task not in TASKS:
                raise InputError(f"unknown task '{task}'; use one of {', '.join(TASKS)}")
            ids.append(int(self.task_to_id.get(task, self.task_to_id.get(f"<|{task}|>", 0))))
        elif language not in (None, "en", "english") or task not in (None, "transcribe"):
            raise UsageError("this is an English-only Whisper model: --language/--task other than English "
                             "transcription need a multilingual model")
        if self.gen.get("no_timestamps_token_id") is not None:
            ids.append(int(self.gen["no_timestamps_token_id"]))
        return ids

    def detect_language(self, decoder: CachedDecoder) -> int:
        """The language token whose logit is highest after start-of-transcript (as transformers does)."""
        decoder.reset()
        logits = decoder.extend(np.array([[int(self.gen["decoder_start_token_id"])]], np.int64))[0]
        lang_ids = np.array(sorted(int(v) for v in self.lang_to_id.values()))
        return int(lang_ids[np.argmax(logits[lang_ids])])

    # ------------------------------------------------------------------ transcription

    def transcribe_window(self, samples: np.ndarray, *, language: str | None = None, task: str | None = None,
                          **overrides) -> tuple[str, list[int], str]:
        """One <= 30 s window: (text, tokens, the language code it was decoded in: given, detected, or "en")."""
        cross = self.encoder(input_features=self.features(samples))
        decoder = CachedDecoder(self.decoder_runner, self.cache, pad_token_id=int(self.gen.get("pad_token_id") or 0),
                                extra_feeds=cross)
        language_token = None
        if self.multilingual and language is None:
            language_token = self.detect_language(decoder)
        prompt = self.prompt_ids(language, task, language_token)
        config = self.config.with_overrides(**{k: v for k, v in overrides.items() if v is not None})
        out = generate(decoder, prompt, config)
        return self.tokenizer.decode(out.tokens).strip(), out.tokens, self._language_code(prompt)

    def _language_code(self, prompt: list[int]) -> str:
        """The language of a decoding prompt (its second token on multilingual models; English-only: "en")."""
        if not self.multilingual:
            return "en"
        return next(k.strip("<|>") for k, v in self.lang_to_id.items() if int(v) == prompt[1])

    def transcribe(self, audio, *, language: str | None = None, task: str | None = None,
                   **overrides) -> TranscriptionResult:
        """Transcribe a file (WAV/FLAC/raw PCM...) or a 16 kHz float array; overrides are generation settings
        (num_beams, max_new_tokens...)."""
        samples = load_audio(audio)
        if self.multilingual is False and language not in (None, "en", "english"):
            self.prompt_ids(language, task)  # raises the English-only error before any work
        chunks = []
        for window in chunk_audio(samples, window_s=self.features.config.chunk_length):
            text, _, used = self.transcribe_window(window.samples, language=language, task=task, **overrides)
            chunks.append({"start_s": window.start_s, "end_s": window.end_s, "text": text, "language": used})
        return TranscriptionResult(text=" ".join(c["text"] for c in chunks if c["text"]), chunks=chunks, ran=self.ran)
