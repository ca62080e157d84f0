"""Encoder-decoder text generation end to end on tiny T5 (relative position bias) and Marian (sinusoidal
positions, decoder start = pad): tokens equal to transformers' ``generate`` on every engine with both cache
strategies (greedy, beams, repetition penalty), the static source bucket enforced before any engine runs,
a multi-token decoder prompt through the static ``prefill_N`` signature, streaming, prefixes and typed errors.

Each tiny model is exported once per module, to every format with static variants (~2.5 min of the ~3 min this
module takes)."""

from __future__ import annotations

import json

import pytest
import torch

from mmedge import runtime
from mmedge.errors import InputError, StaticShapeError, UsageError
from mmedge.runtime import open_package
from mmedge.runtime.generation import GenerationConfig, generate

VARIANTS = ("t5", "marian")
CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
STATIC = [c for c in CASES if c[1].endswith("static")]
DYNAMIC = [c for c in CASES if not c[1].endswith("static")]
SETTINGS = [dict(max_new_tokens=12), dict(max_new_tokens=8, num_beams=3, length_penalty=0.8),
            dict(max_new_tokens=10, repetition_penalty=1.3, no_repeat_ngram_size=2)]
PREFIX = "translate English to German: "
TEXT = "A photo of a cat on the red blanket."
#: 50-60 tokens with the tiny tokenizers: over the static bucket (48), within Marian's 64 positions.
LONG = "The children were laughing while they built a castle of sand at the beach near the old bridge."


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from mmedge.exporter.families import write_tiny_model

    root = tmp_path_factory.mktemp("tiny-seq2seq")
    return {v: write_tiny_model(v, root / v) for v in VARIANTS}


@pytest.fixture(scope="module")
def packages(tiny_dirs, tmp_path_factory):
    """Both tiny models with every format, dynamic and static (family detected from config.json)."""
    from mmedge.exporter.export import export

    root = tmp_path_factory.mktemp("seq2seq-pkg")
    return {v: export(d, root / v, static=True) for v, d in tiny_dirs.items()}


@pytest.fixture(scope="module")
def hf(tiny_dirs):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return {v: (AutoModelForSeq2SeqLM.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d))
            for v, d in tiny_dirs.items()}


@pytest.fixture(scope="module")
def pipes(packages):
    """One loaded pipeline per (model, engine, variant), shared by the tests."""
    return {(v, e, s): runtime.load(packages[v], engine=e, variant=s, device="x86-cpu")
            for v in VARIANTS for e, s in CASES}


def reference(hf, variant: str, text: str, decoder_prompt: list[int] | None = None, **settings) -> list[int]:
    """transformers' new tokens (after the decoder prompt, without a final eos) for ``text``."""
    model, tok = hf[variant]
    inputs = tok(text, return_tensors="pt")
    extra = {"decoder_input_ids": torch.tensor([decoder_prompt])} if decoder_prompt else {}
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, **extra, **settings)[0].tolist()
    out = out[len(decoder_prompt or [model.generation_config.decoder_start_token_id]):]
    return out[:-1] if out and out[-1] == tok.eos_token_id else out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("engine, shape", CASES)
def test_tokens_equal_transformers_generate(pipes, hf, variant, engine, shape):
    pipe = pipes[(variant, engine, shape)]
    assert pipe.ran.engine == engine and pipe.ran.variant == shape
    tok = hf[variant][1]
    for settings in SETTINGS:
        n = settings["max_new_tokens"]
        result = pipe.generate(TEXT, prefix=PREFIX, min_new_tokens=n, **settings)
        expected = reference(hf, variant, PREFIX + TEXT, min_new_tokens=n, **settings)
        assert result.tokens == expected, settings
        assert result.text == tok.decode(expected, skip_special_tokens=True)
        assert result.prompt_tokens == len(tok(PREFIX + TEXT).input_ids)
        assert result.stop_reason == "max_new_tokens"


@pytest.mark.parametrize("variant", VARIANTS)
def test_runtime_tokenizer_equals_transformers(packages, hf, variant):
    """The package's tokenizer.json encodes like the HF tokenizer, eos appended by the post-processor."""
    from mmedge.runtime.preprocess.tokenizer import TextTokenizer

    tok = hf[variant][1]
    ours = TextTokenizer(packages[variant] / "tokenizer" / "tokenizer.json")
    for text in (TEXT, PREFIX + LONG, "  two  spaces, ünïcode and 42 numbers!", "x"):
        ids = ours.encode(text)
        assert ids == tok(text).input_ids and ids[-1] == tok.eos_token_id
        assert ours.decode(ids) == tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_long_input_static_error_dynamic_ok(pipes, hf, variant):
    n = len(hf[variant][1](PREFIX + LONG).input_ids)
    assert 48 < n <= 64, n  # over the static bucket, within Marian's position table
    for engine, shape in STATIC:
        pipe = pipes[(variant, engine, shape)]
        calls = []
        real_run = pipe.encoder.default.session.run
        pipe.encoder.default.session.run = lambda *a, **k: calls.append(a)
        try:
            with pytest.raises(StaticShapeError, match=f"{n} tokens.*at most 48"):
                pipe.generate(LONG, prefix=PREFIX, max_new_tokens=4)
            with pytest.raises(StaticShapeError):
                pipe.stream(LONG, prefix=PREFIX, max_new_tokens=4)
        finally:
            pipe.encoder.default.session.run = real_run
        assert calls == []
    expected = reference(hf, variant, PREFIX + LONG, max_new_tokens=6, min_new_tokens=6)
    for engine, shape in DYNAMIC:
        result = pipes[(variant, engine, shape)].generate(LONG, prefix=PREFIX, max_new_tokens=6, min_new_tokens=6)
        assert result.tokens == expected and result.prompt_tokens == n


def test_marian_position_table_limit_is_a_typed_error(pipes):
    pipe = pipes[("marian", "onnxruntime", "fp32")]
    with pytest.raises(InputError, match="at most 64"):
        pipe.generate(LONG + " " + LONG, max_new_tokens=2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_input_is_an_input_error(pipes, variant):
    for engine, shape in (("onnxruntime", "fp32"), ("litert", "fp32-static")):
        pipe = pipes[(variant, engine, shape)]
        for text in ("", "   \n"):
            with pytest.raises(InputError, match="empty"):
                pipe.generate(text)
        with pytest.raises(InputError, match="empty"):
            pipe.stream("")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("engine, shape", [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"),
                                           ("litert", "fp32-static")])
def test_multi_token_decoder_prompt_runs_the_prefill_bucket(pipes, hf, variant, engine, shape):
    """A 3-token decoder prompt (as forced language tokens would be) goes through ``prefill_4`` on static
    graphs: for T5 this checks the relative bias computed from explicit positions in the static layout."""
    pipe = pipes[(variant, engine, shape)]
    ids = pipe.source_ids(TEXT, PREFIX)
    prompt = [pipe.decoder_start, 40, 41]
    config = pipe.config.with_overrides(max_new_tokens=6, min_new_tokens=6)
    out = generate(pipe.decoder(ids), prompt, config)
    assert out.tokens == reference(hf, variant, PREFIX + TEXT, decoder_prompt=prompt, max_new_tokens=6,
                                   min_new_tokens=6)
    if shape.endswith("static"):
        assert "prefill_4" in pipe.decoder_runner.signatures


@pytest.mark.parametrize("engine, shape", [("onnxruntime", "fp32"), ("litert", "fp32-static")])
def test_forced_bos_and_eos_equal_transformers(pipes, hf, engine, shape):
    """BART/mBART force a first token, Marian forces eos at the length limit: as transformers' processors do."""
    pipe = pipes[("marian", engine, shape)]
    bos, eos = 7, hf["marian"][1].eos_token_id
    pipe.forced_bos_token_id, pipe.forced_eos_token_ids = bos, [eos]
    try:
        for settings in (dict(max_new_tokens=9), dict(max_new_tokens=7, num_beams=3),
                         dict(max_new_tokens=8, repetition_penalty=1.5)):
            result = pipe.generate(TEXT, **settings)
            expected = reference(hf, "marian", TEXT, forced_bos_token_id=bos, forced_eos_token_id=eos, **settings)
            assert result.tokens == expected and result.tokens[0] == bos, settings
            assert result.stop_reason == "eos"
        assert len(pipe.generate(TEXT, max_new_tokens=9).tokens) == 8  # the 9th token is the forced eos
    finally:
        pipe.forced_bos_token_id, pipe.forced_eos_token_ids = None, []


def test_explicit_position_bias_equals_transformers_in_the_dynamic_layout(hf, tiny_dirs):
    """The swapped-in T5 bias is transformers' own whenever key i sits at position i (every caller but the
    static layout), and differs from a naive reuse in the static layout for a multi-token chunk."""
    from transformers import AutoModelForSeq2SeqLM

    from mmedge.exporter.families.seq2seq import explicit_position_bias

    attention = AutoModelForSeq2SeqLM.from_pretrained(tiny_dirs["t5"]).decoder.block[0].layer[0].SelfAttention
    original = attention.compute_bias
    explicit_position_bias(attention)
    for past, new in ((0, 5), (7, 1), (9, 3)):
        positions = torch.arange(past, past + new)
        assert torch.equal(attention.compute_bias(past + new, past + new, cache_position=positions),
                           original(past + new, past + new, cache_position=positions))
    # static layout: 3 cached tokens in an 8-slot buffer, then 3 new tokens at positions 3, 4, 5
    positions = torch.arange(3, 6)
    ours = attention.compute_bias(6, 11, cache_position=positions)
    dynamic = original(6, 6, cache_position=positions)  # the same tokens in a dynamic cache
    assert torch.equal(ours[..., :3], dynamic[..., :3]) and torch.equal(ours[..., 8:], dynamic[..., 3:])
    assert not torch.equal(original(6, 11, cache_position=positions)[..., 8:], dynamic[..., 3:])


def test_streaming_pieces_make_the_text(pipes):
    pipe = pipes[("t5", "onnxruntime", "fp32")]
    pieces = []
    result = pipe.generate(TEXT, prefix=PREFIX, max_new_tokens=10, min_new_tokens=10, on_text=pieces.append)
    assert "".join(pieces) == result.text and result.timings["time_to_first_token_ms"] > 0
    assert result.timings["encode_ms"] > 0
    assert "".join(pipe.stream(TEXT, prefix=PREFIX, max_new_tokens=10, min_new_tokens=10)) == result.text
    with pytest.raises(UsageError, match="num_beams"):
        pipe.stream(TEXT, num_beams=2, max_new_tokens=2)


def test_prefix_and_result_shape(pipes):
    pipe = pipes[("t5", "openvino", "fp32-static")]
    explicit = pipe.generate(TEXT, prefix=PREFIX, max_new_tokens=5, min_new_tokens=5)
    assert pipe.generate(PREFIX + TEXT, prefix="", max_new_tokens=5, min_new_tokens=5).tokens == explicit.tokens
    pipe.prefix = PREFIX
    try:
        assert pipe.generate(TEXT, max_new_tokens=5, min_new_tokens=5).tokens == explicit.tokens
    finally:
        pipe.prefix = ""
    d = explicit.to_dict()
    assert d["task"] == "text2text-generation" and d["ran"]["engine"] == "openvino"
    assert set(d) == {"task", "text", "tokens", "stop_reason", "prompt_tokens", "timings", "ran"}
    with pytest.raises(UsageError, match="no chat"):
        pipe.chat()


def test_sampling_is_seeded(pipes):
    pipe = pipes[("marian", "onnxruntime", "fp32")]
    a = pipe.generate(TEXT, max_new_tokens=10, do_sample=True, temperature=1.5, seed=3).tokens
    b = pipe.generate(TEXT, max_new_tokens=10, do_sample=True, temperature=1.5, seed=3).tokens
    c = pipe.generate(TEXT, max_new_tokens=10, do_sample=True, temperature=1.5, seed=4).tokens
    assert a == b and a != c


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifest_states_the_static_contract(packages, variant):
    m = open_package(packages[variant]).manifest
    assert m.family == "seq2seq" and m.task == "text2text-generation"
    assert m.preprocessing["text"]["max_source_len"] == 48
    assert m.preprocessing["text"]["max_source_positions"] == (64 if variant == "marian" else None)
    assert m.generation["cache"]["max_cache_len"] == 32 and m.generation["unsupported"] == {}
    assert m.generation["config"]["decoder_start_token_id"] == m.preprocessing["text"]["pad_token_id"]
    encoder = m.components["encoder"].find("onnx", "fp32-static")
    assert {t.name: list(t.shape) for t in encoder.signatures["default"].inputs} == \
        {"input_ids": [1, 48], "attention_mask": [1, 48]}
    decoder = m.components["decoder"].find("tflite", "fp32-static")
    assert set(decoder.signatures) == {"decode", "prefill_4"}
    dynamic = m.components["decoder"].find("onnx", "fp32")
    inputs = {t.name: t for t in dynamic.signatures["default"].inputs}
    assert inputs["cross_keys_0"].shape[3] == "encoder_sequence"  # keys are transposed: [B, H, D, S]
    assert inputs["cross_values_0"].shape[2] == "encoder_sequence"
    assert all(a.parity["passed"] for c in m.components.values() for a in c.artifacts)


def test_generation_settings_keep_what_the_runtime_can_honour():
    from types import SimpleNamespace

    from mmedge.errors import ExportError
    from mmedge.exporter.families.seq2seq import generation_settings

    config = SimpleNamespace(decoder_start_token_id=58100, eos_token_id=0, pad_token_id=58100)
    gen, unsupported = generation_settings({"bad_words_ids": [[58100], [5, 6]], "forced_eos_token_id": 0,
                                            "forced_decoder_ids": [[1, 9]], "num_beams": 4}, config)
    assert gen["suppress_tokens"] == [58100] and gen["decoder_start_token_id"] == 58100 and gen["num_beams"] == 4
    assert gen["forced_eos_token_id"] == 0  # applied by the runtime pipeline (ForcedTokens)
    assert unsupported == {"bad_words_ids": [[5, 6]], "forced_decoder_ids": [[1, 9]]}
    assert "forced_decoder_ids" not in gen and "bad_words_ids" not in gen
    assert GenerationConfig.from_dict(gen).suppress_tokens == [58100]
    with pytest.raises(ExportError, match="decoder_start_token_id"):
        generation_settings({}, SimpleNamespace())


def test_cli_prompt(packages, capsys):
    from mmedge.cli.main import main

    assert main(["run", str(packages["t5"]), "--device", "x86-cpu", "--prompt", TEXT, "--max-new-tokens", "4",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "text2text-generation" and 0 < len(out["tokens"]) <= 4


def test_profiler_workload(packages, profile_static):
    result = profile_static(packages["t5"])
    assert result["generation"]["new_tokens"] >= 1 and result["generation"]["tokens_per_s"] > 0
    assert result["accuracy"]["metric"] == "token_agreement" and result["accuracy"]["value"] == 1.0
