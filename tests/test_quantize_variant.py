"""Compressed variants written into a package (quantize.compress.add_variant and `mmedge quantize`): calibration
recorded from the real pipeline, the task metric against fp32, budgets that hold or fail, the sensitivity pass
and what the manifest records. The tiny random GPT-2 is a hard case for greedy tokens (its logits are nearly tied,
so int8 flips some tokens): exactly what a budget and the sensitivity pass are for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import BudgetError, UsageError
from mmedge.quantize import calibration as calib
from mmedge.quantize.compress import add_variant
from mmedge.quantize.samples import samples
from mmedge.quantize.scheme import Scheme
from mmedge.runtime.package import open_package

TEXT = samples("text", limit=6)
MATMULS = Scheme("onnx", "dynamic-int8", {"op_types": ["MatMul", "Attention", "LSTM"]})


@pytest.fixture(scope="module")
def gpt2(lm_packages, tmp_path_factory) -> Path:
    """A private copy of the tiny GPT-2 package (every format, static too)."""
    dst = tmp_path_factory.mktemp("q") / "gpt2"
    shutil.copytree(lm_packages["gpt2"], dst)
    return dst


@pytest.fixture(scope="module")
def budgeted(gpt2, tmp_path_factory) -> tuple[Path, object]:
    """Dynamic int8 without the embedding table (the op types before Gather joined the default) held to exact
    fp32 tokens: the first try flips tokens, the sensitivity pass fixes them."""
    out = tmp_path_factory.mktemp("q") / "int8"
    return out, add_variant(gpt2, out, MATMULS, budget="exact>=1.0", samples=TEXT)



def test_perplexity_is_transformers_loss_on_each_sample(gpt2, tiny_lm_dirs):
    """The LM task's teacher-forced likelihood (the perplexity budget's input) on the fp32 ONNX graph equals
    transformers' mean cross-entropy loss on the same tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from mmedge.quantize.evaluation import run_task
    from mmedge.runtime.preprocess.tokenizer import TextTokenizer

    pkg = open_package(gpt2)
    outputs = run_task(pkg, "onnx", "fp32", TEXT[:3])
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dirs["gpt2"]).eval()
    tokenizer = TextTokenizer(pkg.path(pkg.manifest.preprocessing["text"]["tokenizer_file"]))
    for sample, out in zip(TEXT[:3], outputs):
        ids = torch.tensor([tokenizer.encode(sample.value)])
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        assert out["count"] == ids.shape[1] - 1 > 0
        assert out["nll"] / out["count"] == pytest.approx(loss, rel=1e-4)

def test_calibration_records_what_the_decoder_really_gets(gpt2):
    pkg = open_package(gpt2)
    calls, outputs = calib.record(pkg, "onnx", "fp32", TEXT[:2], per_file=8)
    (file, recorded), = calls.items()
    assert file == pkg.manifest.components["decoder"].find("onnx", "fp32").file and len(recorded) == 8
    lengths = {feeds["input_ids"].shape[1] for _key, feeds in recorded}
    assert max(lengths) > 1 and 1 in lengths  # the prompt prefill and single-token decode steps with a real cache
    assert len(outputs) == 2 and all(o["tokens"] for o in outputs)


def test_budget_met_by_keeping_the_worst_layers_float(gpt2, budgeted):
    out, result = budgeted
    assert result.tries[0]["holds"] is False and result.tries[-1]["holds"] is True  # the pass was needed and worked
    assert result.excluded and result.metrics["exact"] == 1.0
    art = open_package(out).manifest.components["decoder"].find("onnx", "int8")
    assert art.precision == "int8" and art.file.startswith("decoder/onnx-int8/")
    q = art.parity["quantization"]
    assert q["mode"] == "dynamic-int8" and q["excluded"] == result.excluded
    assert set(result.excluded) <= set(q["records"][next(iter(q["records"]))]["excluded"])
    assert art.parity["budget"]["text"] == "exact>=1" and len(art.parity["budget"]["tries"]) == len(result.tries)
    assert art.parity["size"]["ratio"] < 1.0 and art.parity["task_metric"]["metrics"]["agreement"] == 1.0
    graph = next(iter(art.parity["graph_vs_fp32"].values()))
    assert 0 < graph["relative_error_mean"] < 0.2 and graph["cosine_min"] > 0.98
    assert not open_package(gpt2).manifest.components["decoder"].find("onnx", "int8")  # the source is untouched


def test_the_variant_runs_and_gives_the_fp32_tokens(gpt2, budgeted):
    out, _ = budgeted
    int8 = runtime.load(out, engine="onnxruntime", variant="int8")
    fp32 = runtime.load(out, engine="onnxruntime", variant="fp32")
    options = {"max_new_tokens": 12, "do_sample": False}
    for sample in TEXT:
        assert int8.generate(sample.value, **options).tokens == fp32.generate(sample.value, **options).tokens
    assert int8.ran.variant == "int8"
    assert open_package(out).verify() == []


def test_a_budget_that_cannot_hold_writes_nothing(gpt2, budgeted, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(BudgetError, match="cannot meet the budget exact>=1.*layers kept in float"):
        # the budgeted fixture's first try shows dynamic int8 flips tokens; no layer may stay float here
        add_variant(gpt2, out, MATMULS, budget="exact>=1.0", samples=TEXT, max_excluded=0.0)
    assert not out.exists() and not list(tmp_path.iterdir())  # no staging directory left behind either


def test_bad_requests_are_refused_before_work(gpt2, budgeted, tmp_path):
    out, _ = budgeted
    with pytest.raises(UsageError, match="already has a onnx variant 'int8'.*--name"):
        add_variant(out, tmp_path / "x", Scheme("onnx", "dynamic-int8"), samples=TEXT)
    with pytest.raises(UsageError, match="unknown mode 'int2'"):
        add_variant(gpt2, tmp_path / "x", Scheme("onnx", "int2"), samples=TEXT)
    with pytest.raises(UsageError, match="scored by agreement, exact"):
        add_variant(gpt2, tmp_path / "x", Scheme("onnx", "fp16"), budget="wer+1", samples=TEXT)


@pytest.mark.parametrize("fmt, wish, static", [("openvino", "int8", False), ("tflite", "int8", True),
                                               ("openvino", "int4", False), ("tflite", "fp16", True)])
def test_other_formats_get_variants_too(gpt2, tmp_path, fmt, wish, static):
    from mmedge.quantize.plan import scheme_for

    scheme = scheme_for(wish, fmt, "causal-lm")
    result = add_variant(gpt2, tmp_path / "pkg", scheme, samples=TEXT[:3])
    expected = f"{scheme.precision}-static" if static else scheme.precision
    assert result.variant == expected
    engine = {"openvino": "openvino", "tflite": "litert"}[fmt]
    pipe = runtime.load(result.package, engine=engine, variant=expected,
                        options={"INFERENCE_PRECISION_HINT": "f32"} if fmt == "openvino" else None)
    assert pipe.generate("hello", max_new_tokens=4, do_sample=False).tokens
    art = open_package(result.package).manifest.components["decoder"].find(fmt, expected)
    assert art.parity["quantization"]["mode"] == scheme.mode and art.parity["size"]["ratio"] < 1.0
    assert 0.0 <= result.metrics["agreement"] <= 1.0


def test_cli_quantize_adds_a_variant_and_reports(gpt2, tmp_path, capsys):
    out, report = tmp_path / "pkg", tmp_path / "q.json"
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "p.txt").write_text("\n".join(s.value for s in TEXT[:3]), encoding="utf-8")
    assert main(["quantize", str(gpt2), "--mode", "fp16", "--formats", "onnx", "--samples", str(folder),
                 "--out", str(out), "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "onnx: fp16 (fp16)" in text and "size vs fp32: decoder" in text
    data = json.loads(report.read_text())
    assert data[0]["variant"] == "fp16" and data[0]["sizes"]["decoder"]["ratio"] < 0.9  # a tiny graph: structure, not weights
    assert main(["run", str(out), "--variant", "fp16", "--prompt", "hello", "--max-new-tokens", "3"]) == 0
    assert "onnx/fp16" in capsys.readouterr().out
    assert main(["quantize", str(gpt2), "--mode", "int3", "--out", str(tmp_path / "y")]) == 2
    assert "unknown quantization 'int3'" in capsys.readouterr().err
    assert main(["quantize", str(gpt2), "--mode", "auto", "--device", "rpi4", "--out", str(tmp_path / "z")]) == 0
    assert "nothing to quantize" in capsys.readouterr().out and not (tmp_path / "z").exists()


def test_static_int8_is_calibrated_on_real_photos(vit_package, tmp_path):
    """A convolutional family (tiny ViT) gets static QDQ int8 calibrated on the feeds the pipeline recorded from
    real photos; its top-1 labels are scored against fp32 on the same photos."""
    photos = samples("image", limit=8)
    result = add_variant(vit_package, tmp_path / "out", Scheme("onnx", "static-int8", {"per_channel": True}),
                         samples=photos)
    art = open_package(result.package).manifest.components[next(iter(result.sizes))].find("onnx", "int8")
    q = art.parity["quantization"]
    assert q["calibration"]["used"] and q["calibration"]["samples"] == [p.name for p in photos]
    record = next(iter(q["records"].values()))
    assert record["quantized_nodes"] > 0 and "QDQ" in json.dumps(record)
    assert 0.0 <= result.metrics["agreement"] <= 1.0 and np.isfinite(result.metrics["cosine"])
