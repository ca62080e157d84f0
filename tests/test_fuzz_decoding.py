"""Fuzzing the decoding loop's stopping rules (``runtime.generation``: max_new_tokens, eos, min_new_tokens, stop
strings) with a scripted step model: its logits at step n are fixed in advance, whatever was generated, so a run
with stopping rules can be compared with the same run without them.

Properties: never more than ``max_new_tokens`` tokens and never more model calls than needed; no eos in the output,
and no eos before ``min_new_tokens``; the output is a prefix of the no-stop output and ends exactly where the first
rule fires (the eos, or the first token after which a stop string appears, straddling token boundaries or not);
``stream`` yields the same tokens as ``generate``. Greedy and seeded sampling alike."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmedge.runtime.generation import GenerationConfig, generate, stream

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Token texts of several lengths (one empty) so that stop strings often span two or three tokens.
PIECES = ["a", "b", "ab", "ba", "c", "", "abc", " ", "cb", "x"]
VOCAB = len(PIECES)
PROMPT = [1, 2, 3]


def decode(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids)


class ScriptedModel:
    """A ``StepModel`` whose logits at generation step n are ``script[n]``; ``banned`` tokens get -inf before
    step ``ban_until`` (the no-stop reference: what min_new_tokens does to the eos, without stopping on it)."""

    max_length = None

    def __init__(self, script: np.ndarray, banned: list[int] = (), ban_until: int = 0):
        self.script, self.banned, self.ban_until = script, list(banned), ban_until
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def extend(self, ids: np.ndarray) -> np.ndarray:
        step = self.calls
        self.calls += 1
        logits = self.script[step].copy()
        if step < self.ban_until and self.banned:
            logits[self.banned] = -np.inf
        return logits[None, :]

    def reorder(self, rows: np.ndarray) -> None:
        raise AssertionError("greedy and sampling never reorder")


@st.composite
def cases(draw):
    max_new = draw(st.integers(1, 16))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    script = rng.standard_normal((max_new + 1, VOCAB)).astype(np.float32)
    # make some steps strongly prefer a drawn token (often an eos), as a real model's end of sentence would
    for step in draw(st.lists(st.integers(0, max_new), max_size=6)):
        script[step, draw(st.integers(0, VOCAB - 1))] += 8.0
    eos = draw(st.lists(st.integers(0, VOCAB - 1), max_size=3, unique=True))
    min_new = draw(st.integers(0, max_new + 2))
    sampling = draw(st.booleans())
    kw = dict(do_sample=True, seed=seed, top_k=draw(st.sampled_from([0, 3, 50])), temperature=0.7) if sampling else {}
    return script, max_new, eos, min_new, kw


def _no_stop(script, max_new, eos, min_new, kw):
    model = ScriptedModel(script, eos, min_new)
    return generate(model, PROMPT, GenerationConfig(max_new_tokens=max_new, **kw)).tokens


def _check(out, model, reference, max_new, eos, min_new, stops):
    tokens = out.tokens
    text = decode(tokens)
    assert len(tokens) <= max_new
    assert model.calls <= len(tokens) + 1  # prefill + one call per fed-back token; the last is never fed back
    assert tokens == reference[:len(tokens)]  # a prefix of the no-stop output
    assert not set(tokens) & set(eos)
    assert out.sequence == PROMPT + tokens + ([out.sequence[-1]] if out.stop_reason == "eos" else [])
    # no rule fired before the end: no stop string in the text of any shorter output
    assert not any(s in decode(tokens[:-1]) for s in stops)
    if out.stop_reason == "eos":
        assert len(tokens) >= min_new and out.sequence[-1] in eos
        assert reference[len(tokens)] == out.sequence[-1]  # the eos is the no-stop run's next token
        assert not any(s in text for s in stops)
    elif out.stop_reason == "stop_string":
        assert any(s in text for s in stops)
    else:
        assert out.stop_reason == "max_new_tokens" and len(tokens) == max_new
        assert not any(s in text for s in stops)


@FUZZ
@given(case=cases())
def test_eos_min_length_and_max_new_tokens(case):
    script, max_new, eos, min_new, kw = case
    reference = _no_stop(*case)
    model = ScriptedModel(script)
    out = generate(model, PROMPT, GenerationConfig(max_new_tokens=max_new, eos_token_ids=eos, min_new_tokens=min_new,
                                                   **kw))
    _check(out, model, reference, max_new, eos, min_new, [])
    if not set(reference) & set(eos):
        assert out.tokens == reference  # no eos was ever chosen: nothing to stop on


@FUZZ
@given(case=cases(), data=st.data())
def test_stop_strings_straddling_tokens(case, data):
    script, max_new, eos, min_new, kw = case
    reference = _no_stop(*case)
    full = decode(reference)
    stops = data.draw(st.lists(st.text("abcx ", min_size=1, max_size=4), max_size=2))
    if full:  # a substring of the no-stop text, so it really occurs (often across a token boundary)
        start = data.draw(st.integers(0, len(full) - 1))
        stops.append(full[start:start + data.draw(st.integers(1, 4))])
    model = ScriptedModel(script)
    config = GenerationConfig(max_new_tokens=max_new, eos_token_ids=eos, min_new_tokens=min_new, stop_strings=stops,
                              **kw)
    out = generate(model, PROMPT, config, decode=decode)
    _check(out, model, reference, max_new, eos, min_new, stops)
    assert out.text == decode(out.tokens)
    streamed = list(stream(ScriptedModel(script), PROMPT, config, decode=decode))
    assert streamed == out.tokens


def test_a_stop_string_across_three_tokens_stops_on_the_third():
    """'bcx' only appears once the third token's text is there: "ab" + "c" + "x"."""
    script = np.zeros((6, VOCAB), np.float32)
    for step, token in enumerate([2, 4, 9, 0, 0, 0]):  # ab, c, x, a, ...
        script[step, token] = 5.0
    out = generate(ScriptedModel(script), PROMPT, GenerationConfig(max_new_tokens=5, stop_strings=["bcx"]),
                   decode=decode)
    assert out.tokens == [2, 4, 9] and out.stop_reason == "stop_string"


def test_callback_stop_keeps_the_prefix():
    script = np.random.default_rng(0).standard_normal((9, VOCAB)).astype(np.float32)
    reference = generate(ScriptedModel(script), PROMPT, GenerationConfig(max_new_tokens=8)).tokens
    seen: list[int] = []
    out = generate(ScriptedModel(script), PROMPT, GenerationConfig(max_new_tokens=8),
                   on_token=lambda t: seen.append(t) or len(seen) == 3)
    assert out.stop_reason == "callback" and out.tokens == seen == reference[:3]
