"""``VitsTokenizer`` (MMS-TTS character tokenizer) redone without transformers, from the manifest's vocabulary.

VitsTokenizer is a Python-only tokenizer (no ``tokenizer.json`` for the ``tokenizers`` library), so its steps are
repeated here: lower-case everything except whole vocabulary entries (``normalize_text``), Romanian's cedilla
swap, drop every character outside the vocabulary and strip (``prepare_for_tokenization`` with ``normalize``),
one token per character, blank id 0 between and around them (``add_blank``). What was dropped is returned, so the
pipeline can say which characters the voice cannot speak.
"""

from __future__ import annotations

import re

from mmedge.errors import InputError

#: transformers' ``has_non_roman_characters``: anything outside ASCII and Latin-1/Latin Extended.
_NON_ROMAN = re.compile(r"[^\x00-\x7F\u0080-\u00FF\u0100-\u017F\u0180-\u024F]")


class VitsCharacters:
    """Text → ids as ``VitsTokenizer(text).input_ids`` gives them (``config``: the manifest's ``text`` section)."""

    def __init__(self, config: dict):
        self.vocab: dict[str, int] = {str(k): int(v) for k, v in config["vocab"].items()}
        self.words = list(self.vocab) + [str(t) for t in config.get("added_tokens", [])]
        self.add_blank, self.normalize = bool(config["add_blank"]), bool(config["normalize"])
        self.language, self.is_uroman = config.get("language"), bool(config.get("is_uroman"))
        self.unk_id = self.vocab.get(str(config.get("unk_token")))

    def _lower(self, text: str) -> str:
        """``VitsTokenizer.normalize_text``: vocabulary entries are kept as they are, the rest lower-cased."""
        out, i = [], 0
        while i < len(text):
            word = next((w for w in self.words if w and text.startswith(w, i)), None)
            if word is not None:
                out.append(word)
                i += len(word)
            else:
                out.append(text[i].lower())
                i += 1
        return "".join(out)

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """(token ids, characters dropped because the vocabulary lacks them)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("the text to speak is empty; give a sentence")
        original = text
        if self.normalize:
            text = self._lower(text)
        if self.language == "ron":
            text = text.replace("ț", "ţ")
        if self.is_uroman and _NON_ROMAN.search(text):
            raise InputError("this voice reads romanized text: romanize it first with uroman (pip install uroman; "
                             "uroman.Uroman().romanize_string(text))")
        dropped: list[str] = []
        if self.normalize:
            dropped = [c for c in text if c not in self.vocab]
            text = "".join(c for c in text if c in self.vocab).strip()
            ids = [self.vocab[c] for c in text]
        else:
            dropped = [c for c in text if c not in self.vocab and self.unk_id is None]
            ids = [self.vocab[c] if c in self.vocab else self.unk_id for c in text if c in self.vocab or
                   self.unk_id is not None]
        if not ids:
            raise InputError(f"none of the characters of {original!r} is in this voice's vocabulary "
                             f"({''.join(sorted(c for c in self.vocab if len(c) == 1))!r}); give text in its language")
        if self.add_blank:
            ids = [x for i in ids for x in (0, i)] + [0]
        return ids, sorted(set(dropped))
