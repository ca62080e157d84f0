"""A generic text tokenizer over a Hugging Face ``tokenizer.json`` (the ``tokenizers`` library): encode
with the tokenizer's own special-token rules, decode, and incremental decoding for streaming."""

from __future__ import annotations

from pathlib import Path

from mmedge.errors import InputError, PackageError


def check_utf8(text: str, what: str = "text") -> None:
    """``InputError`` for text that cannot be encoded as UTF-8, before the tokenizer raises a bare ``TypeError``.

    Such a ``str`` holds lone surrogates: Python decodes command-line arguments and file names that are not valid
    UTF-8 with ``surrogateescape`` (a Latin-1 ``café`` arrives as ``'caf\\udce9'``), and ``open(..., errors=
    "surrogateescape")`` does the same. Guessing the real encoding would be a silent wrong answer; the user knows it.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start:e.end]
        try:  # a byte smuggled in by surrogateescape: show the byte
            found = "bytes " + bad.encode("utf-8", "surrogateescape").hex(" ")
        except UnicodeEncodeError:  # any other lone surrogate (e.g. from a JSON "\\ud800" escape)
            found = "lone surrogates " + " ".join(f"U+{ord(c):04X}" for c in bad)
        raise InputError(f"the {what} is not valid UTF-8 ({found} at character {e.start}, e.g. Latin-1 text or a "
                         "binary file); convert it to UTF-8 first, e.g. `iconv -f latin1 -t utf-8`") from None


class TextTokenizer:
    def __init__(self, tokenizer_file: str | Path):
        from tokenizers import Tokenizer

        path = Path(tokenizer_file)
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exceptions for missing or malformed files
            raise PackageError(f"cannot load the tokenizer {path}: {' '.join(str(e).split())[:200]}; "
                               "re-export the package") from None
        self._tok.no_padding()
        self._tok.no_truncation()

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        check_utf8(text)
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)


class IncrementalDecoder:
    """Turns a growing token list into text pieces for streaming, never emitting half a UTF-8 character
    (byte-level BPE splits characters across tokens: the decode then ends in U+FFFD until completed)."""

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer, self.tokens, self.emitted = tokenizer, [], ""

    def push(self, token: int) -> str:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens)
        if text.endswith("\ufffd"):
            return ""
        piece, self.emitted = text[len(self.emitted):], text
        return piece
