"""wav2vec2-style CTC pre/post-processing in numpy: ``Wav2Vec2FeatureExtractor`` and ``Wav2Vec2CTCTokenizer``.

Why: the runtime may not import transformers, and a CTC transcript is only as right as the normalisation in
front of the encoder and the collapsing behind it. Both are reproduced operation for operation:

* ``AudioNormalizer`` = ``Wav2Vec2FeatureExtractor.__call__`` on one utterance: optional right padding with
  ``padding_value`` to a fixed length, then ``(x - mean) / sqrt(var + 1e-7)`` in float32 over the whole padded
  vector, or, when the extractor returns an attention mask, over the real samples only with the padding reset to
  ``padding_value`` afterwards (the two branches of ``zero_mean_unit_var_norm``).
* ``CtcVocabulary.decode`` = ``Wav2Vec2CTCTokenizer.decode(ids)``: group repeated tokens (by string, so ids past
  the vocabulary, which all read as ``<unk>``, group together), drop the blank (pad) token,
  the word delimiter becomes ``replace_word_delimiter_char``, join, strip, optional lower-casing and
  ``clean_up_tokenization``. Special tokens other than the blank (``<s>``, ``</s>``, ``<unk>``) stay in the text,
  as transformers' own ASR pipeline leaves them for CTC; ``skip_special_tokens=True`` reproduces HF's flag,
  quirk included (it drops the blank id *before* grouping, so "l <pad> l" collapses to one "l").
* ``CtcVocabulary.words`` = the word offsets of ``decode(..., output_word_offsets=True)``, but in true frame
  indices even when special tokens are skipped (HF's offsets then index the filtered list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.errors import InputError, PackageError, StaticShapeError


@dataclass(frozen=True)
class AudioNormalizer:
    """The ``Wav2Vec2FeatureExtractor`` switches that change the numbers (from the manifest)."""

    sampling_rate: int = 16000
    do_normalize: bool = True
    normalize_epsilon: float = 1e-7
    padding_value: float = 0.0
    return_attention_mask: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> AudioNormalizer:
        try:
            return cls(sampling_rate=int(cfg["sampling_rate"]), do_normalize=bool(cfg["do_normalize"]),
                       normalize_epsilon=float(cfg.get("normalize_epsilon", 1e-7)),
                       padding_value=float(cfg["padding_value"]),
                       return_attention_mask=bool(cfg["return_attention_mask"]))
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"manifest preprocessing.audio is incomplete ({e}); re-export the package") from None

    def __call__(self, samples: np.ndarray, pad_to: int | None = None) -> np.ndarray:
        """float32 ``input_values`` [len] (or [pad_to]) as ``extractor(samples, padding="max_length",
        max_length=pad_to)`` gives them; ``pad_to=None`` is the unpadded ``extractor(samples)``."""
        x = np.asarray(samples, dtype=np.float32)
        length = len(x)
        if pad_to is not None and pad_to > length:
            x = np.concatenate([x, np.full(pad_to - length, self.padding_value, np.float32)])
        if not self.do_normalize:
            return x
        if pad_to is not None and self.return_attention_mask:
            real = x[:length]
            out = (x - real.mean()) / np.sqrt(real.var() + self.normalize_epsilon)
            out[length:] = self.padding_value
            return out.astype(np.float32, copy=False)
        return ((x - x.mean()) / np.sqrt(x.var() + self.normalize_epsilon)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Word:
    """One decoded word and its frames ``[start, end)`` in the id sequence given to ``CtcVocabulary.words``."""

    text: str
    start: int
    end: int


class CtcVocabulary:
    """Greedy CTC decoding with a ``Wav2Vec2CTCTokenizer``'s table and switches (manifest ``preprocessing.ctc``)."""

    def __init__(self, cfg: Mapping[str, Any]):
        try:
            self.tokens: list[str] = [str(t) for t in cfg["id_to_token"]]
            self.blank_id = int(cfg["blank_id"])
            self.pad_token = str(cfg["pad_token"])
            self.delimiter = str(cfg["word_delimiter_token"])
            self.delimiter_char = str(cfg["replace_word_delimiter_char"])
            self.special_tokens = frozenset(str(t) for t in cfg["special_tokens"])
            self.special_ids = frozenset(int(i) for i in cfg.get("special_ids", ()))
            self.do_lower_case = bool(cfg.get("do_lower_case", False))
            self.clean_up = bool(cfg.get("clean_up_tokenization_spaces", False))
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"manifest preprocessing.ctc is incomplete ({e}); re-export the package") from None
        if not self.tokens or not 0 <= self.blank_id < len(self.tokens):
            raise PackageError("manifest preprocessing.ctc: empty vocabulary or blank id out of range; re-export")
        # Per id: is it dropped by skip_special_tokens (HF drops special *ids*, then special *tokens* but the pad)?
        self._skipped = np.array([i in self.special_ids or (t != self.pad_token and t in self.special_tokens)
                                  for i, t in enumerate(self.tokens)], dtype=bool)
        # HF groups repeated *tokens* (strings): two ids with the same token (ids past the vocabulary all read
        # as <unk>) form one group, so grouping runs on the first id of each token.
        first: dict[str, int] = {}
        self._canonical = np.array([first.setdefault(t, i) for i, t in enumerate(self.tokens)], dtype=np.int64)

    def _groups(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool) -> tuple[list[str], np.ndarray,
                                                                                            np.ndarray]:
        """Collapsed tokens (blank removed, delimiter replaced) with each group's frames [start, end)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.tokens)):
            raise PackageError(f"CTC id {int(ids.max())} is outside the vocabulary of {len(self.tokens)} tokens; "
                               "the model and the manifest disagree: re-export the package")
        frames = np.arange(len(ids))
        if skip_special_tokens:
            keep = ~self._skipped[ids]
            ids, frames = ids[keep], frames[keep]
        ids = self._canonical[ids]
        if not ids.size:
            return [], frames, frames
        first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        last = np.r_[first[1:], len(ids)] - 1
        starts, ends = frames[first], frames[last] + 1
        tokens = [self.tokens[i] for i in ids[first]]
        real = [k for k, t in enumerate(tokens) if t != self.pad_token]
        chars = [self.delimiter_char if tokens[k] == self.delimiter else tokens[k] for k in real]
        return chars, starts[real], ends[real]

    def decode(self, ids: Sequence[int] | np.ndarray, *, skip_special_tokens: bool = False) -> str:
        """The transcript of one sequence of argmax ids, as ``Wav2Vec2CTCTokenizer.decode``."""
        text = "".join(self._groups(ids, skip_special_tokens)[0]).strip()
        if self.do_lower_case:
            text = text.lower()
        return clean_up_tokenization(text) if self.clean_up else text

    def words(self, ids: Sequence[int] | np.ndarray, *, skip_special_tokens: bool = False) -> list[Word]:
        """Words (runs of characters between delimiters) with their frame spans."""
        chars, starts, ends = self._groups(ids, skip_special_tokens)
        words: list[Word] = []
        current: list[int] = []
        for k, char in enumerate([*chars, self.delimiter_char]):
            if char != self.delimiter_char:
                current.append(k)
            elif current:
                text = "".join(chars[i] for i in current)
                words.append(Word(text.lower() if self.do_lower_case else text, int(starts[current[0]]),
                                  int(ends[current[-1]])))
                current = []
        return words


def clean_up_tokenization(text: str) -> str:
    """transformers' ``PreTrainedTokenizerBase.clean_up_tokenization`` (English spacing before punctuation)."""
    for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                     (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(old, new)
    return text


#: Longest clip a dynamic artifact runs in one call when no ``window_s`` is given. Self-attention memory grows with
#: the square of the frames (an hour is 180 000 frames: hundreds of GB of attention scores), so longer recordings
#: are cut into windows of this length; 30 s (1 500 frames) is what wav2vec2-style models see in training at most.
MAX_WHOLE_CLIP_S = 30.0


def window_size(window_s: float | None, samples: int, sampling_rate: int, fixed: int | None) -> int:
    """Samples per window for a clip of ``samples``: ``window_s`` seconds when given, else a static artifact's
    ``fixed`` window, else the whole clip up to ``MAX_WHOLE_CLIP_S`` (longer clips: windows of that length).
    A ``window_s`` longer than ``fixed`` is a ``StaticShapeError``."""
    if window_s is None:
        return fixed or max(min(samples, round(MAX_WHOLE_CLIP_S * sampling_rate)), 1)
    size = round(window_s * sampling_rate)
    if size <= 0:
        raise InputError(f"window_s must be > 0 (got {window_s}); e.g. window_s=10")
    if fixed is not None and size > fixed:
        raise StaticShapeError(f"window_s={window_s} is longer than this static artifact's window of "
                               f"{fixed / sampling_rate:g} s; use window_s <= that or a dynamic variant")
    return size


def frames_for(samples: int, layers: Sequence[Sequence[int]]) -> int:
    """Encoder output frames for ``samples`` input samples: ``(n - kernel) // stride + 1`` per conv layer,
    as transformers' ``_get_feat_extract_output_lengths``; 0 when shorter than the receptive field."""
    n = int(samples)
    for kernel, stride in layers:
        if n < kernel:
            return 0
        n = (n - kernel) // stride + 1
    return n
