"""Vision-language chat (LLaVA-style packages): an image and a question -> an answer, and multi-turn chat
about the image on one kept KV cache.

The prompt is built as ``LlavaProcessor`` + ``LlavaModel`` do it: the chat template's ``<image>`` placeholder
is expanded to one token per image feature, and at those positions the decoder is fed the projected image
features instead of token embeddings (every other position: the token embedding table from the package).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.decoder import CachedDecoder
from mmedge.runtime.generation import GenerationConfig
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.text_generation import ChatSession, GenerationResult
from mmedge.runtime.preprocess import ClipImagePreprocessor, TextTokenizer, load_image
from mmedge.runtime.runner import ComponentRunner


class ImageSplicer:
    """A ``StepModel`` over ``CachedDecoder`` that feeds image features where the prompt holds image tokens."""

    def __init__(self, decoder: CachedDecoder, features: np.ndarray, image_token_id: int):
        self.decoder, self.features, self.image_token_id = decoder, features, image_token_id

    @property
    def max_length(self) -> int | None:
        return self.decoder.max_length

    @property
    def cache_length(self) -> int:
        return self.decoder.cache_length

    def reset(self) -> None:
        self.decoder.reset()

    def reorder(self, rows: np.ndarray) -> None:
        self.decoder.reorder(rows)

    def extend(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        where = ids == self.image_token_id
        if not where.any():
            return self.decoder.extend(ids)
        if where.sum(axis=1).max() != len(self.features):
            raise InputError(f"the prompt holds {int(where.sum())} image tokens, the image gives {len(self.features)}")
        embeds = np.array(self.decoder.embeddings[ids], dtype=np.float32)
        embeds[where] = np.tile(self.features, (ids.shape[0], 1))
        return self.decoder.extend_embeds(embeds)


class VlmPipeline:
    family = "llava"
    task = "image-text-to-text"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        pre, gen = package.manifest.preprocessing, package.manifest.generation
        text = pre["text"]
        self.package, self.ran, self.vision = package, ran, runners["vision"]
        self.image_preprocessor = ClipImagePreprocessor.from_config(pre["image"])
        self.tokenizer = TextTokenizer(package.path(text["tokenizer_file"]))
        embeddings = np.load(package.path(text["embeddings_file"]), mmap_mode="r", allow_pickle=False)
        self.image_token_id, self.image_tokens = int(text["image_token_id"]), int(text["image_tokens"])
        self.chat_markers = text["chat"]
        self.config = GenerationConfig.from_dict(gen.get("config", {}))
        pad = text.get("pad_token_id")
        self.decoder_runner, self.cache, self.embeddings = runners["decoder"], gen["cache"], embeddings
        self.pad_token_id = pad if pad is not None else 0

    def new_decoder(self) -> CachedDecoder:
        """A fresh KV cache over the package's decoder: each chat owns one, so chats and threads never share a
        cache (see ``TextGenerationPipeline``)."""
        return CachedDecoder(self.decoder_runner, self.cache, pad_token_id=self.pad_token_id,
                             embeddings=self.embeddings)

    def _config(self, overrides: dict) -> GenerationConfig:
        return self.config.with_overrides(**{k: v for k, v in overrides.items() if v is not None})

    def image_features(self, image: Any) -> np.ndarray:
        """Projected features [image_tokens, hidden] of one image (path, PIL image or HxWxC array)."""
        pixels = self.image_preprocessor([load_image(image)])
        return self.vision(pixel_values=pixels)["image_features"][0]

    def _expand(self, ids: list[int]) -> list[int]:
        out: list[int] = []
        for token in ids:
            out.extend([token] * self.image_tokens if token == self.image_token_id else [token])
        return out

    def chat(self, image: Any = None, *, system: str | None = None) -> ChatSession:
        """A chat about ``image`` (or a text-only chat when None)."""
        m = self.chat_markers
        if not m:
            raise InputError("this package has no chat template; re-export a model that has one")
        if image is None:
            return ChatSession(self, system)
        features = self.image_features(image)
        return ChatSession(self, system, first_user_prefix=m["user_prefix_image"], prepare_ids=self._expand,
                           model=ImageSplicer(self.new_decoder(), features, self.image_token_id))

    def answer(self, image: Any, question: str, *, on_text: Callable[[str], None] | None = None,
               **overrides) -> GenerationResult:
        """One question about one image."""
        result = self.chat(image).send(question, on_text=on_text, **overrides)
        result.task = self.task
        return result
