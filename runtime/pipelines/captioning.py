"""Image captioning on the slim runtime, for every ``image-to-text`` family (vision-encoder-decoder such as
ViT + GPT-2, and BLIP).

Per image: numpy pre-processing (equal to the HF image processor, see ``preprocess.image``) -> ``encoder``
(the cross-attention keys/values of every decoder layer, once) -> greedy/beam decoding on the ``decoder`` with
its KV cache (``CachedDecoder``; the cross keys/values ride along as extra feeds, shared by all beams). The
families differ only in data the manifest states, so one class serves them all:

- ``generation.prompt.start_token_id``: the first decoder token (decoder start / BLIP's ``[DEC]`` bos);
- ``generation.prompt.text_prompt``: how a text prefix becomes decoder input, or null when the model takes none.
  BLIP's recipe (from its ``generate``): tokenize with special tokens (``[CLS] text [SEP]``), replace the first
  id with the start token, drop the last one;
- ``generation.config``: the model's generation settings (BLIP: eos = ``[SEP]``), overridable per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmedge.errors import InputError, UsageError
from mmedge.runtime.decoder import CachedDecoder
from mmedge.runtime.generation import GenerationConfig, generate
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.preprocess.image import ClipImagePreprocessor, ImageInput
from mmedge.runtime.preprocess.tokenizer import TextTokenizer
from mmedge.runtime.runner import ComponentRunner


@dataclass
class CaptionResult:
    """A caption. ``text`` is what HF's ``decode(generate(...)[0], skip_special_tokens=True)`` gives, stripped:
    for a conditional BLIP caption it starts with the prompt text, as there. ``tokens`` are only the generated
    ids (no prompt, no final eos)."""

    text: str
    tokens: list[int]
    ran: RunInfo

    def to_dict(self) -> dict:
        return {"task": "image-to-text", "text": self.text, "tokens": self.tokens, "ran": self.ran.to_dict()}


class CaptioningPipeline:
    """Runs an ``image-to-text`` package. Build it with ``mmedge.runtime.load(path)``."""

    task = "image-to-text"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        m = package.manifest
        gen = m.generation
        self.package, self.ran, self.family = package, ran, m.family
        self.encoder, self.decoder_runner = runners["encoder"], runners["decoder"]
        self.image_preprocessor = ClipImagePreprocessor.from_config(m.preprocessing["image"])
        self.tokenizer = TextTokenizer(package.path(m.preprocessing["text"]["tokenizer_file"]))
        self.config = GenerationConfig.from_dict(gen["config"])
        self.cache: dict = gen["cache"]
        self.start_token_id = int(gen["prompt"]["start_token_id"])
        self.text_prompt: dict[str, bool] | None = gen["prompt"].get("text_prompt")
        pad = gen["config"].get("pad_token_id")
        self.pad_token_id = int(pad) if pad is not None else 0

    def prompt_ids(self, prompt: str | None) -> list[int]:
        """The decoder input for ``prompt`` (None: the start token alone), built as the model's ``generate`` does."""
        if prompt is None:
            return [self.start_token_id]
        if self.text_prompt is None:
            raise UsageError(f"this {self.family} model takes no text prompt (transformers' image-to-text refuses "
                             "one for it too); caption without --prompt, or use a BLIP captioning package")
        if not isinstance(prompt, str):
            raise InputError(f"the prompt must be a string, got {type(prompt).__name__}")
        recipe = self.text_prompt
        ids = self.tokenizer.encode(prompt, add_special_tokens=bool(recipe.get("add_special_tokens", True)))
        if recipe.get("drop_last"):
            ids = ids[:-1]
        return [self.start_token_id] + (ids[1:] if recipe.get("replace_first") else ids)

    def _config(self, overrides: dict[str, Any]) -> GenerationConfig:
        """The package's settings with the caller's on top, with HF's length rules: an explicit ``max_new_tokens``
        wins over any ``max_length``; an explicit ``max_length`` alone counts prompt + caption, whatever the
        package's default number of new tokens was."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "max_new_tokens" in given:
            given["max_length"] = None
        elif "max_length" in given:
            given["max_new_tokens"] = given["max_length"]
        return self.config.with_overrides(**given)

    def caption(self, image: ImageInput, *, prompt: str | None = None, **generation_overrides: Any) -> CaptionResult:
        """Caption one image (a path, PIL image or HxWxC uint8 array); ``prompt`` is a text prefix to continue
        (conditional captioning, BLIP). Overrides are generation settings (``num_beams``, ``max_new_tokens``,
        ``repetition_penalty``...)."""
        config = self._config(generation_overrides)  # bad settings fail before any pixel is processed
        ids = self.prompt_ids(prompt)
        pixels = self.image_preprocessor([image])
        cross = self.encoder(pixel_values=pixels)
        decoder = CachedDecoder(self.decoder_runner, self.cache, pad_token_id=self.pad_token_id,
                                extra_feeds=cross)
        out = generate(decoder, ids, config)
        # The start token is never part of the text; a prompt's words are (as in HF's decode of the output).
        text = self.tokenizer.decode(ids[1:] + out.tokens).strip()
        return CaptionResult(text=text, tokens=out.tokens, ran=self.ran)
