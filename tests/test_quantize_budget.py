"""Budgets, the wish -> scheme table, sample sets and the task metric aggregation (no models needed)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mmedge.errors import UsageError
from mmedge.quantize.budget import parse_budget
from mmedge.quantize.evaluation import score
from mmedge.quantize.plan import auto_precision, parse_options, scheme_for
from mmedge.quantize.samples import LIBRIVOX, samples


@pytest.mark.parametrize("text, metrics, holds", [
    ("wer+1.0", {"wer": 5.0, "wer_fp32": 4.2}, True),
    ("wer+1.0", {"wer": 5.3, "wer_fp32": 4.2}, False),
    ("wer<=3", {"wer": 3.0, "wer_fp32": 0.0}, True),
    ("agreement>=0.98", {"agreement": 0.98}, True),
    ("agreement>=0.98", {"agreement": 0.97}, False),
    ("agreement-0.05", {"agreement": 0.95}, True),
    ("agreement-0.05", {"agreement": 0.9}, False),
    ("psnr>=35", {"psnr": 34.9}, False),
    ("cosine>=0.995", {"cosine": 0.999}, True),
    ("perplexity+0.5", {"perplexity": 10.4, "perplexity_fp32": 10.0}, True),
    ("perplexity+0.5", {"perplexity": 10.6, "perplexity_fp32": 10.0}, False),
])
def test_budget_holds_or_misses(text, metrics, holds):
    budget = parse_budget(text)
    assert budget.holds(metrics) is holds
    assert ("holds" if holds else "missed") in budget.describe(metrics)


@pytest.mark.parametrize("text, kind, message", [
    ("wer 1", None, "write METRIC>=VALUE"),
    ("bleu>=0.3", None, "unknown budget metric"),
    ("wer-1", None, "wer+DELTA"),
    ("agreement+0.1", None, "agreement-DELTA"),
    ("psnr-2", None, "absolute bound"),
    ("agreement>=98", None, "between 0 and 1"),
    ("wer+1", "labels", "scored by agreement, cosine, topk"),
    ("perplexity-1", None, "perplexity+DELTA"),
    ("perplexity+1", "tokens", "scored by agreement, exact, not 'perplexity'"),
])
def test_bad_budgets_name_the_fix(text, kind, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_budget(text, kind)


def test_wish_maps_to_the_scheme_of_each_format_and_family():
    assert scheme_for("int8", "onnx", "whisper").mode == "dynamic-int8"
    assert scheme_for("int8", "onnx", "image-classification").mode == "static-int8"
    assert scheme_for("int8", "openvino", "causal-lm").mode == "int8-weights"
    assert scheme_for("int8", "openvino", "super-resolution").mode == "static-int8"
    assert scheme_for("int4", "tflite", "causal-lm").precision == "int4"
    assert scheme_for("int4", "tflite", "whisper").options["block_size"] == 32  # per channel broke Whisper
    assert scheme_for("static-int8", "onnx", "whisper", {"per_channel": True}).options == {"per_channel": True}
    with pytest.raises(UsageError, match="choose int8, int4, fp16, auto"):
        scheme_for("int3", "onnx", "whisper")
    assert parse_options(["per_channel=true", "group_size=64", "ratio=0.8", "calibrate_method=entropy"]) == {
        "per_channel": True, "group_size": 64, "ratio": 0.8, "calibrate_method": "entropy"}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_options(["per_channel"])


def test_auto_precision_follows_the_device_plan():
    assert auto_precision("rpi4")[0] is None  # no int8 dot product: float first, nothing quantized unless asked
    precision, why = auto_precision("rpi5")
    assert precision == "int8" and "int8 dot product" in why


def test_default_samples_are_real():
    images = samples("image")
    assert len(images) >= 5 and all(s.value.ndim == 3 and s.value.dtype == np.uint8 for s in images)
    assert len(samples("text", limit=3)) == 3
    if LIBRIVOX.is_dir():
        clips = samples("audio")
        assert clips and all(s.reference for s in clips)
    with pytest.raises(UsageError, match="does not exist"):
        samples("image", folder="/no/such/folder")


def test_user_folder_samples(tmp_path):
    (tmp_path / "prompts.txt").write_text("first line\n\nsecond line\n", encoding="utf-8")
    (tmp_path / "clip.wav").write_bytes(b"")
    (tmp_path / "clip.txt").write_text("hello world", encoding="utf-8")
    assert [s.value for s in samples("text", folder=tmp_path)] == ["first line", "second line"]
    assert samples("audio", folder=tmp_path)[0].reference == "hello world"
    with pytest.raises(UsageError, match="no image samples"):
        samples("image", folder=tmp_path)


def test_scores_pool_words_and_items():
    refs = [type("S", (), {"reference": "the cat sat"})(), type("S", (), {"reference": "on the mat"})()]
    out = score("transcript", [{"text": "the cat sat"}, {"text": "on a mat"}], [{"text": "the cat sat"},
                                                                                 {"text": "on the mat"}], refs)
    assert out["wer"] == pytest.approx(100 / 6) and out["wer_fp32"] == 0.0
    labels = score("labels", [{"labels": ["a", "b"], "probs": [[1, 0], [0, 1]]}],
                   [{"labels": ["a", "a"], "probs": [[1, 0], [1, 0]]}], [None])
    assert labels["agreement"] == 0.5
    tokens = score("tokens", [{"tokens": [1, 2, 3]}, {"tokens": [1, 2]}], [{"tokens": [1, 2, 4]}, {"tokens": [1, 2]}],
                   [None, None])
    assert tokens["agreement"] == pytest.approx((2 / 3 + 1) / 2) and tokens["exact"] == 0.5
    lm = score("lm", [{"tokens": [1], "nll": 2.0, "count": 2}, {"tokens": [1], "nll": 4.0, "count": 4}],
               [{"tokens": [1], "nll": 3.0, "count": 2}, {"tokens": [2], "nll": 3.0, "count": 4}], [None, None])
    assert lm["perplexity"] == pytest.approx(np.e) and lm["perplexity_fp32"] == pytest.approx(np.e)  # pooled
    assert lm["agreement"] == 0.5
