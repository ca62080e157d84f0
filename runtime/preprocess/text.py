"""CLIP text tokenisation with the ``tokenizers`` library only, identical to transformers' ``CLIPTokenizerFast``.

Why: the runtime must not import transformers. The package ships the ``tokenizer.json`` HF wrote, which holds
the whole pipeline (NFC + whitespace + lowercase normaliser, CLIP split + byte-level, BPE with ``</w>``,
bos/eos post-processor); here we only add batching, padding and the static-shape rules. Padding and truncation
are done in numpy rather than by the Rust tokenizer so a too-long text is an explicit ``StaticShapeError``
(invariant 3), never a silent cut, unless the caller asks for ``truncate=True``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from mmedge.errors import InputError, PackageError, StaticShapeError, UsageError
from mmedge.runtime.preprocess.tokenizer import check_utf8

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


class ClipTextTokenizer:
    """Batch tokenizer for CLIP text towers: ``input_ids`` and ``attention_mask`` as int64, right-padded."""

    def __init__(self, tokenizer_file: str | Path, *, pad_token: str = EOS_TOKEN) -> None:
        """Load ``tokenizer.json``; CLIP pads with ``<|endoftext|>`` (openai/clip-vit-base-patch32's pad token)."""
        path = Path(tokenizer_file)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise PackageError(f"tokenizer file not found: {str(path)!r}; the package must contain tokenizer.json")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the Rust loader raises a bare Exception on bad JSON
            raise PackageError(f"tokenizer file {str(path)!r} is corrupt or not a tokenizers JSON: {exc}") from exc
        self._tok.no_padding()
        self._tok.no_truncation()
        ids = {name: self._tok.token_to_id(name) for name in (BOS_TOKEN, EOS_TOKEN, pad_token)}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise PackageError(f"tokenizer file {str(path)!r} lacks the CLIP special tokens {missing}")
        self.bos_id: int = ids[BOS_TOKEN]
        self.eos_id: int = ids[EOS_TOKEN]
        self.pad_id: int = ids[pad_token]
        self.path = path

    def __call__(
        self,
        texts: list[str],
        *,
        pad_to: int | None = None,
        max_length: int = 77,
        truncate: bool = False,
    ) -> dict[str, np.ndarray]:
        """Tokenise a batch; pad to the longest row, or to ``pad_to`` for a graph with a static sequence length.

        A row longer than ``max_length`` (or ``pad_to``) raises ``StaticShapeError`` unless ``truncate=True``,
        which keeps the first tokens and ends the row with eos, as HF's ``truncation=True`` does.
        """
        _check_texts(texts)
        if max_length < 2:
            raise UsageError(f"max_length={max_length} cannot hold the start and end tokens; use at least 2")
        if pad_to is not None and not 2 <= pad_to <= max_length:
            raise UsageError(f"pad_to={pad_to} must be between 2 and max_length={max_length}")
        limit = max_length if pad_to is None else pad_to
        rows = [enc.ids for enc in self._tok.encode_batch(list(texts), add_special_tokens=True)]
        for i, row in enumerate(rows):
            if len(row) <= limit:
                continue
            if not truncate:
                raise StaticShapeError(
                    f"text #{i} has {len(row)} tokens but the limit is {limit} (start and end tokens included); "
                    "shorten it or pass truncate=True to cut it at the limit"
                )
            rows[i] = row[: limit - 1] + [self.eos_id]
        width = pad_to if pad_to is not None else max(len(row) for row in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def _check_texts(texts: object) -> None:
    if isinstance(texts, str):
        raise InputError("give a list of strings, not a single string: wrap it as [text]")
    if not isinstance(texts, (list, tuple)):
        raise InputError(f"give a list of strings, got {type(texts).__name__}")
    if not texts:
        raise InputError("the list of texts is empty; give at least one string (an empty string is allowed)")
    bad = [(i, type(t).__name__) for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InputError(f"every text must be a str; items {bad[:5]} are not: convert them with str() first")
    for i, text in enumerate(texts):
        check_utf8(text, f"text #{i}")
