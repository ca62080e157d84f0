"""Visual question answering with a ``blip-vqa`` package (BLIP's ``BlipForQuestionAnswering``).

Per question: numpy image pre-processing (equal to the HF processor) and the question's token ids
(``[CLS] question [SEP]``, the package's ``tokenizer.json``) -> ``encoder`` once (vision tower, question encoder
over the image, and the cross-attention keys/values of every answer-decoder layer) -> greedy, sampling or beam
decoding on the ``decoder`` from the start token (``[DEC]``), stopping at ``[SEP]``; the cross keys/values and the
question mask ride along as the decoder's ``extra_feeds``, shared by all beams. Token-equal to transformers'
``BlipForQuestionAnswering.generate`` on the same weights.

Static packages take a fixed question length (``max_question_len``): a shorter question is right-padded and
the padding masked (in the question encoder and in the decoder's cross-attention); a longer one is a
``StaticShapeError`` before any engine runs (invariant 3: never silently truncated).

The pipeline shares the image-to-text pipeline's machinery (pre-processing, tokenizer, generation settings with
HF's length rules, the start token), which is why it extends ``CaptioningPipeline``; it answers questions
instead of captioning.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from mmedge.errors import InputError, StaticShapeError, UsageError
from mmedge.runtime.decoder import CachedDecoder
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.captioning import CaptioningPipeline
from mmedge.runtime.pipelines.text_generation import GenerationResult, _Timer, timed_generate
from mmedge.runtime.preprocess.image import ImageInput
from mmedge.runtime.runner import ComponentRunner

TASK = "visual-question-answering"


class VqaPipeline(CaptioningPipeline):
    """Runs a ``visual-question-answering`` package. Build it with ``mmedge.runtime.load(path)``."""

    task = TASK

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        super().__init__(package, runners, ran)
        text = package.manifest.preprocessing["text"]
        #: the fixed question length of a static encoder, None for dynamic graphs
        self.static_question_len: int | None = self.encoder.fixed_dim("input_ids", 1)
        limit = text.get("max_question_positions")
        self.max_question_positions: int | None = int(limit) if limit else None

    def question_ids(self, question: str) -> list[int]:
        """The question encoder's input (``[CLS] question [SEP]``, as ``BlipProcessor`` tokenizes it), checked
        against the package's limits before any engine runs."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty; ask something about the image, e.g. "
                             "answer('photo.jpg', 'what is in the picture?')")
        ids = self.tokenizer.encode(question)
        # The exporter keeps the static length within the position table, so one limit applies.
        limit = self.static_question_len or self.max_question_positions
        if limit is None or len(ids) <= limit:
            return ids
        if self.static_question_len:
            raise StaticShapeError(f"the question has {len(ids)} tokens but this static package's encoder takes at "
                                   f"most {limit} (max_question_len); ask a shorter question or use a dynamic "
                                   "variant (variant='fp32')")
        raise InputError(f"the question has {len(ids)} tokens but the model reads at most {limit} (its position "
                         "table); ask a shorter question")

    def encode(self, image: ImageInput, ids: list[int]) -> dict[str, np.ndarray]:
        """Run the encoder on one image and one question: the decoder's extra feeds (cross keys/values and the
        question mask). A static encoder gets the question right-padded to its fixed length, padding masked."""
        length = self.static_question_len or len(ids)
        feed = np.full((1, length), self.pad_token_id, np.int64)
        feed[0, :len(ids)] = ids
        mask = (np.arange(length) < len(ids)).astype(np.int64)[None]
        cross = self.encoder(pixel_values=self.image_preprocessor([image]), input_ids=feed, attention_mask=mask)
        return {**cross, "encoder_attention_mask": mask}

    def answer(self, image: ImageInput, question: str, *, on_text: Callable[[str], None] | None = None,
               **generation_overrides: Any) -> GenerationResult:
        """Answer ``question`` about one image (a path, PIL image or HxWxC uint8 array). ``on_text`` receives
        text pieces as they come (greedy and sampling). Overrides are generation settings (``num_beams``,
        ``max_new_tokens``, ``repetition_penalty``...), with HF's length rules."""
        config = self._config(generation_overrides)  # bad settings fail before any pixel is processed
        ids = self.question_ids(question)
        timer = _Timer()  # started before the encoder: time to first token includes reading image and question
        start = time.perf_counter()
        decoder = CachedDecoder(self.decoder_runner, self.cache, pad_token_id=self.pad_token_id,
                                extra_feeds=self.encode(image, ids))
        encode_ms = 1000 * (time.perf_counter() - start)
        out, timings = timed_generate(decoder, [self.start_token_id], config, self.tokenizer, on_text=on_text,
                                      timer=timer)
        timings["encode_ms"] = encode_ms
        return GenerationResult(text=self.tokenizer.decode(out.tokens).strip(), tokens=out.tokens,
                                stop_reason=out.stop_reason, prompt_tokens=len(ids), timings=timings, ran=self.ran,
                                task=self.task)

    def caption(self, image: ImageInput, *, prompt: str | None = None, **generation_overrides: Any):
        """A VQA model's decoder reads a question, not an image alone: refused with the fix."""
        raise UsageError("this is a visual-question-answering package: ask a question with answer(image, question) "
                         "(CLI: --image FILE --question 'text'); caption with a blip-captioning package")
