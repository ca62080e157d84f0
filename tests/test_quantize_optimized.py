"""The ONNX ``optimized`` variant (issue 6's optional ORT graph optimisation per model type): operator fusions of
``onnxruntime.transformers.optimizer`` for the family's model type, checked against the source graph, recorded
in the manifest (fused ops, model type, fallback), run by the runtime like any variant, and usable as the source
of an int8 variant. The fallback to ONNX Runtime's own passes is exercised with the model type whose fusions
really crash on our GPT-2 decoder (``gpt2``: IndexError)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import ExportError, UsageError
from mmedge.quantize.backends import onnx as onnx_backend
from mmedge.quantize.backends import onnx_fusion
from mmedge.quantize.compress import add_variant
from mmedge.quantize.plan import parse_options, scheme_for
from mmedge.quantize.samples import samples
from mmedge.quantize.scheme import Scheme
from mmedge.runtime.package import open_package

TEXT = samples("text", limit=4)
LABELS = ["a photo of a cat", "a photo of a rocket", "a cup of coffee"]


def ops(path: Path) -> Counter[str]:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def record(pkg: Path, component: str, variant: str) -> dict:
    art = open_package(pkg).manifest.components[component].find("onnx", variant)
    return next(iter(art.parity["quantization"]["records"].values()))


@pytest.fixture(scope="module")
def clip_opt(clip_package, tmp_path_factory) -> Path:
    """The tiny CLIP package with an ``fp32-opt`` variant added by the command line."""
    pkg = tmp_path_factory.mktemp("opt") / "clip"
    shutil.copytree(clip_package, pkg)
    assert main(["quantize", str(pkg), "--mode", "optimized", "--limit", "3"]) == 0
    return pkg


def test_clip_towers_get_the_clip_fusions_and_stay_the_same_function(clip_opt):
    manifest = open_package(clip_opt, verify=True).manifest
    # only ONNX has the mode: the command line kept to the formats that do
    assert {(f, v) for f, v, _p, _s in manifest.variants() if v.startswith("fp32-opt")} == {("onnx", "fp32-opt")}
    for component in ("text", "vision"):
        art = manifest.components[component].find("onnx", "fp32-opt")
        rec = record(clip_opt, component, "fp32-opt")
        assert art.precision == "fp32" and rec["mode"] == "optimized" and rec["model_type"] == "clip"
        assert rec["fallback"] is None and rec["portable"] and rec["quantized_nodes"] == 0
        assert rec["fusion_op_counts"]["QuickGelu"] >= 1 and rec["fusion_op_counts"]["SkipLayerNormalization"] >= 1
        before = ops(clip_opt / manifest.components[component].find("onnx", "fp32").file)
        after = ops(clip_opt / art.file)
        assert after.get("QuickGelu", 0) == rec["fusion_op_counts"]["QuickGelu"]
        assert "QuickGelu" not in before and "SkipLayerNormalization" not in before  # fused here, not exported
        assert sum(after.values()) < sum(before.values())  # fused: fewer nodes doing the same work
        assert rec["tried"][0]["relative_error"] < 1e-5
        assert art.parity["graph_vs_fp32"][next(iter(art.parity["graph_vs_fp32"]))]["relative_error_max"] < 1e-5
        assert art.parity["task_metric"]["metrics"]["agreement"] == 1.0


def test_info_says_what_each_variant_was_checked_against(clip_opt, capsys):
    assert main(["info", str(clip_opt)]) == 0
    lines = capsys.readouterr().out.splitlines()
    opt = [line for line in lines if " fp32-opt " in line]
    assert len(opt) == 2 and all("optimized of fp32: graph error" in line and "agreement 1" in line for line in opt)
    assert any(" fp32 " in line and "parity ok (max abs diff" in line for line in lines)


def test_a_format_mode_keeps_to_the_formats_that_have_it(capsys):
    from mmedge.cli.compress import formats_with

    assert formats_with("optimized", ["onnx", "openvino", "tflite"]) == ["onnx"]
    assert "optimized is a mode of onnx only: openvino, tflite left as they are" in capsys.readouterr().out
    assert formats_with("int8", ["onnx", "openvino"]) == ["onnx", "openvino"]
    assert formats_with("int2", ["onnx"]) == ["onnx"]  # unknown: scheme_for names the valid ones


def test_the_optimized_variant_runs_and_gives_the_fp32_probabilities(clip_opt, photos):
    opt = runtime.load(clip_opt, engine="onnxruntime", variant="fp32-opt")
    fp32 = runtime.load(clip_opt, engine="onnxruntime", variant="fp32")
    for photo in sorted(photos.iterdir()):
        np.testing.assert_allclose(opt.zero_shot(photo, LABELS).probs, fp32.zero_shot(photo, LABELS).probs, atol=1e-5)
    assert opt.ran.variant == "fp32-opt"
    # the plan does not prefer it on its own (measured no faster on CPU): the exported fp32 stays the default
    assert runtime.load(clip_opt, engine="onnxruntime").ran.variant == "fp32"


def test_a_crashing_model_type_falls_back_to_onnxruntime_passes_and_says_so(lm_packages, tmp_path):
    src = open_package(lm_packages["gpt2"]).file_path("decoder/onnx-fp32/model.onnx")
    rec = onnx_backend.quantize_graph(src, tmp_path / "model.onnx", Scheme("onnx", "optimized", {"model_type": "gpt2"}))
    assert rec["tried"][0]["model_type"] == "gpt2" and "IndexError" in rec["tried"][0]["error"]
    assert rec["fallback"] == rec["tried"][0]["error"] and rec["model_type"] is None
    assert rec["method"].endswith("(only_onnxruntime)") and rec["opt_level"] == 1 and rec["disabled_fusions"] == []
    assert (tmp_path / "model.onnx").is_file()


def test_gpt2_tokens_unchanged_and_int8_quantizes_the_fused_graph(lm_packages, tmp_path):
    pkg = tmp_path / "gpt2"
    result = add_variant(lm_packages["gpt2"], pkg, scheme_for("optimized", "onnx", "causal-lm"), samples=TEXT,
                         budget="exact>=1.0")
    rec = record(pkg, "decoder", "fp32-opt")
    assert result.variant == "fp32-opt" and rec["model_type"] == "bert" and rec["fallback"] is None
    assert {"SkipLayerNormalization", "FastGelu"} <= set(rec["fusion_op_counts"])
    int8 = add_variant(pkg, pkg, scheme_for("int8", "onnx", "causal-lm"), samples=TEXT, source="fp32-opt",
                       name="int8-opt")
    art = open_package(pkg, verify=True).manifest.components["decoder"].find("onnx", "int8-opt")
    assert art.parity["quantization"]["source_variant"] == "fp32-opt" and int8.sizes["decoder"]["ratio"] < 0.6
    graph = ops(pkg / art.file)
    assert graph.get("SkipLayerNormalization") and graph.get("MatMulInteger")  # int8 on top of the fusions
    options = {"max_new_tokens": 8, "do_sample": False}
    fp32 = runtime.load(pkg, engine="onnxruntime", variant="fp32")
    for variant in ("fp32-opt", "int8-opt"):
        pipe = runtime.load(pkg, engine="onnxruntime", variant=variant)
        assert pipe.generate(TEXT[0].value, **options).tokens == fp32.generate(TEXT[0].value, **options).tokens


def test_no_try_that_holds_is_an_export_error_and_leaves_no_file(lm_packages, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_fusion, "TOLERANCE", -1.0)  # no graph can match: each try must be dropped
    src = open_package(lm_packages["gpt2"]).file_path("decoder/onnx-fp32/model.onnx")
    feeds = [{i.name: x for i, x in zip(_inputs(src), _feed(src))}]
    with pytest.raises(ExportError, match=r"could not optimise model.onnx .*bert: ValueError: outputs differ.*"
                                          r"onnxruntime only: ValueError.*try another model_type"):
        onnx_backend.quantize_graph(src, tmp_path / "model.onnx", Scheme("onnx", "optimized", {"model_type": "bert"}),
                                    calibration=feeds)
    assert not list(tmp_path.iterdir())


def _inputs(src: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()


def _feed(src: Path) -> list[np.ndarray]:
    """One valid decoder call: a 3-token prompt, no past."""
    arrays = []
    for i in _inputs(src):
        if i.name == "input_ids":
            arrays.append(np.array([[5, 6, 7]], np.int64))
        elif i.name == "position_ids":
            arrays.append(np.array([[0, 1, 2]], np.int64))
        elif i.name == "attention_mask":
            arrays.append(np.ones((1, 3), np.int64))
        else:  # past keys/values: empty past
            shape = [0 if isinstance(d, str) and "past" in d else 1 if isinstance(d, str) else d for d in i.shape]
            arrays.append(np.zeros(shape, np.float32))
    return arrays


def test_bad_options_and_sources_are_refused_naming_the_choices(lm_packages, tmp_path):
    src = open_package(lm_packages["gpt2"]).file_path("decoder/onnx-fp32/model.onnx")

    def write(**options):
        return onnx_backend.quantize_graph(src, tmp_path / "m.onnx", Scheme("onnx", "optimized", options))

    with pytest.raises(UsageError, match="model_type='gpt3' is invalid; choose one of .*'clip'"):
        write(model_type="gpt3")
    with pytest.raises(UsageError, match=r"opt_level=3 is invalid; choose one of \(0, 1, 2, 99\)"):
        write(opt_level=3)
    with pytest.raises(UsageError, match="disable names unknown fusions warp; choose from .*attention"):
        write(disable=["warp"])
    with pytest.raises(UsageError, match="has no layers to exclude"):
        onnx_backend.quantize_graph(src, tmp_path / "m.onnx", Scheme("onnx", "optimized"), exclude=["x"])
    assert onnx_backend.layers(src, Scheme("onnx", "optimized")) == []  # nothing for a sensitivity pass
    with pytest.raises(UsageError, match="no fp32 onnx variant 'fp32-fast'; --source takes one of: fp32"):
        add_variant(lm_packages["gpt2"], tmp_path / "x", scheme_for("int8", "onnx", "causal-lm"), samples=TEXT,
                    source="fp32-fast")
    assert not list(tmp_path.iterdir())


def test_model_types_per_family_and_component():
    sd = scheme_for("optimized", "onnx", "text-to-image")
    assert sd.for_component("unet").options == {"model_type": "unet"}
    assert sd.for_component("text_encoder").options == {"model_type": "clip"}
    assert sd.for_component("vae_decoder").options == {"model_type": None}
    assert scheme_for("optimized", "onnx", "whisper").options == {"model_type": "bart"}
    assert scheme_for("optimized", "onnx", "causal-lm", {"model_type": "t5"}).options == {"model_type": "t5"}
    assert Scheme("onnx", "optimized", {"model_type": {"a": "vit"}}).for_component("b").options == {}
    assert Scheme("onnx", "optimized").default_name == "fp32-opt" and Scheme("onnx", "optimized").fed
    assert parse_options(["model_type=none", "disable=attention, gelu"]) == {"model_type": None,
                                                                            "disable": "attention, gelu"}
    opts = onnx_backend.options(Scheme("onnx", "optimized", {"disable": "attention, gelu"}))
    assert opts["disable"] == ("attention", "gelu")
