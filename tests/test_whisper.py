"""Whisper tiny.en with real weights (imported from CTranslate2) on real LibriVox speech: transcripts
identical to transformers' greedy decode on every engine and cache strategy, WER within the bar, long
audio in 30 s windows, raw PCM and resampled input, the CLI, and typed errors."""

from __future__ import annotations

import json
import re
import wave

import numpy as np
import pytest
import torch

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import InputError, UsageError
from mmedge.runtime.preprocess.audio import load_audio

from conftest import LIBRIVOX

CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
RAW = LIBRIVOX.parent / "goforward.raw"


def words(text: str) -> list[str]:
    out = re.sub(r"[^a-z0-9' ]", "", text.lower().replace("-", " ")).split()
    return [{"mr": "mister", "mrs": "missus"}.get(w, w) for w in out]


def wer(reference: list[str], hypothesis: list[str]) -> tuple[int, int]:
    d = np.arange(len(hypothesis) + 1)
    for i, r in enumerate(reference, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hypothesis, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return int(d[-1]), len(reference)


@pytest.fixture(scope="module")
def hf_whisper(whisper_package):
    """transformers' model on the same weights (the package's source, imported from CTranslate2)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from mmedge.exporter.importers import import_ctranslate2_whisper
    from mmedge.runtime import open_package

    source = open_package(whisper_package).manifest.source
    assert source["kind"] == "ctranslate2"
    import tempfile
    from pathlib import Path

    hf_dir = import_ctranslate2_whisper(Path(source["model"]), Path(tempfile.mkdtemp()) / "hf")
    return WhisperForConditionalGeneration.from_pretrained(hf_dir).eval(), WhisperProcessor.from_pretrained(hf_dir)


def hf_transcribe(hf_whisper, samples: np.ndarray, **kw) -> str:
    model, processor = hf_whisper
    features = processor(samples, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(features, **kw)
    return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


@pytest.fixture(scope="module")
def clips():
    return sorted(LIBRIVOX.glob("*.wav"))


@pytest.fixture(scope="module")
def references(hf_whisper, clips):
    return [hf_transcribe(hf_whisper, load_audio(c)) for c in clips]


@pytest.mark.parametrize("engine, variant", CASES)
def test_transcripts_equal_transformers_and_meet_the_wer_bar(whisper_package, clips, references, engine, variant):
    pipe = runtime.load(whisper_package, engine=engine, variant=variant, device="x86-cpu")
    texts = [pipe.transcribe(c).text for c in clips]
    assert texts == references
    truth = {line.rsplit("(", 1)[1].rstrip(")\n"): line.rsplit("(", 1)[0].replace("<s>", "").replace("</s>", "")
             for line in (LIBRIVOX / "transcription").read_text().splitlines() if "(" in line}
    errors = total = 0
    for clip, text in zip(clips, texts):
        e, n = wer(words(truth[clip.stem]), words(text))
        errors, total = errors + e, total + n
    assert total == 71 and errors / total <= 0.06, (errors, total)


def test_beam_search_equals_transformers(whisper_package, hf_whisper, clips):
    pipe = runtime.load(whisper_package, engine="onnxruntime", device="x86-cpu")
    samples = load_audio(clips[1])
    assert pipe.transcribe(samples, num_beams=3).text == hf_transcribe(hf_whisper, samples, num_beams=3)


def test_long_audio_runs_in_30s_windows(whisper_package, hf_whisper, clips):
    samples = np.concatenate([load_audio(c) for c in clips] * 2)
    assert len(samples) > 30 * 16000
    pipe = runtime.load(whisper_package, engine="openvino", device="x86-cpu")
    result = pipe.transcribe(samples)
    assert len(result.chunks) == -(-len(samples) // (30 * 16000))
    assert result.chunks[0]["end_s"] == 30.0
    assert result.chunks[0]["text"] == hf_transcribe(hf_whisper, samples[: 30 * 16000])
    assert result.text.startswith(result.chunks[0]["text"])


def test_raw_pcm_and_resampled_wav(whisper_package, hf_whisper, tmp_path):
    pipe = runtime.load(whisper_package, engine="litert", device="x86-cpu")
    samples = load_audio(RAW)
    text = pipe.transcribe(RAW).text
    assert text == hf_transcribe(hf_whisper, samples) and "forward" in text.lower()
    # the same speech as an 8 kHz stereo 16-bit WAV: resampled to 16 kHz on load
    pcm = (np.clip(samples[::2], -1, 1) * 32767).astype("<i2")
    path = tmp_path / "phone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.repeat(pcm[:, None], 2, axis=1).tobytes())
    assert "forward" in pipe.transcribe(path).text.lower()


def test_errors(whisper_package, tmp_path):
    pipe = runtime.load(whisper_package, engine="onnxruntime", device="x86-cpu")
    with pytest.raises(UsageError, match="English-only"):
        pipe.transcribe(RAW, language="de")
    fake = tmp_path / "photo.wav"
    fake.write_bytes(b"\xff\xd8\xff\xe0" + b"JFIF" * 100)
    with pytest.raises(InputError, match="photo.wav"):
        pipe.transcribe(fake)
    silence = pipe.transcribe(np.zeros(16000, np.float32))
    assert isinstance(silence.text, str)


def test_cli_audio(whisper_package, capsys):
    assert main(["run", str(whisper_package), "--device", "x86-cpu", "--audio", str(RAW), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "automatic-speech-recognition" and "forward" in out["text"].lower()
    assert out["ran"]["engine"] == "onnxruntime" and len(out["chunks"]) == 1
    assert out["chunks"][0]["language"] == "en"  # an English-only model decodes in English
    assert main(["run", str(whisper_package), "--device", "x86-cpu", "--prompt", "hi"]) == 2
    assert "--audio" in capsys.readouterr().err
