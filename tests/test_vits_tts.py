"""A tiny random-weight VITS (MMS-TTS layout, two speakers) exported once with static variants: per engine and
variant, the slim runtime's speech equals transformers' ``VitsModel`` with its noise turned off, the numpy
tokenizer equals ``VitsTokenizer``, seeded noise repeats, and the static limits are typed errors."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import heavy_matrix

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import InputError, StaticShapeError
from mmedge.runtime.preprocess.vits_text import VitsCharacters

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
TEXT = "Hello World, how are you?!"  # punctuation is outside the vocabulary: dropped as VitsTokenizer drops it
VARIANTS = heavy_matrix(("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
                        ("openvino", "fp32-static"), ("litert", "fp32-static"))


@pytest.fixture(scope="module")
def tiny_vits_dir(tmp_path_factory) -> Path:
    from mmedge.exporter.families import write_tiny_model

    return write_tiny_model("vits", tmp_path_factory.mktemp("tiny-vits") / "model")


@pytest.fixture(scope="module")
def vits_package(tiny_vits_dir, tmp_path_factory, matrix_formats) -> Path:
    """Static too; every format in the slow stage, ONNX only by default (the TFLite conversions cost the most)."""
    from mmedge.exporter.export import export

    return export(tiny_vits_dir, tmp_path_factory.mktemp("vits-pkg") / "vits", static=True, formats=matrix_formats)


@pytest.fixture(scope="module")
def hf(tiny_vits_dir):
    from transformers import VitsModel, VitsTokenizer

    model = VitsModel.from_pretrained(tiny_vits_dir).eval()
    model.noise_scale, model.noise_scale_duration = 0.0, 0.0  # deterministic, as the runtime with noise 0
    return model, VitsTokenizer.from_pretrained(tiny_vits_dir)


def _reference(hf, text: str, speaker: int, speaking_rate: float = 1.0) -> np.ndarray:
    model, tokenizer = hf
    model.speaking_rate = speaking_rate
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt"), speaker_id=speaker).waveform[0].numpy()


@pytest.mark.parametrize("engine, variant", VARIANTS)
def test_speech_equals_transformers(vits_package, hf, engine, variant):
    pipe = runtime.load(vits_package, engine=engine, variant=variant, device="x86-cpu", options=F32)
    for speaker, rate in ((1, 1.0), (0, 1.3)):
        expected = _reference(hf, TEXT, speaker, rate)
        result = pipe.speak(TEXT, speaker=speaker, noise_scale=0, noise_scale_duration=0, speaking_rate=rate)
        assert result.ran.engine == engine and result.ran.variant == variant
        assert result.waveform.shape == expected.shape
        assert np.abs(result.waveform - expected).max() < 1e-4
    assert result.to_dict()["dropped_characters"] == ["!", ",", "?"]
    assert result.sampling_rate == 16000


@pytest.mark.parametrize("text", ["Hello World", "  It's a well-known fact.  ", "ÉTÉ naïve 42 ok", "UPPER lower"])
def test_tokenizer_equals_vits_tokenizer(vits_package, hf, text):
    from mmedge.runtime.package import open_package

    ids, _ = VitsCharacters(open_package(vits_package).manifest.preprocessing["text"]).encode(text)
    assert ids == hf[1](text).input_ids


def test_seeded_noise_repeats_and_changes_the_speech(vits_package):
    pipe = runtime.load(vits_package, engine="onnxruntime", variant="fp32", device="x86-cpu")
    a, b, c = (pipe.speak(TEXT, seed=s) for s in (7, 7, 8))
    quiet = pipe.speak(TEXT, noise_scale=0, noise_scale_duration=0)
    assert np.array_equal(a.waveform, b.waveform) and a.to_dict()["seed"] == 7
    assert not np.array_equal(a.waveform, c.waveform) and not np.array_equal(a.waveform, quiet.waveform)


def test_static_limits_are_typed_errors(vits_package):
    static = runtime.load(vits_package, engine="onnxruntime", variant="fp32-static", device="x86-cpu")
    dynamic = runtime.load(vits_package, engine="onnxruntime", variant="fp32", device="x86-cpu")
    long_text = "a rather long sentence that will not fit"
    with pytest.raises(StaticShapeError, match="at most 64"):
        static.speak(long_text, seed=0)
    assert dynamic.speak(long_text, seed=0).details["token_ids"] == 2 * len(long_text) + 1
    with pytest.raises(StaticShapeError, match="at most 320 frames"):
        static.speak("slowly now", speaking_rate=0.05, noise_scale=0, noise_scale_duration=0)


def test_bad_input(vits_package):
    pipe = runtime.load(vits_package, engine="onnxruntime", variant="fp32", device="x86-cpu")
    with pytest.raises(InputError, match="empty"):
        pipe.speak("")
    with pytest.raises(InputError, match="vocabulary"):
        pipe.speak("?! 123 !?")
    with pytest.raises(InputError, match="speakers 0-1"):
        pipe.speak("hello", speaker=2)
    with pytest.raises(InputError, match="speaking_rate"):
        pipe.speak("hello", speaking_rate=0)


def test_cli_speaks_into_a_wav(vits_package, tmp_path, capsys):
    out = tmp_path / "speech.wav"
    args = ["run", str(vits_package), "--device", "x86-cpu", "--variant", "fp32-static", "--text", "good morning",
            "--out", str(out), "--speaker", "1", "--seed", "3", "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["speaker"] == 1 and printed["seed"] == 3
    with wave.open(str(out)) as f:
        assert (f.getframerate(), f.getnframes()) == (16000, printed["samples"])
    assert main([*args[:-5], "--speaker-embedding", str(out)]) == 2  # SpeechT5's option


def test_profile_compares_waveforms(vits_package, profile_static):
    accuracy = profile_static(vits_package)["accuracy"]
    assert accuracy["metric"] == "waveform_cosine" and accuracy["same_length"]
    assert accuracy["value"] > 0.99999
