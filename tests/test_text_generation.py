"""Decoder LMs end to end: tokens equal to transformers' ``generate`` on every engine with both cache
strategies (dynamic past, static buffer with prefill buckets), the static contract enforced before any
engine runs, multi-turn chat on a kept cache, streaming and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import StaticShapeError, UsageError
from mmedge.runtime import open_package

CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
SETTINGS = [dict(max_new_tokens=12), dict(max_new_tokens=8, num_beams=3, length_penalty=0.8),
            dict(max_new_tokens=10, repetition_penalty=1.3, no_repeat_ngram_size=2)]
PROMPT = "A photo of a cat on the"


@pytest.fixture(scope="module")
def hf(tiny_lm_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return {v: (AutoModelForCausalLM.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d))
            for v, d in tiny_lm_dirs.items()}


def reference(hf, variant: str, prompt_ids: list[int], **settings) -> list[int]:
    model, _ = hf[variant]
    ids = torch.tensor([prompt_ids])
    n = settings["max_new_tokens"]
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, min_new_tokens=n, pad_token_id=0, **settings)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
@pytest.mark.parametrize("engine, shape", CASES)
def test_tokens_equal_transformers_generate(lm_packages, hf, variant, engine, shape):
    pipe = runtime.load(lm_packages[variant], engine=engine, variant=shape, device="x86-cpu")
    assert pipe.ran.engine == engine and pipe.ran.variant == shape
    prompt_ids = hf[variant][1](PROMPT).input_ids
    for settings in SETTINGS:
        result = pipe.generate(PROMPT, min_new_tokens=settings["max_new_tokens"], **settings)
        assert result.tokens == reference(hf, variant, prompt_ids, **settings), settings
        assert result.prompt_tokens == len(prompt_ids)


def test_long_prompt_is_prefilled_in_bucket_chunks(lm_packages, hf):
    """A prompt longer than the largest prefill bucket (64) runs as chunks and still matches."""
    pipe = runtime.load(lm_packages["gpt2"], engine="litert", device="x86-cpu")
    prompt = " ".join(["the rocket launched at dawn"] * 5)
    prompt_ids = hf["gpt2"][1](prompt).input_ids
    assert 64 < len(prompt_ids) < 110
    result = pipe.generate(prompt, max_new_tokens=6, min_new_tokens=6)
    assert result.tokens == reference(hf, "gpt2", prompt_ids, max_new_tokens=6)


def test_static_cache_limit_is_an_error_before_the_engine_runs(lm_packages):
    manifest = open_package(lm_packages["gpt2"]).manifest
    cache = manifest.generation["cache"]
    assert cache["max_cache_len"] == 128 and cache["prompt_buckets"] == [16, 64]
    pipe = runtime.load(lm_packages["gpt2"], engine="litert", device="x86-cpu")
    calls = []
    pipe.decoder_runner.signature("decode").session.run = lambda *a, **k: calls.append(a)
    with pytest.raises(StaticShapeError, match="max_length=128"):
        pipe.generate("a cat " * 40, max_new_tokens=100)
    assert calls == []


def test_streaming_pieces_make_the_text(lm_packages):
    pipe = runtime.load(lm_packages["llama"], engine="onnxruntime", device="x86-cpu")
    pieces = []
    result = pipe.generate(PROMPT, max_new_tokens=10, min_new_tokens=10, on_text=pieces.append)
    assert "".join(pieces) == result.text and result.timings["time_to_first_token_ms"] > 0
    assert "".join(pipe.stream(PROMPT, max_new_tokens=10, min_new_tokens=10)) == result.text


def test_sampling_is_seeded(lm_packages):
    pipe = runtime.load(lm_packages["llama"], engine="onnxruntime", device="x86-cpu")
    a = pipe.generate(PROMPT, max_new_tokens=10, do_sample=True, temperature=1.5, seed=3).tokens
    b = pipe.generate(PROMPT, max_new_tokens=10, do_sample=True, temperature=1.5, seed=3).tokens
    c = pipe.generate(PROMPT, max_new_tokens=10, do_sample=True, temperature=1.5, seed=4).tokens
    assert a == b and a != c


@pytest.mark.parametrize("engine, shape", [("onnxruntime", "fp32"), ("litert", "fp32-static")])
def test_chat_keeps_the_cache_between_turns(lm_packages, hf, engine, shape):
    model, tok = hf["llama"]
    pipe = runtime.load(lm_packages["llama"], engine=engine, variant=shape, device="x86-cpu")
    chat = pipe.chat()
    first = chat.send("hello there", max_new_tokens=5, min_new_tokens=5)
    second = chat.send("and then?", max_new_tokens=5, min_new_tokens=5)
    # The same conversation fed to transformers in one go: turn 1's prompt, its tokens, then turn 2's text.
    turn1 = tok.apply_chat_template([{"role": "user", "content": "hello there"}], add_generation_prompt=True)
    assert first.tokens == reference(hf, "llama", turn1, max_new_tokens=5)
    turn2_text = "<|im_end|>\n<|im_start|>user\nand then?<|im_end|>\n<|im_start|>assistant\n"
    history = turn1 + first.tokens + tok(turn2_text, add_special_tokens=False).input_ids
    assert second.tokens == reference(hf, "llama", history, max_new_tokens=5)
    assert [m["role"] for m in chat.history] == ["user", "assistant", "user", "assistant"]


def test_chat_needs_a_template(lm_packages):
    with pytest.raises(UsageError, match="no chat template"):
        runtime.load(lm_packages["gpt2"], engine="onnxruntime", device="x86-cpu").chat()


def test_cli_prompt_json_and_errors(lm_packages, capsys):
    assert main(["run", str(lm_packages["gpt2"]), "--device", "x86-cpu", "--engine", "openvino", "--prompt", PROMPT,
                 "--max-new-tokens", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ran"]["engine"] == "openvino" and len(out["tokens"]) <= 5 and out["timings"]["new_tokens"] == len(out["tokens"])
    assert main(["run", str(lm_packages["gpt2"]), "--device", "x86-cpu", "--image", "x.jpg"]) == 2
    assert "--prompt" in capsys.readouterr().err
    assert main(["run", str(lm_packages["gpt2"]), "--device", "x86-cpu", "--prompt", "x", "--temperature", "0"]) == 2
    assert "temperature" in capsys.readouterr().err
