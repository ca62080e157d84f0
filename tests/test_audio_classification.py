"""Speech emotion (``audio-classification``): a tiny random-weight ``Wav2Vec2ForSequenceClassification`` (layer-norm
features, attention mask, weighted layer sum, SUPERB's four emotion labels) exported to ONNX, OpenVINO and TFLite
(dynamic and static), then real speech classified on every engine/variant: the logits equal transformers' on the
same weights (static: window by window, padded by the processor with its attention mask)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import ExportError, InputError, StaticShapeError
from mmedge.exporter import families
from mmedge.exporter.families.audio_classification import labels_of
from mmedge.runtime.preprocess.audio import load_audio

AUDIO = Path(__file__).resolve().parents[1] / "examples" / "data" / "audio"
CLIPS = [AUDIO / "goforward.wav", AUDIO / "librivox-0870.wav"]  # 2.8 s and 7.1 s of real speech
CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO runs bf16 by default on AVX512-BF16 CPUs
WINDOW = 32000  # the tiny model's static window (2 s)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return families.write_tiny_model("speech-emotion", tmp_path_factory.mktemp("tiny-ser") / "model")


@pytest.fixture(scope="module")
def package(tiny_dir, tmp_path_factory) -> Path:
    from mmedge.exporter.export import export

    return export(tiny_dir, tmp_path_factory.mktemp("ser-pkg") / "pkg", static=True)


@pytest.fixture(scope="module")
def hf(tiny_dir):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    return (AutoModelForAudioClassification.from_pretrained(tiny_dir).eval(),
            AutoFeatureExtractor.from_pretrained(tiny_dir))


_HF_CACHE: dict = {}


def hf_logits(hf, samples: np.ndarray, window: int | None = None) -> np.ndarray:
    """transformers' logits of one piece: as it is, or padded to ``window`` by the processor (with its mask)."""
    key = (samples.tobytes(), window)
    if key not in _HF_CACHE:  # every engine is compared with the same pieces: run transformers once per piece
        _HF_CACHE[key] = _hf_logits(hf, samples, window)
    return _HF_CACHE[key]


def _hf_logits(hf, samples: np.ndarray, window: int | None) -> np.ndarray:
    model, extractor = hf
    kwargs = {} if window is None else {"padding": "max_length", "max_length": window}
    inputs = extractor(samples, sampling_rate=16000, return_tensors="pt", **kwargs)
    with torch.no_grad():
        return model(**inputs).logits[0].numpy()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def load(package: Path, engine: str, variant: str):
    return runtime.load(package, engine=engine, variant=variant, device="x86-cpu",
                        options=F32 if engine == "openvino" else None)


@pytest.mark.parametrize("engine, variant", CASES)
def test_probabilities_equal_transformers(package, hf, engine, variant):
    pipe = load(package, engine, variant)
    assert (pipe.ran.engine, pipe.ran.variant, pipe.window) == (engine, variant,
                                                               WINDOW if variant.endswith("static") else None)
    for clip in CLIPS:
        samples = load_audio(clip)
        result = pipe.classify(clip)
        if pipe.window is None:  # the whole clip at once, as model(processor(clip))
            np.testing.assert_allclose(pipe.logits(samples), hf_logits(hf, samples), atol=1e-4)
            expected, chunks = softmax(hf_logits(hf, samples)), 1
        else:  # windows, each padded by the processor; probabilities averaged by real length
            pieces = [samples[s:s + WINDOW] for s in range(0, len(samples), WINDOW)]
            for piece in pieces:
                np.testing.assert_allclose(pipe.logits(piece), hf_logits(hf, piece, WINDOW), atol=1e-4)
            expected = np.average([softmax(hf_logits(hf, p, WINDOW)) for p in pieces], axis=0,
                                  weights=[len(p) for p in pieces])
            chunks = len(pieces)
        np.testing.assert_allclose(result.probs, expected, atol=1e-5)
        assert len(result.chunks) == chunks and result.chunks[-1]["end_s"] == pytest.approx(len(samples) / 16000)
        out = result.to_dict()
        assert out["task"] == "audio-classification" and out["ran"]["engine"] == engine
        assert out["label"] == out["results"][0]["label"] in ("neu", "hap", "ang", "sad")


def test_masked_padding_leaves_a_short_clip_unchanged(package, hf):
    """With an attention mask, the static window's padding is left out: a 1.3 s clip classifies as it does alone."""
    samples = load_audio(CLIPS[0])[:20800]
    static = load(package, "litert", "fp32-static")
    np.testing.assert_allclose(static.logits(samples), hf_logits(hf, samples), atol=1e-4)


def test_windows_and_short_audio(package, hf):
    dynamic = load(package, "onnxruntime", "fp32")
    samples = load_audio(CLIPS[1])
    result = dynamic.classify(samples, window_s=3.0)
    assert [round(c["end_s"] - c["start_s"], 2) for c in result.chunks] == [3.0, 3.0, 1.1]
    np.testing.assert_allclose(list(result.chunks[1]["probs"].values()), softmax(hf_logits(hf, samples[48000:96000])),
                               atol=1e-5)
    static = load(package, "onnxruntime", "fp32-static")
    assert len(static.classify(np.full(WINDOW + 399, 0.1, np.float32)).chunks) == 1  # 399-sample tail: no frame
    assert np.isfinite(static.classify(np.zeros(16000, np.float32)).probs).all()  # silence: no 0/0
    with pytest.raises(InputError, match="shorter than the model's receptive field; give at least 400 samples"):
        dynamic.classify(np.full(399, 0.1, np.float32))
    assert len(dynamic.classify(np.full(400, 0.1, np.float32)).probs) == 4
    with pytest.raises(StaticShapeError, match="longer than this static artifact's window"):
        static.classify(samples, window_s=3.0)
    with pytest.raises(InputError, match="window_s must be > 0"):
        dynamic.classify(samples, window_s=0)


def test_bad_audio_is_a_typed_error(package, tmp_path):
    pipe = load(package, "onnxruntime", "fp32")
    (tmp_path / "speech.wav").write_text("not audio\n" * 10)
    with pytest.raises(InputError, match="cannot read audio"):
        pipe.classify(tmp_path / "speech.wav")
    with pytest.raises(InputError, match="no audio samples"):
        pipe.classify(np.zeros(0, np.float32))


def test_model_without_attention_mask(tiny_dir, hf, tmp_path):
    """Group-norm models (wav2vec2-base style) take no mask: the graph has input_values only."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    from mmedge.exporter.export import export

    model = AutoModelForAudioClassification.from_pretrained(tiny_dir)
    model.save_pretrained(tmp_path / "model")
    extractor = AutoFeatureExtractor.from_pretrained(tiny_dir)
    extractor.return_attention_mask = False
    extractor.save_pretrained(tmp_path / "model")
    package = export(tmp_path / "model", tmp_path / "pkg", formats=["onnx"], static=True)
    pipe = load(package, "onnxruntime", "fp32-static")
    assert not pipe.with_mask
    samples = load_audio(CLIPS[0])[:20000]
    inputs = extractor(samples, sampling_rate=16000, padding="max_length", max_length=WINDOW, return_tensors="pt")
    assert "attention_mask" not in inputs
    with torch.no_grad():
        np.testing.assert_allclose(pipe.logits(samples), model(**inputs).logits[0].numpy(), atol=1e-4)


def test_labels_must_cover_every_class(tiny_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_dir)
    assert labels_of(config) == ["neu", "hap", "ang", "sad"]
    config.id2label = {0: "neu", 1: "hap", 3: "sad"}
    with pytest.raises(ExportError, match=r"must name the classes 0..n-1, got ids \[0, 1, 3\]"):
        labels_of(config)


def test_cli_classifies(package, capsys):
    assert main(["run", str(package), "--engine", "openvino", "--device", "x86-cpu", "--audio", str(CLIPS[0]),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = load(package, "openvino", "fp32").classify(CLIPS[0]).to_dict()
    assert [r["label"] for r in out["results"]] == [r["label"] for r in expected["results"]]
    assert main(["run", str(package), "--device", "x86-cpu"]) == 2
    assert "give --audio" in capsys.readouterr().err


def test_profiler_workload_agrees_with_the_reference(package):
    from mmedge.runtime.profiling import profile

    result = profile(package, engines=["openvino"], variants=["fp32"], runs=1, warmup=0,
                     progress=False)["results"][0]
    acc = result["accuracy"]
    assert acc["metric"] == "top1_agreement" and acc["value"] == 1.0 and acc["probs_cosine"] > 0.99999
    assert "goforward" in result["workload"]


def test_family_detection():
    spec = families.FAMILIES["audio-classification"]
    for model_type in ("wav2vec2", "hubert", "wavlm"):
        config = {"model_type": model_type, "architectures": [f"{model_type.capitalize()}ForSequenceClassification"]}
        assert families.detect_family(config) is spec
    assert families.detect_family({"model_type": "wav2vec2", "architectures": ["Wav2Vec2ForCTC"]}) is not spec
    assert not spec.matches({"model_type": "wav2vec2"})  # a pre-training checkpoint has no head
