"""The profiler: one JSON schema for every engine with sane numbers, per-operator totals from the engines' own
profilers, accuracy against onnxruntime fp32, generation timings for an LM, the CLI round trip to an HTML
report, and typed errors naming the fix for bad input."""

from __future__ import annotations

import json

import pytest

from mmedge.cli.main import main
from mmedge.errors import InputError, PackageError, UsageError
from mmedge.runtime.profiling import SCHEMA_VERSION, load_profile, profile, write_profile

ENGINES = ["onnxruntime", "openvino", "litert"]


@pytest.fixture(scope="module")
def clip_profile(clip_package) -> dict:
    return profile(clip_package, engines=ENGINES, runs=5, warmup=1, progress=False)


def test_one_schema_for_every_engine(clip_profile):
    assert clip_profile["schema_version"] == SCHEMA_VERSION
    assert clip_profile["package"]["family"] == "clip"
    seen = {(r["engine"], r["variant"]) for r in clip_profile["results"]}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
            ("openvino", "fp32-static")} <= seen and any(e == "litert" for e, _ in seen)
    keys = {frozenset(r) for r in clip_profile["results"]}
    assert len(keys) == 1, "every engine writes the same fields"
    for r in clip_profile["results"]:
        lat = r["latency_ms"]
        assert lat["runs"] == len(lat["samples"]) == 5
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["load_ms"] > 0 and r["cold_ms"] > 0 and r["throughput_per_s"] > 0
        assert r["memory"]["peak_rss_bytes"] > r["memory"]["baseline_rss_bytes"] > 0
        assert r["files"]["bytes"] > 0 and r["files"]["count"] >= 2
        assert r["ran"]["engine"] == r["engine"] and isinstance(r["fallbacks"], list)
        assert r["generation"] is None
        assert r["heavy_modules"] == []  # the measuring process imported only the slim runtime


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_operator_totals_from_the_engine(clip_profile, engine):
    for r in (r for r in clip_profile["results"] if r["engine"] == engine):
        ops = r["operators"]
        assert ops["available"] and ops["by_op_type"] and ops["top_nodes"] and ops["placement"]
        assert 0 < ops["total_op_ms_per_call"] < ops["wall_ms_per_call"]
        assert abs(sum(o["ms_per_call"] for o in ops["by_op_type"]) - ops["total_op_ms_per_call"]) < 1e-6
    if engine == "onnxruntime":
        assert set(ops["placement"]) == {"CPUExecutionProvider"}
    else:
        assert all(p.startswith("CPU:") for p in ops["placement"])


def test_litert_says_it_has_no_operator_timings(clip_profile):
    ops = next(r for r in clip_profile["results"] if r["engine"] == "litert")["operators"]
    assert ops["available"] is False and "per-operator" in ops["reason"] and ops["op_types"]


def test_every_variant_matches_the_fp32_reference(clip_profile):
    for r in clip_profile["results"]:
        acc = r["accuracy"]
        assert acc["available"] and acc["reference"] == "onnxruntime/fp32" and acc["metric"] == "cosine"
        assert acc["value"] > 0.99999 and acc["max_abs_diff"] < 1e-4


def test_generation_metrics_and_token_agreement(lm_packages):
    result = profile(lm_packages["gpt2"], engines=["openvino"], variants=["fp32-static"], runs=2, warmup=0,
                     progress=False)["results"][0]
    gen = result["generation"]
    assert gen["source"] == "pipeline timings" and gen["new_tokens"] > 1
    assert gen["time_to_first_token_ms"] > 0 and gen["tokens_per_s"] > 0
    # the reference (onnxruntime fp32) was not profiled, so a separate reference process ran
    assert result["accuracy"]["metric"] == "token_agreement" and result["accuracy"]["value"] == 1.0



def test_no_operator_profile_when_none_is_asked_for(clip_package):
    """``operator_calls=0`` (what bench/compression.py asks for) times the task and says the per-operator part
    was not asked for, instead of dividing by zero calls."""
    result = profile(clip_package, engines=["onnxruntime"], variants=["fp32"], runs=2, warmup=0, operator_calls=0,
                     progress=False)["results"][0]
    assert result["latency_ms"]["runs"] == 2 and result["latency_ms"]["p50"] > 0
    assert not result["operators"]["available"] and "operator_calls=0" in result["operators"]["reason"]

def test_cli_profile_and_report_round_trip(clip_package, clip_profile, tmp_path, capsys):
    one = tmp_path / "ort.json"
    assert main(["profile", str(clip_package), "--engine", "onnxruntime", "--variants", "fp32-static", "--runs", "3",
                 "--warmup", "0", "--json", str(one)]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime/fp32-static" in printed and "ran: engine onnxruntime" in printed
    assert load_profile(one)["results"][0]["latency_ms"]["runs"] == 3
    other = write_profile(clip_profile, tmp_path / "all.json")
    html = tmp_path / "report.html"
    assert main(["report", str(one), str(other), "--html", str(html)]) == 0
    page = html.read_text()
    assert "<svg" in page and "fp32-static" in page and "litert" in page and "Pareto" in page


def test_bad_input_is_a_typed_error_naming_the_fix(clip_package, tmp_path):
    with pytest.raises(PackageError, match="mmedge export"):
        profile(tmp_path, progress=False)
    with pytest.raises(UsageError, match=r"has: fp32, fp32-static.*--variants"):
        profile(clip_package, variants=["int8"], progress=False)
    with pytest.raises(UsageError, match="choose from: onnxruntime"):
        profile(clip_package, engines=["tensorrt"], progress=False)
    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="mmedge profile"):
        load_profile(bogus)
    assert main(["profile", str(clip_package), "--engine", "tensorrt"]) == 2
    assert main(["report", str(bogus), "--html", str(tmp_path / "r.html")]) == 5


def _chromium() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_report_renders_in_headless_chromium(clip_profile, tmp_path):
    """The page is opened by a real browser engine (Debian's chromium, installed by .ci/run): the DOM it builds has
    the plots' marks, and the screenshot is not blank — a page a browser could not lay out would fail here."""
    import subprocess

    import numpy as np
    from PIL import Image

    browser = _chromium()
    if browser is None:
        pytest.skip("apt-get install chromium (done by .ci/run)")
    html = tmp_path / "report.html"
    assert main(["report", str(write_profile(clip_profile, tmp_path / "p.json")), "--html", str(html)]) == 0
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'chrome'}"]
    dom = subprocess.run([*flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<svg") >= 2, "latency and Pareto plots"
    assert dom.count("<rect") + dom.count("<circle") + dom.count("<line") > 20, "plots carry their marks"
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2400", html.as_uri()], capture_output=True,
                   timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert (pixels < 200).mean() > 0.01, "the rendered page has text and plots on it"


def test_speech_recognition_profile_on_real_whisper(whisper_package):
    """The ASR workload (bundled speech clip), a decoder-clock generation probe and the WER accuracy path, on the
    real Whisper tiny.en package: the static variant transcribes exactly like onnxruntime fp32."""
    result = profile(whisper_package, engines=["onnxruntime"], variants=["fp32-static"], runs=2, warmup=0,
                     operator_calls=1, progress=False)["results"][0]
    gen, acc, ops = result["generation"], result["accuracy"], result["operators"]
    assert gen["new_tokens"] > 1 and gen["time_to_first_token_ms"] > 0 and gen["tokens_per_s"] > 0
    assert acc["available"] and acc["metric"] == "wer" and acc["value"] == 0.0
    assert ops["available"] and ops["total_op_ms_per_call"] > 0
    assert {c: o["options"].get("prepack_weights", True) for c, o in result["ran"]["components"].items()} == \
        {"encoder": True, "decoder": False}
