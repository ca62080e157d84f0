"""TFLite backend (``quantize.backends.tflite``, ai-edge-quantizer recipes) on tiny exported packages.

The GPT-2 static decoder is one file with three signatures (``decode``, ``prefill_16``, ``prefill_64``) sharing
their weight buffers; it is fed like the runtime feeds it (a padded prompt into an empty cache, then single-token
steps on the cache it filled). The ViT classifier (a CONV_2D patch embedding) gets real photos (slow: one more
export). A small
weight-dominated model converted with litert-torch measures file sizes (the tiny packages are mostly graph).
Every mode: the written file holds int8/int4/fp16 weight tensors in every subgraph, runs every signature in the
ai-edge-litert interpreter, stays close to fp32 (relative L2 error over float outputs, bounds measured below), and
keeps excluded layers float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import InputError, UsageError
from mmedge.quantize.backends import tflite as backend
from mmedge.quantize.scheme import Scheme
from mmedge.runtime.package import open_package
from mmedge.runtime.preprocess.image import ClipImagePreprocessor

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter
PHOTOS = sorted((Path(__file__).parents[1] / "examples" / "data" / "photos").glob("*.jpg"))
Call = tuple[str, dict]  # (signature, feeds)


def _tflite(pkg: Path, component: str):
    package = open_package(pkg)
    art = package.manifest.components[component].find("tflite", "fp32-static")
    return package.file_path(art.file), art, package.manifest


def _interpreter(path: Path):
    return Interpreter(model_path=str(path), num_threads=2)


def _decoder_calls(path: Path, art) -> list[Call]:
    """What the static decoder gets while generating: prompts of 10 and 40 tokens padded into ``prefill_16`` and
    ``prefill_64`` (empty cache), then two ``decode`` steps each on the cache the prompt filled (fp32 greedy)."""
    sig = art.signatures["decode"]
    past = next(s for s in sig.inputs if s.name == "past_keys").shape
    vocab = int(next(o for o in sig.outputs if o.name == "logits").shape[-1])
    capacity = int(past[3])
    interp, rng, calls = _interpreter(path), np.random.default_rng(0), []
    for bucket, real in ((16, 10), (64, 40)):
        keys, values = np.zeros(past, np.float32), np.zeros(past, np.float32)
        tokens = rng.integers(0, vocab, (1, real))
        length, key, size = 0, f"prefill_{bucket}", bucket
        for _ in range(3):
            ids = np.zeros((1, size), np.int32)
            ids[:, :real] = tokens
            mask = np.zeros((1, capacity + size), np.int32)
            mask[:, :length] = 1
            mask[:, capacity:capacity + real] = 1
            feed = {"input_ids": ids, "position_ids": np.arange(length, length + size, dtype=np.int32)[None],
                    "attention_mask": mask, "past_keys": keys.copy(), "past_values": values.copy()}
            calls.append((key, feed))
            out = interp.get_signature_runner(key)(**feed)
            keys[:, :, :, length:length + real] = out["new_keys"][:, :, :, :real]
            values[:, :, :, length:length + real] = out["new_values"][:, :, :, :real]
            tokens = out["logits"][:, real - 1:real].argmax(-1)
            length, key, size, real = length + real, "decode", 1, 1
    return calls


def _photo_calls(art, manifest) -> list[Call]:
    pixels = ClipImagePreprocessor.from_config(manifest.preprocessing["image"])([str(p) for p in PHOTOS])
    name = art.signatures["default"].inputs[0].bound_name
    return [("default", {name: pixels[i:i + 1]}) for i in range(len(pixels))]


def _run(path: Path, calls: list[Call]) -> list[dict]:
    interp = _interpreter(path)
    return [interp.get_signature_runner(key)(**feed) for key, feed in calls]


def _error(got: list[dict], want: list[dict]) -> float:
    """Worst relative L2 error over calls and float outputs."""
    return max(float(np.linalg.norm(g[k] - w[k]) / np.linalg.norm(w[k])) for g, w in zip(got, want) for k in w)


def _tensor_types(path: Path) -> dict[str, type]:
    """Tensor name -> numpy dtype over every subgraph (signature), as the interpreter reports them (names are unique
    across subgraphs)."""
    interp = _interpreter(path)
    return {t["name"]: t["dtype"] for i in range(len(interp.get_signature_list()))
            for t in interp.get_tensor_details(subgraph_index=i)}


def _sharing(path: Path, name: str) -> list[str]:
    """Names of every tensor, in any subgraph, stored in the same buffer as tensor ``name`` (read from the schema)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    model = fb.read_model(str(path))
    tensors = [t for sg in model.subgraphs for t in sg.tensors]
    buffer = next(t.buffer for t in tensors if fb.get_tensor_name(t) == name)
    return [fb.get_tensor_name(t) for t in tensors if t.buffer == buffer]


def _ops(path: Path, name: str) -> int:
    return sum(op["op_name"] == name for op in _interpreter(path)._get_ops_details())


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, lm_packages):
    tmp = tmp_path_factory.mktemp("tfl-gpt2")
    path, art, _ = _tflite(lm_packages["gpt2"], "decoder")
    calls = _decoder_calls(path, art)
    return path, calls, _run(path, calls), tmp


@pytest.fixture(scope="module")
def vit(tmp_path_factory, vit_package):
    tmp = tmp_path_factory.mktemp("tfl-vit")
    path, art, manifest = _tflite(vit_package, "classifier")
    calls = _photo_calls(art, manifest)
    return path, calls, _run(path, calls), tmp


@pytest.fixture(scope="module")
def weight_heavy(tmp_path_factory) -> Path:
    """An embedding and two Linear layers (0.4 M weights, 1.6 MB) with a few ops around them."""
    import litert_torch
    import torch

    class Mlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.up, self.down = torch.nn.Embedding(512, 256), torch.nn.Linear(256, 512), torch.nn.Linear(512, 256)

        def forward(self, ids):
            return self.down(torch.relu(self.up(self.embed(ids))))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tfl-mlp") / "mlp.tflite"
    litert_torch.convert(Mlp().eval(), (torch.zeros((1, 8), dtype=torch.int32),)).export(str(path))
    return path


def test_layers_are_weight_buffers_shared_by_signatures(gpt2):
    path, _, _, _ = gpt2
    names = backend.layers(path, Scheme("tflite", "dynamic-int8"))
    # 8 FULLY_CONNECTED of two blocks + the two embedding tables (the token table is also the LM head): each
    # appears once although all three signatures read it
    assert len(names) == len(set(names)) == 10
    assert backend.layers(path, Scheme("tflite", "int4-weights")) == names
    assert backend.layers(path, Scheme("tflite", "fp16")) == names


def test_dynamic_int8_keeps_the_embedding_decoder_working(gpt2):
    path, calls, want, tmp = gpt2
    dst = tmp / "dynamic.tflite"
    record = backend.quantize_graph(path, dst, Scheme("tflite", "dynamic-int8"))
    assert record["signatures"] == ["decode", "prefill_16", "prefill_64"]
    assert record["layer_weights"] == {"int8": 10} and record["tool"].startswith("ai-edge-quantizer ")
    token_table = backend.layers(path, Scheme("tflite", "dynamic-int8"))[0]  # the EMBEDDING_LOOKUP table, read first
    # an int8 table in every signature, looked up by LiteRT's hybrid kernel: no PT2E-style embedding breakage
    assert {_tensor_types(dst)[n] for n in _sharing(path, token_table)} == {np.int8}
    assert _ops(dst, "DEQUANTIZE") == 0  # dynamic range: int8 weights go straight into the kernels
    assert _error(_run(dst, calls), want) < 0.03  # measured 0.010 over decode and both prefill buckets


@pytest.mark.parametrize("mode, kind, bound", [("int8-weights", "int8", 0.03), ("int4-weights", "int4", 0.3)])
def test_weight_only(gpt2, mode, kind, bound):
    path, calls, want, tmp = gpt2
    dst = tmp / f"{mode}.tflite"
    record = backend.quantize_graph(path, dst, Scheme("tflite", mode))
    assert record["layer_weights"] == {kind: 10} and "float32" in record["activations"]
    # the interpreter reports int4 tensors by their int8 storage type; the record reads the schema type
    names = backend.layers(path, Scheme("tflite", mode))
    assert {_tensor_types(dst)[n] for n in names} == {np.int8}
    assert _ops(dst, "DEQUANTIZE") == 10  # one per weight buffer in the first subgraph
    assert _error(_run(dst, calls), want) < bound  # measured 0.009 (int8), 0.17 (int4 per channel, 32-wide rows)


def test_int4_blockwise_falls_back_per_channel_where_blocks_do_not_fit(gpt2):
    path, calls, want, tmp = gpt2
    dst = tmp / "int4-b64.tflite"
    record = backend.quantize_graph(path, dst, Scheme("tflite", "int4-weights", {"block_size": 64}))
    names = backend.layers(path, Scheme("tflite", "int4-weights"))
    wide = [n for n in names if "mlp" in n and "c_proj" in n]  # the only layers with 128 inputs
    assert len(wide) == 2 and record["per_channel_fallback"] == [n for n in names if n not in wide]
    assert record["layer_weights"] == {"int4": 10} and "blocks of 64" in record["weights"]
    assert _error(_run(dst, calls), want) < 0.3  # measured 0.17


def test_fp16(gpt2):
    path, calls, want, tmp = gpt2
    dst = tmp / "fp16.tflite"
    record = backend.quantize_graph(path, dst, Scheme("tflite", "fp16"))
    assert record["layer_weights"] == {"float16": 10}
    assert {_tensor_types(dst)[n] for n in backend.layers(path, Scheme("tflite", "fp16"))} == {np.float16}
    assert _error(_run(dst, calls), want) < 2e-3  # measured 4e-4


@pytest.mark.slow
def test_vit_conv_on_photos(vit):
    path, calls, want, tmp = vit
    conv = next(n for n in backend.layers(path, Scheme("tflite", "fp16")) if "Conv2d" in n)
    for mode, opts, bound in (("fp16", {}, 2e-3), ("dynamic-int8", {}, 0.03), ("int4-weights", {"block_size": 32}, 0.4)):
        dst = tmp / f"{mode}.tflite"
        record = backend.quantize_graph(path, dst, Scheme("tflite", mode, opts))
        assert record["quantized_layers"] == record["candidate_layers"] == 14  # the conv included
        assert record.get("per_channel_fallback", []) == []  # the conv is per channel by design, not a fallback
        assert _tensor_types(dst)[conv] == (np.float16 if mode == "fp16" else np.int8)
        got = _run(dst, calls)
        assert _error(got, want) < bound  # measured 3e-4, 0.011, 0.25 (int4: the conv per channel)
        if mode != "int4-weights":  # int4 on random 32-wide weights flips one of the five tiny-model labels
            assert [g["logits"].argmax() for g in got] == [w["logits"].argmax() for w in want]


def test_sizes_on_a_weight_dominated_graph(weight_heavy, tmp_path):
    ratios = {}
    for mode, opts in (("dynamic-int8", {}), ("int8-weights", {}), ("int4-weights", {}), ("fp16", {})):
        dst = tmp_path / f"{mode}.tflite"
        record = backend.quantize_graph(weight_heavy, dst, Scheme("tflite", mode, opts))
        assert record["quantized_layers"] == 3
        ratios[mode] = dst.stat().st_size / weight_heavy.stat().st_size
    assert ratios["dynamic-int8"] <= 0.3 and ratios["int8-weights"] <= 0.3  # measured 0.26 and 0.26
    assert ratios["int4-weights"] < 0.6 * ratios["int8-weights"]  # measured 0.14
    assert 0.45 < ratios["fp16"] < 0.55  # measured 0.50


def test_exclude_keeps_layers_float_in_every_signature(gpt2):
    path, calls, want, tmp = gpt2
    names = backend.layers(path, Scheme("tflite", "dynamic-int8"))
    dst = tmp / "exclude.tflite"
    record = backend.quantize_graph(path, dst, Scheme("tflite", "dynamic-int8"),
                                    exclude=[names[0], r"Block_1/.*c_fc", "no-such-layer"])
    fc = [n for n in names if "Block_1/" in n and "c_fc" in n]
    assert record["excluded"] == [names[0], *fc] and len(fc) == 1
    assert record["exclude_unmatched"] == ["no-such-layer"]
    assert record["layer_weights"] == {"float32": 2, "int8": 8}
    types = _tensor_types(dst)
    # the excluded buffers stay float32 in all three signatures (the token table is also the LM head's weight)
    assert {types[n] for layer in (names[0], fc[0]) for n in _sharing(path, layer)} == {np.float32}
    assert {types[n] for n in _sharing(path, names[1])} == {np.int8}
    assert _error(_run(dst, calls), want) < 0.03


def test_bad_input(gpt2, tmp_path):
    path, _, _, tmp = gpt2
    dst = tmp_path / "out.tflite"
    with pytest.raises(UsageError, match="tflite modes"):
        backend.quantize_graph(path, dst, Scheme("tflite", "static-int8"))
    with pytest.raises(UsageError, match="valid: block_size"):
        backend.quantize_graph(path, dst, Scheme("tflite", "int4-weights", {"group_size": 32}))
    with pytest.raises(UsageError, match="block_size"):
        backend.quantize_graph(path, dst, Scheme("tflite", "int4-weights", {"block_size": 48}))
    with pytest.raises(UsageError, match=".tflite path"):
        backend.quantize_graph(path, tmp_path / "out.bin", Scheme("tflite", "fp16"))
    with pytest.raises(UsageError, match="not a TFLite file"):
        backend.layers(tmp_path / "missing.tflite", Scheme("tflite", "fp16"))
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(InputError, match="FlatBuffer"):
        backend.layers(garbage, Scheme("tflite", "fp16"))
    quantized = tmp / "dynamic-again.tflite"
    backend.quantize_graph(path, quantized, Scheme("tflite", "dynamic-int8"))
    with pytest.raises(UsageError, match="already quantized"):
        backend.quantize_graph(quantized, dst, Scheme("tflite", "int8-weights"))
    with pytest.raises(UsageError, match="regular expression"):
        backend.quantize_graph(path, dst, Scheme("tflite", "fp16"), exclude=["[oops"])
