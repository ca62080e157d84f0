"""A tiny random-weight SpeechT5 (+ HiFi-GAN vocoder) exported once with static variants: per engine and variant,
the slim runtime's numpy generation loop gives transformers' ``generate_speech(..., vocoder=...)`` waveform on the
same weights, with the prenet's inference-time dropout drawn from the same numpy stream on both sides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import heavy_matrix

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import InputError, StaticShapeError

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
TEXT = "Hello world, how are you?"
VARIANTS = heavy_matrix(("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
                        ("openvino", "fp32-static"), ("litert", "fp32-static"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from mmedge.exporter.families import write_tiny_model

    return write_tiny_model("speecht5", tmp_path_factory.mktemp("tiny-speecht5") / "model")


@pytest.fixture(scope="module")
def speecht5_package(tiny_dir, tmp_path_factory, matrix_formats) -> Path:
    """Static too; every format in the slow stage, ONNX only by default (~1 min of CPU for all)."""
    from mmedge.exporter.export import export

    return export(tiny_dir, tmp_path_factory.mktemp("speecht5-pkg") / "speecht5", static=True, formats=matrix_formats)


@pytest.fixture(scope="module")
def speaker() -> np.ndarray:
    return np.random.default_rng(1).standard_normal(16).astype(np.float32)


@pytest.fixture(scope="module")
def hf(tiny_dir):
    """``generate_speech`` with the vocoder, its prenet dropout masks taken from ``default_rng(seed)`` in the
    runtime's order (one draw of [layers, 1, units] per step; transformers applies only the last frame's row)."""
    from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Tokenizer

    model = SpeechT5ForTextToSpeech.from_pretrained(tiny_dir).eval()
    vocoder = SpeechT5HifiGan.from_pretrained(tiny_dir / "vocoder").eval()
    tokenizer = SpeechT5Tokenizer.from_pretrained(tiny_dir)
    prenet, cfg = model.speecht5.decoder.prenet, model.config
    shape = (cfg.speech_decoder_prenet_layers, 1, cfg.speech_decoder_prenet_units)

    def speech(text: str, speaker: np.ndarray, seed: int, **settings) -> np.ndarray:
        rng, state = np.random.default_rng(seed), {"layer": 0, "masks": None}

        def dropout(inputs_embeds: torch.Tensor, p: float) -> torch.Tensor:  # _consistent_dropout, numpy masks
            if state["layer"] == 0:
                state["masks"] = (rng.random(shape, dtype=np.float32) < p).astype(np.float32)
            mask = torch.bernoulli(inputs_embeds[0], p=p)
            mask[-1] = torch.from_numpy(state["masks"][state["layer"], 0])
            state["layer"] = (state["layer"] + 1) % shape[0]
            masks = mask.unsqueeze(0).repeat(inputs_embeds.size(0), 1, 1)
            return torch.where(masks == 1, inputs_embeds, 0) * 1 / (1 - p)

        prenet._consistent_dropout = dropout
        try:
            with torch.no_grad():
                return model.generate_speech(tokenizer(text, return_tensors="pt").input_ids,
                                             torch.from_numpy(speaker)[None], vocoder=vocoder, **settings).numpy()
        finally:
            del prenet._consistent_dropout
    return speech


@pytest.mark.parametrize("engine, variant", VARIANTS)
def test_speech_equals_generate_speech(speecht5_package, hf, speaker, engine, variant):
    pipe = runtime.load(speecht5_package, engine=engine, variant=variant, device="x86-cpu", options=F32)
    cases = [({"maxlenratio": 6.0}, "maxlenratio"), ({"threshold": 0.0, "minlenratio": 1.0}, "threshold")]
    for seed, (settings, stopped) in enumerate(cases):
        expected = hf(TEXT, speaker, seed, **settings)
        result = pipe.speak(TEXT, speaker_embedding=speaker, seed=seed, **settings)
        assert result.details["stopped"] == stopped and result.ran.variant == variant
        assert result.waveform.shape == expected.shape
        assert np.abs(result.waveform - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())
        assert np.abs(expected).max() > 0.05  # speech-sized numbers, not a vanishing signal


def test_fast_tokenizer_equals_speecht5_tokenizer(speecht5_package, tiny_dir):
    from transformers import SpeechT5Tokenizer

    from mmedge.runtime.preprocess.tokenizer import TextTokenizer

    slow = SpeechT5Tokenizer.from_pretrained(tiny_dir)
    fast = TextTokenizer(speecht5_package / "tokenizer" / "tokenizer.json")
    for text in (TEXT, " leading and  double  spaces ", "Café, naïve!", "What time? 7:45."):
        assert fast.encode(text) == slow(text).input_ids


def test_seed_repeats_and_default_stops_by_the_length_limit(speecht5_package, speaker):
    pipe = runtime.load(speecht5_package, engine="onnxruntime", variant="fp32", device="x86-cpu")
    a, b, c = (pipe.speak("good morning", speaker_embedding=speaker, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.waveform, b.waveform) and not np.array_equal(a.waveform, c.waveform)
    tokens = a.details["tokens"]
    assert a.details["steps"] == int(tokens * 20.0 / 2) and a.details["stopped"] == "maxlenratio"


def test_static_limits_and_bad_input(speecht5_package, speaker):
    static = runtime.load(speecht5_package, engine="onnxruntime", variant="fp32-static", device="x86-cpu")
    with pytest.raises(StaticShapeError, match="at most 48"):
        static.speak("a sentence that is much too long for the tiny static text length", speaker_embedding=speaker)
    with pytest.raises(StaticShapeError, match="320 decoder steps"):  # 40 tokens x 20 / 2 = 400 steps
        static.speak("the weather is nice today in the city ok", speaker_embedding=speaker, seed=0)
    with pytest.raises(InputError, match="speaker embedding"):
        static.speak(TEXT)
    with pytest.raises(InputError, match="16 finite values"):
        static.speak(TEXT, speaker_embedding=np.zeros(5))
    with pytest.raises(InputError, match=r"\['#', '@'\]"):
        static.speak("mail @ home #1", speaker_embedding=speaker)
    with pytest.raises(InputError, match="empty"):
        static.speak(" ", speaker_embedding=speaker)


def test_cli_with_a_speaker_embedding_file(speecht5_package, speaker, tmp_path, capsys):
    embedding = tmp_path / "speaker.npy"
    np.save(embedding, speaker)
    out = tmp_path / "speech.wav"
    args = ["run", str(speecht5_package), "--device", "x86-cpu", "--text", "good morning", "--out", str(out),
            "--seed", "1", "--json"]
    assert main([*args, "--speaker-embedding", str(embedding)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sampling_rate"] == 16000 and printed["samples"] == printed["mel_frames"] * 16 and out.is_file()
    assert main(args) == 5  # no speaker embedding: an input error naming the option


def test_profile_compares_waveforms(speecht5_package, profile_static):
    accuracy = profile_static(speecht5_package)["accuracy"]
    assert accuracy["metric"] == "waveform_cosine" and accuracy["same_length"] and accuracy["value"] > 0.99999
