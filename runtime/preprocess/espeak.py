"""Text → IPA phonemes with espeak-ng, grouped as Piper groups them: by sentence, each clause followed by the
punctuation that ended it.

Why the library (``libespeak-ng``, through ctypes) and not the ``espeak-ng --ipa`` command: Piper voices were
trained on espeak-ng phonemes *with* each clause's terminator kept (``.``, ``,``, ``?``, ``!``, ``:``, ``;``),
which shapes their prosody, and the command prints one line per clause with the punctuation gone. The library's
``espeak_TextToPhonemes`` phonemizes one clause per call and advances a pointer past it, so the terminator is the
punctuation in the text it consumed, as Piper's ``espeak_TextToPhonemesWithTerminator`` (a function of Piper's
espeak-ng fork, absent from distribution builds) reports it. Sentences end at ``.``, ``?`` and ``!``; ``,``, ``:``
and ``;`` are followed by a space, and the result is NFD-decomposed, as in Piper's ``phonemize_espeak``.

espeak-ng is an external program (GPL, installed from the system's packages): a missing library is an
``EngineUnavailableError`` naming the install command. The library keeps global state, so calls are serialised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading
import unicodedata

from mmedge.errors import EngineUnavailableError, InputError
from mmedge.runtime.preprocess.tokenizer import check_utf8

INSTALL_HINT = "install espeak-ng: `apt install espeak-ng` (Debian/Ubuntu), `brew install espeak-ng` (macOS)"
#: espeak-ng's C API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
#: Clause terminators Piper keeps, and those that end a sentence.
TERMINATORS = ".,?!:;"
SENTENCE_END = ".?!"
CLOSERS = "\"')]}\u00bb\u201d\u2019"
_LANGUAGE_FLAG = re.compile(r"\([^)]+\)")  # "(fr)" marks around words espeak reads in another language

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_voice: str | None = None


def _load() -> ctypes.CDLL:
    global _library
    if _library is not None:
        return _library
    names = [n for n in (ctypes.util.find_library("espeak-ng"), "libespeak-ng.so.1", "libespeak-ng.dylib") if n]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        raise EngineUnavailableError(f"this voice needs espeak-ng to turn text into phonemes and its library "
                                     f"(libespeak-ng) was not found; {INSTALL_HINT}")
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_DONT_EXIT) <= 0:
        raise EngineUnavailableError(f"espeak-ng is installed but could not start (its data files are missing?); "
                                     f"reinstall it: {INSTALL_HINT}")
    _library = lib
    return lib


def _terminator(consumed: str, at_end: bool) -> str:
    """The punctuation that ended a clause, from the text espeak consumed for it: espeak reads one character of
    the next clause ahead (dropped here unless the text ended), and closing quotes or brackets may follow the
    punctuation. "" when the clause ended without one (end of text, or a line break)."""
    body = (consumed if at_end else consumed[:-1]).rstrip().rstrip(CLOSERS).rstrip()
    return body[-1] if body and body[-1] in TERMINATORS else ""


def phonemize(text: str, voice: str) -> list[list[str]]:
    """Phonemes (single code points after NFD) per sentence of ``text``, spoken by espeak-ng voice ``voice``."""
    global _voice
    if not text.strip():
        raise InputError("the text to speak is empty; give a sentence")
    check_utf8(text, "text to speak")
    with _lock:
        lib = _load()
        if voice != _voice:
            if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
                raise EngineUnavailableError(f"espeak-ng has no voice '{voice}' (this voice's language); install "
                                             "its full data (`apt install espeak-ng-data`) and check "
                                             "`espeak-ng --voices`")
            _voice = voice
        data = text.encode("utf-8")
        buffer = ctypes.create_string_buffer(data)
        base = ctypes.addressof(buffer)
        pointer = ctypes.c_void_p(base)
        sentences: list[list[str]] = []
        current: list[str] = []
        while pointer.value:
            start = pointer.value - base
            phonemes = (lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA) or b"").decode()
            end = pointer.value - base if pointer.value else len(data)
            terminator = _terminator(data[start:end].decode("utf-8", errors="ignore"), not pointer.value)
            clause = _LANGUAGE_FLAG.sub("", phonemes) + terminator
            if terminator and terminator not in SENTENCE_END:
                clause += " "
            current.extend(unicodedata.normalize("NFD", clause))
            if terminator and terminator in SENTENCE_END:
                sentences.append(current)
                current = []
    if current:
        sentences.append(current)
    return [s for s in sentences if any(not c.isspace() for c in s)]
