"""The numpy decoding library against Hugging Face: same tokens as ``model.generate`` on tiny random models,
each processor equal to its HF class, plus sampling, stop strings, streaming, capacity and config checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.generation import logits_process as hf

from mmedge.errors import InputError, StaticShapeError, UsageError
from mmedge.runtime.generation import (
    GenerationConfig, MinNewTokens, NoRepeatNGram, RepetitionPenalty, SuppressTokens, SuppressTokensAtBegin,
    Temperature, TopK, TopP, generate, stream)
from mmedge.runtime.generation.sampling import sample_next

VOCAB = 101


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The models are tiny: threads only add contention (and this machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TorchStepModel:
    """The StepModel protocol over a transformers causal LM with a DynamicCache (test-only)."""

    def __init__(self, model: torch.nn.Module, max_length: int | None = None) -> None:
        self.model, self.max_length, self.cache, self.calls = model, max_length, None, 0

    def reset(self) -> None:
        self.cache = DynamicCache()

    def extend(self, ids: np.ndarray) -> np.ndarray:
        self.calls += 1
        with torch.no_grad():
            out = self.model(input_ids=torch.from_numpy(ids), past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].float().numpy()

    def reorder(self, rows: np.ndarray) -> None:
        self.cache.reorder_cache(torch.from_numpy(rows))


def _tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64, initializer_range=0.3,
                         bos_token_id=0, eos_token_id=1, attn_implementation="eager")
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          initializer_range=0.3, bos_token_id=0, eos_token_id=1, attn_implementation="eager")
        model = LlamaForCausalLM(cfg)
    return model.eval()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny(request) -> torch.nn.Module:
    return _tiny(request.param)


PROMPT = [5, 17, 42, 8, 99, 23]


def hf_generate(model: torch.nn.Module, prompt: list[int], **kw) -> tuple[list[int], float | None]:
    ids = torch.tensor([prompt])
    kw.setdefault("pad_token_id", 0)
    kw.setdefault("eos_token_id", 1)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, return_dict_in_generate=True,
                             output_scores=True, **kw)
    score = getattr(out, "sequences_scores", None)
    return out.sequences[0].tolist(), (None if score is None else float(score[0]))


def ours(model: torch.nn.Module, prompt: list[int], **kw):
    kw.setdefault("eos_token_ids", [1])
    return generate(TorchStepModel(model), prompt, GenerationConfig(**kw).validate())


def frequent_token(model: torch.nn.Module, prompt: list[int], n: int = 12) -> int:
    """A token greedy decoding produces mid-way, to use as an eos that is really hit."""
    out = ours(model, prompt, max_new_tokens=n, eos_token_ids=[])
    return out.tokens[n // 2]


# ---------------------------------------------------------------- token-for-token equality with HF generate


@pytest.mark.parametrize("kw", [
    {},
    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
    {"suppress_tokens": [3, 4, 50], "begin_suppress_tokens": [7, 60]},
])
def test_greedy_matches_hf(tiny, kw):
    seq, _ = hf_generate(tiny, PROMPT, max_new_tokens=20, **kw)
    out = ours(tiny, PROMPT, max_new_tokens=20, **kw)
    assert out.sequence == seq
    assert out.num_prompt_tokens == len(PROMPT)


def test_begin_suppress_changes_only_the_first_token(tiny):
    first = ours(tiny, PROMPT, max_new_tokens=3).tokens[0]
    out = ours(tiny, PROMPT, max_new_tokens=3, begin_suppress_tokens=[first])
    assert out.tokens[0] != first
    assert out.sequence == hf_generate(tiny, PROMPT, max_new_tokens=3, begin_suppress_tokens=[first])[0]


def test_eos_and_multiple_eos_match_hf(tiny):
    eos = frequent_token(tiny, PROMPT)
    other = frequent_token(tiny, PROMPT, n=18)
    for ids in ([eos], [77, eos], [other, eos]):
        seq, _ = hf_generate(tiny, PROMPT, max_new_tokens=20, eos_token_id=ids)
        out = ours(tiny, PROMPT, max_new_tokens=20, eos_token_ids=ids)
        assert out.sequence == seq
        assert out.stop_reason == "eos" and out.sequence[-1] in ids
        assert out.tokens == seq[len(PROMPT):-1]


def test_min_new_tokens_with_eos_matches_hf(tiny):
    eos = frequent_token(tiny, PROMPT)
    early = ours(tiny, PROMPT, max_new_tokens=20, eos_token_ids=[eos])
    min_new = len(early.tokens) + 3
    seq, _ = hf_generate(tiny, PROMPT, max_new_tokens=20, eos_token_id=eos, min_new_tokens=min_new)
    out = ours(tiny, PROMPT, max_new_tokens=20, eos_token_ids=[eos], min_new_tokens=min_new)
    assert out.sequence == seq and len(out.tokens) >= min_new


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping",
                         [(3, 0.6, True), (3, 1.5, False), (4, 0.6, False), (4, 1.5, True), (3, 1.0, "never")])
def test_beam_search_matches_hf(tiny, num_beams, length_penalty, early_stopping):
    eos = frequent_token(tiny, PROMPT)
    kw = dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping)
    for eos_ids in ([eos], [eos, frequent_token(tiny, PROMPT, n=6)]):
        seq, score = hf_generate(tiny, PROMPT, max_new_tokens=14, eos_token_id=eos_ids, **kw)
        out = ours(tiny, PROMPT, max_new_tokens=14, eos_token_ids=eos_ids, **kw)
        assert out.sequence == seq
        assert out.score == pytest.approx(score, abs=1e-4)


def test_beam_search_with_processors_matches_hf(tiny):
    kw = dict(num_beams=3, repetition_penalty=1.3, no_repeat_ngram_size=2, suppress_tokens=[2, 9],
              begin_suppress_tokens=[11], length_penalty=0.6)
    seq, score = hf_generate(tiny, PROMPT, max_new_tokens=12, **kw)
    out = ours(tiny, PROMPT, max_new_tokens=12, **kw)
    assert out.sequence == seq and out.score == pytest.approx(score, abs=1e-4)


# ---------------------------------------------------------------- processors vs HF classes

def _pairs():
    eos = np.array([1, 7])
    return [
        (RepetitionPenalty(1.3), hf.RepetitionPenaltyLogitsProcessor(1.3)),
        (RepetitionPenalty(0.7), hf.RepetitionPenaltyLogitsProcessor(0.7)),
        (NoRepeatNGram(1), hf.NoRepeatNGramLogitsProcessor(1)),
        (NoRepeatNGram(2), hf.NoRepeatNGramLogitsProcessor(2)),
        (NoRepeatNGram(3), hf.NoRepeatNGramLogitsProcessor(3)),
        (MinNewTokens(4, 5, eos), hf.MinNewTokensLengthLogitsProcessor(4, 5, eos.tolist())),
        (MinNewTokens(2, 1, eos), hf.MinNewTokensLengthLogitsProcessor(2, 1, eos.tolist())),
        (SuppressTokens(np.array([0, 5, 30])), hf.SuppressTokensLogitsProcessor([0, 5, 30])),
        (SuppressTokensAtBegin(np.array([3, 4]), 9), hf.SuppressTokensAtBeginLogitsProcessor([3, 4], 9)),
        (SuppressTokensAtBegin(np.array([3, 4]), 8), hf.SuppressTokensAtBeginLogitsProcessor([3, 4], 8)),
        (Temperature(0.7), hf.TemperatureLogitsWarper(0.7)),
        (TopK(5), hf.TopKLogitsWarper(5)),
        (TopK(1, min_tokens_to_keep=3), hf.TopKLogitsWarper(1, min_tokens_to_keep=3)),
        (TopK(500), hf.TopKLogitsWarper(500)),
        (TopP(0.8), hf.TopPLogitsWarper(0.8)),
        (TopP(0.01), hf.TopPLogitsWarper(0.01)),
        (TopP(0.3, min_tokens_to_keep=4), hf.TopPLogitsWarper(0.3, min_tokens_to_keep=4)),
    ]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 4), length=st.integers(1, 12),
       scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_processors_match_hf(seed, rows, length, scale):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 8, (rows, length)).astype(np.int64)  # a small alphabet so n-grams repeat
    logits = (rng.standard_normal((rows, 40)) * scale).astype(np.float32)
    for mine, theirs in _pairs():
        expected = theirs(torch.from_numpy(ids), torch.from_numpy(logits.copy())).numpy()
        got = mine(ids, logits.copy())
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=type(mine).__name__)
    # HF's warper chain: temperature, top-k, then top-p on what top-k left
    expected = torch.from_numpy(logits.copy())
    for proc in (hf.TemperatureLogitsWarper(0.6), hf.TopKLogitsWarper(7), hf.TopPLogitsWarper(0.75)):
        expected = proc(torch.from_numpy(ids), expected)
    got = logits.copy()
    for proc in (Temperature(0.6), TopK(7), TopP(0.75)):
        got = proc(ids, got)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6, atol=1e-6)


def test_sample_next_draws_only_live_tokens_in_proportion():
    rng = np.random.default_rng(0)
    scores = np.full(50, -np.inf, np.float32)
    scores[[3, 10, 40]] = np.log([0.2, 0.3, 0.5])
    draws = np.bincount([sample_next(scores, rng) for _ in range(4000)], minlength=50)
    assert set(np.flatnonzero(draws)) == {3, 10, 40}
    np.testing.assert_allclose(draws[[3, 10, 40]] / 4000, [0.2, 0.3, 0.5], atol=0.03)


# ---------------------------------------------------------------- sampling


def test_sampling_is_seeded(tiny):
    kw = dict(do_sample=True, max_new_tokens=15, eos_token_ids=[], temperature=1.5, top_k=0)
    a = ours(tiny, PROMPT, seed=1, **kw).tokens
    assert a == ours(tiny, PROMPT, seed=1, **kw).tokens
    assert a != ours(tiny, PROMPT, seed=2, **kw).tokens


def test_sampling_degenerates_to_greedy(tiny):
    greedy = ours(tiny, PROMPT, max_new_tokens=12).tokens
    assert ours(tiny, PROMPT, max_new_tokens=12, do_sample=True, top_k=1, seed=3).tokens == greedy
    assert ours(tiny, PROMPT, max_new_tokens=12, do_sample=True, top_k=0, top_p=1e-6, seed=4).tokens == greedy


def test_beam_sampling_runs_seeded(tiny):
    kw = dict(num_beams=3, do_sample=True, max_new_tokens=8, seed=5)
    a = ours(tiny, PROMPT, **kw)
    assert a.tokens == ours(tiny, PROMPT, **kw).tokens and a.score is not None


# ---------------------------------------------------------------- stopping, streaming, capacity

def test_stop_string_callback_and_stream(tiny):
    decode = lambda ids: " ".join(f"t{i}" for i in ids)  # noqa: E731
    full = ours(tiny, PROMPT, max_new_tokens=15, eos_token_ids=[])
    assert full.stop_reason == "max_new_tokens" and len(full.tokens) == 15
    target = f"t{full.tokens[4]}"
    cut = next(i for i, t in enumerate(full.tokens) if f"t{t}" == target)
    out = generate(TorchStepModel(tiny), PROMPT, GenerationConfig(max_new_tokens=15, stop_strings=["zz", target]),
                   decode=decode)
    assert out.stop_reason == "stop_string" and out.tokens == full.tokens[:cut + 1]
    assert out.text == decode(out.tokens) and target in out.text

    seen: list[int] = []
    out = generate(TorchStepModel(tiny), PROMPT, GenerationConfig(max_new_tokens=15),
                   on_token=lambda t: seen.append(t) or len(seen) == 3)
    assert out.stop_reason == "callback" and out.tokens == seen == full.tokens[:3]

    model = TorchStepModel(tiny)
    streamed = list(stream(model, PROMPT, GenerationConfig(max_new_tokens=15)))
    assert streamed == full.tokens and model.calls == 15  # prefill + 14 steps: the last token needs no call


def test_continue_cache_equals_one_long_prompt(tiny):
    model = TorchStepModel(tiny)
    first = generate(model, PROMPT, GenerationConfig(max_new_tokens=5, eos_token_ids=[]))
    follow = [first.sequence[-1], 12, 13]  # the last generated token was never fed to the cache
    second = generate(model, follow, GenerationConfig(max_new_tokens=6, eos_token_ids=[]), continue_cache=True)
    whole = ours(tiny, first.sequence + [12, 13], max_new_tokens=6, eos_token_ids=[])
    assert second.tokens == whole.tokens


def test_beams_continue_a_greedy_cache(tiny):
    model = TorchStepModel(tiny)
    first = generate(model, PROMPT, GenerationConfig(max_new_tokens=4, eos_token_ids=[]))
    cfg = GenerationConfig(max_new_tokens=6, num_beams=3, eos_token_ids=[])
    second = generate(model, [first.sequence[-1], 12], cfg, continue_cache=True)
    assert second.tokens == ours(tiny, first.sequence + [12], **cfg.with_overrides(eos_token_ids=[]).to_dict()).tokens


class NeverCalled:
    max_length = 16

    def reset(self) -> None:
        raise AssertionError("model called")

    extend = reorder = reset


def test_capacity_check_before_any_model_call():
    with pytest.raises(StaticShapeError, match=r"max_length=16.*lower max_new_tokens to 6"):
        generate(NeverCalled(), list(range(10)), GenerationConfig(max_new_tokens=7))
    with pytest.raises(StaticShapeError, match="shorten the prompt"):
        stream(NeverCalled(), list(range(16)), GenerationConfig(max_new_tokens=1))
    with pytest.raises(StaticShapeError, match="max_length=16"):
        generate(NeverCalled(), list(range(10)), GenerationConfig(max_new_tokens=7, num_beams=2))
    with pytest.raises(InputError):
        generate(NeverCalled(), [], GenerationConfig())
    with pytest.raises(InputError, match="max_length=4"):
        generate(NeverCalled(), list(range(4)), GenerationConfig(max_length=4))


def test_max_length_caps_new_tokens_like_hf(tiny):
    seq, _ = hf_generate(tiny, PROMPT, max_length=10, eos_token_id=None)
    out = ours(tiny, PROMPT, max_length=10, max_new_tokens=50, eos_token_ids=[])
    assert out.sequence == seq and len(out.tokens) == 4


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("bad,name", [
    (dict(do_sample=True, temperature=0.0), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(num_beams=0), "num_beams"), (dict(max_new_tokens=0), "max_new_tokens"), (dict(top_k=-1), "top_k"),
    (dict(repetition_penalty=0.0), "repetition_penalty"), (dict(early_stopping="soon"), "early_stopping"),
    (dict(eos_token_ids=[-1]), "eos_token_ids"), (dict(eos_token_ids=5), "eos_token_ids"),
    (dict(num_beams=2, stop_strings=["x"]), "stop_strings"),
])
def test_config_validation_names_the_bad_value(bad, name):
    with pytest.raises(UsageError, match=name):
        GenerationConfig(**bad).validate()


def test_usage_errors_at_call():
    with pytest.raises(UsageError, match="decode"):
        generate(NeverCalled(), [1, 2], GenerationConfig(stop_strings=["x"]))
    with pytest.raises(UsageError, match="num_beams"):
        stream(NeverCalled(), [1, 2], GenerationConfig(num_beams=2))
    with pytest.raises(UsageError, match="bogus"):
        GenerationConfig().with_overrides(bogus=1)


def test_from_dict_whisper_and_gpt2_and_round_trip():
    whisper = {"begin_suppress_tokens": [220, 50257], "suppress_tokens": [1, 2, 7], "eos_token_id": 50257,
               "pad_token_id": 50257, "max_length": 448, "decoder_start_token_id": 50258, "num_beams": 1,
               "forced_decoder_ids": [[1, None]], "is_multilingual": True, "transformers_version": "4.31.0"}
    cfg = GenerationConfig.from_dict(whisper)
    assert (cfg.eos_token_ids, cfg.pad_token_id, cfg.max_length, cfg.max_new_tokens) == ([50257], 50257, 448, 448)
    assert cfg.begin_suppress_tokens == [220, 50257] and cfg.suppress_tokens == [1, 2, 7]
    gpt2 = GenerationConfig.from_dict({"bos_token_id": 50256, "eos_token_id": 50256, "do_sample": True,
                                       "max_new_tokens": 40, "top_p": 0.9, "temperature": 1,
                                       "repetition_penalty": None, "transformers_version": "4.27.0"})
    assert gpt2.eos_token_ids == [50256] and gpt2.do_sample and gpt2.top_p == 0.9 and gpt2.top_k == 50
    llama = GenerationConfig.from_dict({"eos_token_id": [128001, 128009], "num_beams": 4, "length_penalty": 0.6,
                                        "early_stopping": True, "no_repeat_ngram_size": 3})
    assert llama.eos_token_ids == [128001, 128009] and llama.num_beams == 4
    for cfg in (cfg, gpt2, llama, llama.with_overrides(eos_token_id=5, seed=3, num_beams=1, stop_strings="\n")):
        assert GenerationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
