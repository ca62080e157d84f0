"""Structured pruning (quantize.prune): the spec parser; pruned GPT-2, Llama and Qwen2 (grouped-query attention),
Whisper, CLIP and ViT directories reload in transformers with exactly the expected parameter counts and give the same
outputs as the original model with the removed units' output columns zeroed (so the right units went and the
surgery kept the rest intact); activation importance finds dead units that magnitude misses; a pruned ViT exports
to every format and runs on every engine with transformers' logits; bad requests raise typed errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmedge import runtime
from mmedge.errors import InputError, UsageError
from mmedge.exporter.families import write_tiny_model
from mmedge.quantize.prune import PruneSpec, parse_prune_spec, prune_model_dir
from mmedge.quantize.prune.layouts import LAYOUTS, FfnStack, rows

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO runs bf16 by default on AVX512-BF16 CPUs


def load(directory: Path) -> torch.nn.Module:
    import transformers

    config = json.loads((directory / "config.json").read_text())
    return getattr(transformers, config["architectures"][0]).from_pretrained(directory).eval()


def write_tiny_whisper(out: Path) -> Path:
    """A tiny random-weight Whisper (no tokenizer: pruning needs only the model)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=48, num_mel_bins=16,
                           max_source_positions=12, max_target_positions=16, decoder_start_token_id=1,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        WhisperForConditionalGeneration(config).eval().save_pretrained(out)
    return out


def write_tiny_qwen2(out: Path) -> Path:
    """A tiny random-weight Qwen2 (biased q/k/v, no head_dim config field: the pruned config adds one)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).eval().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prune-src")
    dirs = {name: write_tiny_model(name, root / name) for name in ("gpt2", "llama", "clip", "vit")}
    dirs["whisper"] = write_tiny_whisper(root / "whisper")
    dirs["qwen2"] = write_tiny_qwen2(root / "qwen2")
    return dirs


def sample_inputs(name: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    cfg = model.config
    if name in ("gpt2", "llama", "qwen2"):
        return {"input_ids": torch.randint(0, cfg.vocab_size, (2, 7), generator=g)}
    if name == "whisper":
        return {"input_features": torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g),
                "decoder_input_ids": torch.tensor([[1, 5, 9, 3]])}
    if name == "clip":
        return {"input_ids": torch.randint(0, cfg.text_config.vocab_size, (2, 6), generator=g),
                "pixel_values": torch.randn(2, 3, 32, 32, generator=g)}
    return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g)}


def outputs(name: str, model: torch.nn.Module) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(**sample_inputs(name, model))
    return [out.logits_per_image, out.text_embeds, out.image_embeds] if name == "clip" else [out.logits]


def masked(src: Path, report) -> torch.nn.Module:
    """The original model with the removed units' columns of their output projection zeroed: computes what the
    pruned model must compute, whatever the activation function (the units' outputs are simply not used)."""
    model = load(src)
    layout = LAYOUTS[report.model_type]
    stacks = {(s.name, "ffn" if isinstance(s, FfnStack) else "heads"): s for s in (*layout.ffn, *layout.heads)}
    head_dim = None
    if layout.heads:
        cfg = model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    with torch.no_grad():
        for change in report.layers:
            stack = stacks[(change.stack, change.kind)]
            sink = model.get_submodule(change.layer).get_submodule(stack.out if change.kind == "ffn" else stack.o)
            width = 1 if change.kind == "ffn" else head_dim
            for unit in change.removed:
                rows(sink)[:, unit * width:(unit + 1) * width] = 0
    return model


# ------------------------------------------------------------------------------------------------------ spec


def test_parse_prune_spec():
    spec = parse_prune_spec(" ffn=0.3, heads=0.25,channels=0.2 ")
    assert spec == PruneSpec(ffn=0.3, heads=0.25, channels=0.2)
    assert parse_prune_spec(str(spec)) == spec and parse_prune_spec("heads=0") == PruneSpec()
    assert PruneSpec().empty and not spec.empty


@pytest.mark.parametrize("text", ["", "ffn", "ffn=", "=0.3", "ffn=1", "ffn=1.5", "heads=-0.1", "ffn=nan",
                                  "ffn=abc", "layers=0.3", "ffn=0.2,ffn=0.3", "ffn=0.2;heads=0.1"])
def test_bad_prune_specs_name_the_form(text):
    with pytest.raises(UsageError, match="KEY=FRACTION"):
        parse_prune_spec(text)
    with pytest.raises(UsageError, match=r"outside \[0, 1\)"):
        PruneSpec(heads=1.0)


# ------------------------------------------------------------------------------------------------ pruning


#: name -> (spec, {config field: size after}, parameters removed per layer of each stack)
CASES = {
    # GPT-2, width 32, 4 heads of 8, FFN 128: 38 neurons (fc1 row + bias, fc2 column: 65 each); 2 heads
    # (q/k/v rows + biases: 3 * 8 * 33, c_proj rows: 8 * 32 = 1048 each).
    "gpt2": ("ffn=0.3,heads=0.5", {"n_inner": 90}, 2 * (38 * 65 + 2 * 1048)),
    # Llama, width 32, 4 query heads of 8 in 2 KV groups, gated FFN 64: 19 neurons (3 * 32 each); one query head
    # per group (q rows + o columns: 2 * 8 * 32 = 512 each), k/v untouched.
    "llama": ("ffn=0.3,heads=0.5", {"intermediate_size": 45, "num_attention_heads": 2, "num_key_value_heads": 2,
                                    "head_dim": 8}, 2 * (19 * 96 + 2 * 512)),
    # Qwen2: as Llama, but each removed query head also takes its 8 q biases (8 * 33 + 8 * 32 = 520).
    "qwen2": ("ffn=0.3,heads=0.5", {"intermediate_size": 45, "num_attention_heads": 2, "num_key_value_heads": 2,
                                    "head_dim": 8}, 2 * (19 * 96 + 2 * 520)),
    # Whisper: encoder FFN 64 -> 45, decoder FFN 48 -> 34 (fc1 row + bias + fc2 column: 65 each).
    "whisper": ("ffn=0.3", {"encoder_ffn_dim": 45, "decoder_ffn_dim": 34}, 2 * 19 * 65 + 2 * 14 * 65),
    # CLIP: both towers' FFN 64 -> 45.
    "clip": ("ffn=0.3", {"text_config.intermediate_size": 45, "vision_config.intermediate_size": 45},
             4 * 19 * 65),
    # ViT: FFN 64 -> 45, one of 2 heads of 16 (3 * 16 * 33 + 16 * 32 = 2096).
    "vit": ("ffn=0.3,heads=0.5", {"intermediate_size": 45}, 2 * (19 * 65 + 2096)),
}


def field(config, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("name", sorted(CASES))
def test_pruned_model_reloads_smaller_and_equals_the_masked_original(tiny, tmp_path, name):
    spec, fields, removed = CASES[name]
    messages: list[str] = []
    report = prune_model_dir(tiny[name], tmp_path / "out", parse_prune_spec(spec), log=messages.append)
    pruned = load(tmp_path / "out")
    original = load(tiny[name])
    assert report.params_before == original.num_parameters()
    assert report.params_after == pruned.num_parameters() == report.params_before - removed
    assert report.bytes_after == 4 * report.params_after and report.bytes_before == 4 * report.params_before
    for dotted, value in fields.items():
        assert field(pruned.config, dotted) == value
    assert all(len(c.removed) == c.before - c.after > 0 for c in report.layers)
    assert json.loads((tmp_path / "out" / "prune_report.json").read_text()) == json.loads(
        json.dumps(report.to_dict()))
    assert messages and "saving" in messages[-1]
    for got, want in zip(outputs(name, pruned), outputs(name, masked(tiny[name], report))):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    if name == "gpt2":  # transformers' route: the pruned heads are recorded for reload
        assert {int(k): sorted(v) for k, v in pruned.config.pruned_heads.items()} == {
            int(c.layer.rsplit(".", 1)[1]): c.removed for c in report.layers if c.kind == "heads"}
    if name in ("llama", "qwen2"):  # grouped-query attention: one query head removed inside each key/value group
        for change in (c for c in report.layers if c.kind == "heads"):
            assert [h // 2 for h in change.removed] == [0, 1]


def test_tokenizer_and_processor_files_travel(tiny, tmp_path):
    prune_model_dir(tiny["clip"], tmp_path / "out", PruneSpec(ffn=0.5))
    source = {p.name for p in tiny["clip"].iterdir()}
    assert source <= {p.name for p in (tmp_path / "out").iterdir()}
    for name in ("tokenizer.json", "preprocessor_config.json", "vocab.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tiny["clip"] / name).read_bytes()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_fraction_zero_keeps_the_model(tiny, tmp_path, name):
    report = prune_model_dir(tiny[name], tmp_path / "out", PruneSpec(ffn=0.001, heads=0.001))
    assert report.params_after == report.params_before and all(not c.removed for c in report.layers)
    for got, want in zip(outputs(name, load(tmp_path / "out")), outputs(name, load(tiny[name]))):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_activation_importance_finds_dead_units_that_magnitude_keeps(tiny, tmp_path):
    """Neurons 0-9 of every FFN never fire (bias -100 before GELU) but have the biggest weights; head 1's values
    are zero (its context is 0) but its q/k weights are the biggest: activation removes exactly those units,
    magnitude none of them."""
    from transformers import AutoTokenizer

    from mmedge.exporter.families.tiny_corpus import CORPUS

    model = load(tiny["gpt2"])
    dead, width = list(range(10)), model.config.n_embd
    with torch.no_grad():
        for block in model.transformer.h:
            block.mlp.c_fc.weight[:, dead] *= 20
            block.mlp.c_fc.bias[dead] = -100.0
            block.attn.c_attn.weight[:, 8:16] *= 20  # head 1's query columns
            block.attn.c_attn.weight[:, width + 8:width + 16] *= 20  # its keys
            block.attn.c_attn.weight[:, 2 * width + 8:2 * width + 16] = 0  # its values
            block.attn.c_attn.bias[2 * width + 8:2 * width + 16] = 0
    src = tmp_path / "src"
    model.save_pretrained(src)
    tokenizer = AutoTokenizer.from_pretrained(tiny["gpt2"])
    tokenizer.save_pretrained(src)
    calibration = [dict(tokenizer(line, return_tensors="np")) for line in CORPUS.strip().splitlines()[:8]]
    spec = PruneSpec(ffn=10 / 128, heads=0.25)
    by_activation = prune_model_dir(src, tmp_path / "act", spec, importance="activation", calibration=calibration)
    by_magnitude = prune_model_dir(src, tmp_path / "mag", spec)
    assert by_activation.importance == "activation"
    for change in by_activation.layers:
        assert change.removed == (dead if change.kind == "ffn" else [1])
    for change in by_magnitude.layers:
        assert not set(change.removed) & set(dead if change.kind == "ffn" else [1])


# ------------------------------------------------------------------------------------------ export and run


@pytest.fixture(scope="module")
def pruned_vit(tiny, tmp_path_factory) -> tuple[Path, Path]:
    from mmedge.exporter.export import export

    root = tmp_path_factory.mktemp("pruned-vit")
    prune_model_dir(tiny["vit"], root / "model", parse_prune_spec("ffn=0.3,heads=0.5"))
    return root / "model", export(root / "model", root / "pkg", formats=["onnx", "openvino", "tflite"], static=True)


@pytest.mark.parametrize("engine, variant", [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"),
                                             ("openvino", "fp32-static"), ("litert", "fp32-static")])
def test_pruned_vit_exports_and_runs_everywhere(pruned_vit, photos, engine, variant):
    from PIL import Image
    from transformers import ViTImageProcessor

    model_dir, package = pruned_vit
    paths = sorted(photos.iterdir())[:2]
    pipe = runtime.load(package, engine=engine, variant=variant, device="x86-cpu",
                        options=F32 if engine == "openvino" else None)
    assert (pipe.ran.engine, pipe.ran.variant) == (engine, variant)
    processor = ViTImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        expected = load(model_dir)(**processor([Image.open(p).convert("RGB") for p in paths],
                                                return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(pipe.logits(paths, batch_size=1), expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_pruned_llama_exports_and_generates(tiny, tmp_path):
    """Grouped-query head pruning through the config route: the exported KV cache has the new head count."""
    from mmedge.exporter.export import export

    prune_model_dir(tiny["llama"], tmp_path / "model", parse_prune_spec("ffn=0.3,heads=0.5"))
    package = export(tmp_path / "model", tmp_path / "pkg", formats=["onnx"])
    pipe = runtime.load(package, engine="onnxruntime")
    assert pipe.package.manifest.generation["cache"]["kv_heads"] == 2
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tmp_path / "model")("the cat sat").input_ids
    with torch.no_grad():
        expected = load(tmp_path / "model").generate(torch.tensor([ids]), do_sample=False, max_new_tokens=8,
                                                     min_new_tokens=8, pad_token_id=0)[0, len(ids):].tolist()
    assert pipe.generate("the cat sat", max_new_tokens=8, min_new_tokens=8).tokens == expected


def test_head_pruned_gpt2_exports(tiny, tmp_path):
    """GPT-2's pruned heads live in config.pruned_heads: the exporter's KV cache geometry subtracts them."""
    from mmedge.exporter.export import export

    prune_model_dir(tiny["gpt2"], tmp_path / "model", parse_prune_spec("heads=0.5"))
    package = export(tmp_path / "model", tmp_path / "pkg", formats=["onnx"])
    assert runtime.load(package, engine="onnxruntime").package.manifest.generation["cache"]["kv_heads"] == 2

# -------------------------------------------------------------------------------------------------- errors


def test_bad_requests_raise_typed_errors(tiny, tmp_path):
    with pytest.raises(UsageError, match="Head pruning is supported for: gpt2, llama"):
        prune_model_dir(tiny["whisper"], tmp_path / "a", PruneSpec(heads=0.25))
    with pytest.raises(UsageError, match="CLIP computes head_dim"):
        prune_model_dir(tiny["clip"], tmp_path / "a", PruneSpec(heads=0.25))
    with pytest.raises(UsageError, match="channel pruning"):
        prune_model_dir(tiny["vit"], tmp_path / "a", PruneSpec(channels=0.2))
    with pytest.raises(UsageError, match="unknown importance"):
        prune_model_dir(tiny["vit"], tmp_path / "a", PruneSpec(ffn=0.2), importance="taylor")
    with pytest.raises(UsageError, match="needs calibration"):
        prune_model_dir(tiny["vit"], tmp_path / "a", PruneSpec(ffn=0.2), importance="activation")
    with pytest.raises(UsageError, match="must be a PruneSpec"):
        prune_model_dir(tiny["vit"], tmp_path / "a", "ffn=0.2")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="does not run through"):
        prune_model_dir(tiny["vit"], tmp_path / "a", PruneSpec(ffn=0.2), importance="activation",
                        calibration=[{"input_ids": np.zeros((1, 4), np.int64)}])
    with pytest.raises(InputError, match="does not run through CLIPModel: You have to specify pixel_values"):
        prune_model_dir(tiny["clip"], tmp_path / "a", PruneSpec(ffn=0.2), importance="activation",
                        calibration=[{"input_ids": np.ones((1, 4), np.int64)}])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty directory"):
        prune_model_dir(tiny["vit"], tmp_path / "taken", PruneSpec(ffn=0.2))
    with pytest.raises(UsageError, match="is the source directory"):
        prune_model_dir(tiny["vit"], tiny["vit"], PruneSpec())
    wav2vec2 = write_tiny_model("wav2vec2", tmp_path / "wav2vec2")
    with pytest.raises(UsageError, match="does not know model_type 'wav2vec2'; supported: clip, gpt2"):
        prune_model_dir(wav2vec2, tmp_path / "a", PruneSpec(ffn=0.2))
    assert not (tmp_path / "a").exists() and (tmp_path / "taken" / "notes.txt").read_text() == "mine"
