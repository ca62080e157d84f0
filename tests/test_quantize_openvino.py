"""OpenVINO backend (``quantize.backends.openvino``) on tiny exported packages.

A GPT-2 decoder (tied token embedding and LM head, attention as MatMuls of two activations) is calibrated on the
feeds of its own fp32 greedy generation (a prompt, then single-token steps with the cache it returned); a ViT
classifier (a conv patch embedding, attention as ScaledDotProductAttention) on real photos. For every mode the
written IR really holds u8/i8/u4/i4 or f16 weight constants or FakeQuantize ops, compiles on the CPU plugin with
the f32 hint, stays close to fp32 (relative L2 error over every float output and feed, bounds measured below),
shrinks, and keeps excluded layers float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import InputError, UsageError
from mmedge.quantize.backends import openvino as backend
from mmedge.quantize.scheme import Scheme
from mmedge.runtime.package import open_package
from mmedge.runtime.preprocess.image import ClipImagePreprocessor

ov = pytest.importorskip("openvino")
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the CPU plugin would pick bf16 on AVX512-BF16/AMX hosts
PHOTOS = sorted((Path(__file__).parents[1] / "examples" / "data" / "photos").glob("*.jpg"))
DECOMPRESSION = ("Convert", "Reshape", "Transpose", "Unsqueeze", "Subtract", "Multiply", "FakeQuantize")


def _graph(pkg: Path, component: str):
    package = open_package(pkg)
    art = package.manifest.components[component].find("openvino", "fp32")
    sig = next(iter(art.signatures.values()))
    return package.file_path(sig.file), sig, package.manifest


def _run(xml: Path, feeds: list[dict]) -> list[dict]:
    compiled = ov.Core().compile_model(str(xml), "CPU", F32)
    return [{out.any_name: value for out, value in compiled(feed).items()} for feed in feeds]


def _gpt2_feeds(xml: Path, sig) -> list[dict]:
    """Feeds of fp32 greedy generation: per prompt the 6-token prefill (empty cache), then 2 single-token steps."""
    names = {spec.name: spec.bound_name for spec in sig.inputs}
    vocab = int(next(o for o in sig.outputs if o.name == "logits").shape[-1])
    heads = [spec for spec in sig.inputs if spec.name == "past_keys"][0].shape
    compiled = ov.Core().compile_model(str(xml), "CPU", F32)
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(3):
        tokens = rng.integers(0, vocab, (1, 6))
        past = np.zeros((heads[0], 1, heads[2], 0, heads[4]), np.float32)
        keys, values, length = past, past, 0
        for _ in range(3):
            t = tokens.shape[1]
            feed = {names["input_ids"]: tokens, names["position_ids"]: np.arange(length, length + t)[None],
                    names["attention_mask"]: np.ones((1, length + t), np.int64),
                    names["past_keys"]: keys, names["past_values"]: values}
            feeds.append(feed)
            out = {o.any_name: v for o, v in compiled(feed).items()}
            keys, values = np.concatenate([keys, out["new_keys"]], 3), np.concatenate([values, out["new_values"]], 3)
            length += t
            tokens = out["logits"][:, -1:].argmax(-1)
    return feeds


def _photo_feeds(sig, manifest) -> list[dict]:
    pixels = ClipImagePreprocessor.from_config(manifest.preprocessing["image"])([str(p) for p in PHOTOS])
    return [{sig.inputs[0].bound_name: pixels[i:i + 1]} for i in range(len(pixels))]


def _error(got: list[dict], want: list[dict]) -> float:
    """Worst relative L2 error over feeds and float outputs."""
    return max(float(np.linalg.norm(g[k] - w[k]) / np.linalg.norm(w[k]))
               for g, w in zip(got, want) for k in w if w[k].dtype.kind == "f")


def _weight_type(xml: Path, layer: str) -> str:
    """Element type of the constant behind the weight input of node ``layer`` (through decompression ops)."""
    op = next(o for o in ov.Core().read_model(str(xml)).get_ops() if o.get_friendly_name() == layer)
    node = op.input_value(0 if op.get_type_name() == "Gather" else 1).get_node()
    while node.get_type_name() in DECOMPRESSION:
        node = node.input_value(0).get_node()
    return node.get_element_type().get_type_name()


def _bin_ratio(dst: Path, src: Path) -> float:
    return dst.with_suffix(".bin").stat().st_size / src.with_suffix(".bin").stat().st_size


def _tiny(tmp: Path, pkg: Path, component: str, feeds_of) -> tuple[Path, list[dict], list[dict], Path]:
    """(fp32 IR of a tiny package's ``component``, its feeds, the fp32 outputs on them, a scratch folder)."""
    xml, sig, manifest = _graph(pkg, component)
    feeds = feeds_of(xml, sig, manifest)
    return xml, feeds, _run(xml, feeds), tmp


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, lm_packages):
    return _tiny(tmp_path_factory.mktemp("ov-gpt2"), lm_packages["gpt2"], "decoder", lambda xml, sig, _: _gpt2_feeds(xml, sig))


@pytest.fixture(scope="module")
def vit(tmp_path_factory, vit_package):
    return _tiny(tmp_path_factory.mktemp("ov-vit"), vit_package, "classifier", lambda _, sig, man: _photo_feeds(sig, man))


def test_layers_per_mode(gpt2):
    xml, _, _, _ = gpt2
    weights = backend.layers(xml, Scheme("openvino", "int8-weights"))
    static = backend.layers(xml, Scheme("openvino", "static-int8"))
    model = ov.Core().read_model(str(xml))
    kinds = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
    gathers = [n for n in weights if kinds[n] == "Gather"]
    assert len(gathers) == 2  # token and position embeddings
    assert "logits" in weights and "logits" in static  # the LM head
    attention = [n for n in static if n not in weights]
    assert len(attention) == 4 and all(kinds[n] == "MatMul" for n in attention)  # Q·Kᵀ and P·V of two layers
    assert not set(gathers) & set(static)
    assert backend.layers(xml, Scheme("openvino", "fp16")) == []  # all-or-nothing in OpenVINO


@pytest.mark.parametrize("symmetric, kind", [(False, "u8"), (True, "i8")])
def test_int8_weights(gpt2, symmetric, kind):
    xml, feeds, want, tmp = gpt2
    dst = tmp / f"int8-{kind}" / "model.xml"
    record = backend.quantize_graph(xml, dst, Scheme("openvino", "int8-weights", {"symmetric": symmetric}))
    assert record["layer_weights"] == {kind: record["candidate_layers"]} and record["quantized_layers"] == 11
    assert record["tool"].startswith("nncf ") and record["fake_quantize"] == 0
    assert _error(_run(dst, feeds), want) < 0.03  # measured 0.012 (asym), 0.013 (sym)
    assert _bin_ratio(dst, xml) <= 0.3  # measured 0.27: 32-wide rows carry a scale (and zero point) each


def test_int4_weights(gpt2):
    xml, feeds, want, tmp = gpt2
    int8 = tmp / "int8-ref" / "model.xml"
    backend.quantize_graph(xml, int8, Scheme("openvino", "int8-weights"))
    dst = tmp / "int4" / "model.xml"
    record = backend.quantize_graph(xml, dst, Scheme("openvino", "int4-weights"))
    # hidden size 32 is not divisible by 128: the "adjust" fallback uses groups of 32; NNCF keeps the (tied)
    # embeddings and the LM head in int8 backup precision
    assert record["layer_weights"] == {"i4": 8, "u8": 3}
    assert _weight_type(dst, "logits") == "u8"
    assert _error(_run(dst, feeds), want) < 0.2  # measured 0.11 (random 32-wide weights, groups of 32)
    assert _bin_ratio(dst, xml) < _bin_ratio(int8, xml)  # measured 0.19 vs 0.27
    everything = backend.quantize_graph(xml, tmp / "int4-all" / "model.xml",
                                        Scheme("openvino", "int4-weights", {"all_layers": True}))
    assert everything["layer_weights"] == {"i4": 11}
    with pytest.raises(UsageError, match="group"):
        backend.quantize_graph(xml, tmp / "int4-err" / "model.xml",
                               Scheme("openvino", "int4-weights", {"group_size_fallback": "error"}))


def test_int4_data_aware_needs_calibration(gpt2):
    xml, feeds, want, tmp = gpt2
    scheme = Scheme("openvino", "int4-weights", {"awq": True, "scale_estimation": True})
    with pytest.raises(UsageError, match="calibration"):
        backend.quantize_graph(xml, tmp / "awq" / "model.xml", scheme)
    dst = tmp / "awq" / "model.xml"
    record = backend.quantize_graph(xml, dst, scheme, calibration=feeds)
    assert "awq" in record["method"] and record["calibration_feeds"] == len(feeds)
    assert _error(_run(dst, feeds), want) < 0.2  # measured 0.099 (0.111 without AWQ and scale estimation)


def test_static_int8_transformer_decoder(gpt2):
    xml, feeds, want, tmp = gpt2
    dst = tmp / "static" / "model.xml"
    record = backend.quantize_graph(xml, dst, Scheme("openvino", "static-int8"), calibration=feeds)
    assert record["model_type"] == "transformer" and record["preset"] == "mixed"  # found the attention MatMuls
    assert record["fake_quantize"] > 0 and record["layer_weights"]["i8"] == 9
    assert record["quantized_layers"] == record["candidate_layers"] == 13
    assert _error(_run(dst, feeds), want) < 0.2  # measured 0.11 (0.18 with the generic CNN rules)


def test_static_int8_vit_on_photos_with_exclude(vit):
    xml, feeds, want, tmp = vit
    conv = next(n for n in backend.layers(xml, Scheme("openvino", "static-int8")) if "Conv" in n)
    dst = tmp / "static" / "model.xml"
    record = backend.quantize_graph(xml, dst, Scheme("openvino", "static-int8"), calibration=feeds, exclude=[conv])
    assert record["model_type"] == "transformer"  # ScaledDotProductAttention
    assert record["excluded"] == [conv] and record["layer_weights"]["float"] == 1
    assert _weight_type(dst, conv) == "f32" and record["layer_weights"]["i8"] == record["candidate_layers"] - 1
    got = _run(dst, feeds)
    assert _error(got, want) < 0.1  # measured 0.055 with every layer quantized
    assert [g["logits"].argmax() for g in got] == [w["logits"].argmax() for w in want]
    generic = backend.quantize_graph(xml, tmp / "generic" / "model.xml",
                                     Scheme("openvino", "static-int8", {"model_type": None, "preset": "performance"}),
                                     calibration=feeds)
    assert generic["model_type"] == "generic" and "symmetric" in generic["activations"]


def test_fp16(vit):
    xml, feeds, want, tmp = vit
    dst = tmp / "fp16" / "model.xml"
    record = backend.quantize_graph(xml, dst, Scheme("openvino", "fp16"))
    assert record["layer_weights"] == {"f16": 14} and record["tool"].startswith("openvino ")
    assert "fp32" in record["activations"]  # the CPU plugin decompresses fp16 weights
    assert _error(_run(dst, feeds), want) < 2e-3  # measured 3e-4
    assert 0.45 < _bin_ratio(dst, xml) < 0.55


def test_exclude_keeps_tied_and_named_layers_float(gpt2):
    xml, feeds, want, tmp = gpt2
    names = backend.layers(xml, Scheme("openvino", "int8-weights"))
    mlp = names[5]
    dst = tmp / "exclude" / "model.xml"
    record = backend.quantize_graph(xml, dst, Scheme("openvino", "int8-weights"),
                                    exclude=[names[0], f"^{mlp}$", "no-such-layer"])
    # the token embedding shares its constant with the LM head: both stay float
    assert set(record["excluded"]) == {names[0], mlp, "logits"}
    assert record["exclude_unmatched"] == ["no-such-layer"]
    assert {n: _weight_type(dst, n) for n in record["excluded"]} == dict.fromkeys(record["excluded"], "f32")
    assert _weight_type(dst, names[1]) == "u8"
    assert record["quantized_layers"] == len(names) - 3
    assert _error(_run(dst, feeds), want) < 0.03


def test_bad_input(gpt2):
    xml, feeds, _, tmp = gpt2
    dst = tmp / "bad" / "model.xml"
    with pytest.raises(UsageError, match="openvino modes"):
        backend.quantize_graph(xml, dst, Scheme("openvino", "dynamic-int8"))
    with pytest.raises(UsageError, match="valid: symmetric"):
        backend.quantize_graph(xml, dst, Scheme("openvino", "int8-weights", {"group_size": 64}))
    with pytest.raises(UsageError, match="preset"):
        backend.quantize_graph(xml, dst, Scheme("openvino", "static-int8", {"preset": "fast"}), calibration=feeds)
    with pytest.raises(UsageError, match="ratio"):
        backend.quantize_graph(xml, dst, Scheme("openvino", "int4-weights", {"ratio": 0}))
    with pytest.raises(UsageError, match="calibration"):
        backend.quantize_graph(xml, dst, Scheme("openvino", "static-int8"))
    with pytest.raises(InputError, match="graph inputs"):
        backend.quantize_graph(xml, dst, Scheme("openvino", "static-int8"), calibration=[{"pixel_values": 0}])
    with pytest.raises(UsageError, match="regular expression"):
        backend.quantize_graph(xml, dst, Scheme("openvino", "int8-weights"), exclude=["(unclosed"])
    with pytest.raises(UsageError, match=".xml"):
        backend.quantize_graph(xml, tmp / "bad" / "model.bin", Scheme("openvino", "int8-weights"))
    with pytest.raises(UsageError, match="not an OpenVINO IR"):
        backend.layers(tmp / "missing.xml", Scheme("openvino", "int8-weights"))
