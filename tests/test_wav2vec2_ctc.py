"""wav2vec2 CTC end to end: a tiny random-weight Wav2Vec2ForCTC exported to ONNX, OpenVINO and TFLite (dynamic
and static), then real LibriVox speech transcribed on every engine and variant must give the text transformers
gives for the same weights (static: transformers run window by window, padded the same way). The numpy
normalisation and CTC decoding are checked against ``Wav2Vec2FeatureExtractor`` / ``Wav2Vec2CTCTokenizer``.

The family and pipeline are registered by a fixture here (the registries are edited elsewhere).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mmedge import runtime
from mmedge.errors import InputError, StaticShapeError
from mmedge.exporter import families
from mmedge.exporter.families.wav2vec2_ctc import _ctc_vocabulary
from mmedge.runtime.preprocess.audio import load_audio
from mmedge.runtime.preprocess.ctc import AudioNormalizer, CtcVocabulary

LIBRIVOX = sorted(Path("/usr/share/pocketsphinx/test/data/librivox").glob("*.wav"))
needs_testdata = pytest.mark.skipif(not LIBRIVOX, reason="apt-get install pocketsphinx-testdata")
CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO runs bf16 by default on AVX512-BF16 CPUs


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return families.write_tiny_model("wav2vec2", tmp_path_factory.mktemp("tiny-w2v") / "model")


@pytest.fixture(scope="module")
def package(tiny_dir, tmp_path_factory) -> Path:
    from mmedge.exporter.export import export

    return export(tiny_dir, tmp_path_factory.mktemp("w2v-pkg") / "pkg", static=True)


@pytest.fixture(scope="module")
def hf(tiny_dir):
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    return Wav2Vec2ForCTC.from_pretrained(tiny_dir).eval(), Wav2Vec2Processor.from_pretrained(tiny_dir)


def load(package: Path, engine: str, variant: str):
    return runtime.load(package, engine=engine, variant=variant, device="x86-cpu",
                        options=F32 if engine == "openvino" else None)


def hf_ids(hf, samples: np.ndarray, window: int | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """transformers' argmax ids: whole utterance, or window by window (each padded to ``window`` by the processor,
    only the frames of its real samples kept). Returns all ids and the ids per window."""
    model, processor = hf
    pieces = [samples] if window is None else [samples[s:s + window] for s in range(0, len(samples), window)]
    per_window = []
    for piece in pieces:
        kwargs = {} if window is None else {"padding": "max_length", "max_length": window}
        inputs = processor(piece, sampling_rate=16000, return_tensors="pt", **kwargs)
        n = max(int(model._get_feat_extract_output_lengths(torch.tensor(len(piece)))), 0)
        with torch.no_grad():
            logits = model(inputs.input_values).logits[0, :n] if n else torch.zeros(0, model.config.vocab_size)
        per_window.append(logits.argmax(-1).numpy())
    return np.concatenate(per_window), per_window


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def hf_clips(hf) -> dict:
    """transformers' ids per (clip, window) for every LibriVox clip, whole and in 2 s windows."""
    return {(clip, window): hf_ids(hf, load_audio(clip), window) for clip in LIBRIVOX for window in (None, 32000)}


@needs_testdata
@pytest.mark.parametrize("engine, variant", CASES)
def test_transcripts_equal_transformers(package, hf, hf_clips, engine, variant):
    pipe = load(package, engine, variant)
    assert (pipe.ran.engine, pipe.ran.variant) == (engine, variant)
    assert pipe.window == (32000 if variant.endswith("static") else None)
    for clip in LIBRIVOX:
        ids, per_window = hf_clips[(clip, pipe.window)]
        result = pipe.transcribe(clip)
        assert result.text == hf[1].batch_decode(ids[None])[0], clip.name
        assert [c["text"] for c in result.chunks] == [hf[1].decode(w) for w in per_window]
        assert result.to_dict()["task"] == "automatic-speech-recognition"
        assert result.to_dict()["ran"]["engine"] == engine
    assert len(result.chunks) == (1 if pipe.window is None else -(-len(load_audio(clip)) // pipe.window))


@needs_testdata
def test_logits_match_transformers(package, hf):
    model, processor = hf
    samples = load_audio(LIBRIVOX[0])
    with torch.no_grad():
        expected = model(processor(samples, sampling_rate=16000, return_tensors="pt").input_values).logits[0].numpy()
    for engine in ("onnxruntime", "openvino"):  # dynamic graphs: the whole clip at once
        logits, positions, _ = load(package, engine, "fp32").frame_logits(LIBRIVOX[0])
        np.testing.assert_allclose(logits, expected, atol=1e-4)
        assert np.array_equal(positions, 320 * np.arange(len(expected)))
    window = 32000
    padded = processor(samples[:window], sampling_rate=16000, padding="max_length", max_length=window,
                       return_tensors="pt").input_values
    with torch.no_grad():
        expected = model(padded).logits[0].numpy()
    logits, _, windows = load(package, "litert", "fp32-static").frame_logits(LIBRIVOX[0])
    np.testing.assert_allclose(logits[:windows[0][2]], expected, atol=1e-4)


@needs_testdata
def test_word_timestamps_equal_transformers(package, hf, hf_clips):
    model, processor = hf
    hop = model.config.inputs_to_logits_ratio / 16000
    pipe = load(package, "onnxruntime", "fp32")
    words = 0
    for clip in LIBRIVOX:
        ids, _ = hf_clips[(clip, None)]
        expected = processor.tokenizer.decode(ids, output_word_offsets=True).word_offsets
        chunks = pipe.transcribe(clip, word_timestamps=True).chunks
        assert [c["text"] for c in chunks] == [w["word"] for w in expected]
        for got, want in zip(chunks, expected):
            assert got["start_s"] == pytest.approx(want["start_offset"] * hop)
            assert got["end_s"] == pytest.approx(want["end_offset"] * hop)
        words += len(chunks)
    assert words > 10


@needs_testdata
def test_shorter_window_on_a_static_artifact(package, hf):
    pipe = load(package, "onnxruntime", "fp32-static")
    samples = load_audio(LIBRIVOX[4])
    result = pipe.transcribe(samples, window_s=1.5)  # 1.5 s pieces, each padded to the 2 s window
    assert [(c["start_s"], c["end_s"]) for c in result.chunks][:2] == [(0.0, 1.5), (1.5, 3.0)]
    model, processor = hf
    ids = []
    for start in range(0, len(samples), 24000):
        piece = samples[start:start + 24000]
        values = processor(piece, sampling_rate=16000, padding="max_length", max_length=32000,
                           return_tensors="pt").input_values
        n = int(model._get_feat_extract_output_lengths(torch.tensor(len(piece))))
        with torch.no_grad():
            ids.append(model(values).logits[0, :n].argmax(-1).numpy())
    assert result.text == processor.decode(np.concatenate(ids))
    with pytest.raises(StaticShapeError, match="longer than this static artifact's window"):
        pipe.transcribe(samples, window_s=3.0)
    dynamic = load(package, "onnxruntime", "fp32").transcribe(samples, window_s=1.0)
    assert len(dynamic.chunks) == 4 and dynamic.chunks[-1]["end_s"] == pytest.approx(len(samples) / 16000)


# ----------------------------------------------------------------------------------- edge cases, errors


@pytest.mark.parametrize("engine, variant", [CASES[0], CASES[4]])
def test_silence_and_too_short_audio(package, hf, engine, variant):
    pipe = load(package, engine, variant)
    silence = np.zeros(16000, np.float32)
    ids, _ = hf_ids(hf, silence, pipe.window)
    assert pipe.transcribe(silence).text == hf[1].decode(ids)  # no NaN from 0/0: the epsilon keeps it finite
    for n in (1, 399):  # shorter than the 400-sample receptive field: no frame, nothing to say
        result = pipe.transcribe(np.full(n, 0.1, np.float32))
        assert result.text == "" and result.chunks == [{"start_s": 0.0, "end_s": n / 16000, "text": ""}]
    assert pipe.transcribe(np.full(400, 0.1, np.float32), word_timestamps=True).text == hf[1].decode(
        hf_ids(hf, np.full(400, 0.1, np.float32), pipe.window)[0])
    with pytest.raises(InputError, match="no audio samples"):
        pipe.transcribe(np.zeros(0, np.float32))


@needs_testdata
def test_cli_transcribes(package, capsys):
    from mmedge.cli.main import main

    pipe = load(package, "litert", "fp32-static")
    expected = pipe.transcribe(LIBRIVOX[2]).to_dict()
    assert main(["run", str(package), "--engine", "litert", "--device", "x86-cpu", "--audio", str(LIBRIVOX[2]),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["text"], out["chunks"], out["ran"]["variant"]) == (expected["text"], expected["chunks"], "fp32-static")


def test_non_audio_input_is_an_input_error(package, tmp_path):
    pipe = load(package, "onnxruntime", "fp32")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(InputError, match="cannot read audio"):
        pipe.transcribe(text)
    with pytest.raises(InputError, match="not found"):
        pipe.transcribe(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="window_s must be > 0"):
        pipe.transcribe(np.zeros(800, np.float32), window_s=0)


def test_manifest_states_the_contract(package):
    manifest = runtime.open_package(package).manifest
    assert (manifest.family, manifest.task) == ("wav2vec2-ctc", "automatic-speech-recognition")
    pre = manifest.preprocessing
    assert pre["audio"] == {"sampling_rate": 16000, "do_normalize": True, "normalize_epsilon": 1e-7,
                            "padding_value": 0.0, "return_attention_mask": False, "static_window_samples": 32000}
    assert pre["frames"]["inputs_to_logits_ratio"] == 320
    assert pre["ctc"]["id_to_token"][:6] == ["<pad>", "<s>", "</s>", "<unk>", "|", "a"]
    assert (pre["ctc"]["blank_id"], pre["ctc"]["word_delimiter_token"]) == (0, "|")
    for artifact in manifest.components["encoder"].artifacts:
        sig = artifact.default
        if artifact.static:
            assert sig.inputs[0].shape == (1, 32000) and sig.outputs[0].shape == (1, 99, 32)
        else:
            assert sig.inputs[0].shape == ("batch", "samples") and sig.outputs[0].shape == ("batch", "frames", 32)
            # honest dynamic check: a second batch size and a length that is not a multiple of the hop
            assert [c["sizes"]["samples"] for c in artifact.parity["checks"]] == [16000, 36800]
            assert [c["sizes"]["batch"] for c in artifact.parity["checks"]] == [1, 2]


# ------------------------------------------------------------------------------ numpy pre/post-processing


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("do_normalize", [True, False])
def test_normalizer_equals_feature_extractor(mask, do_normalize):
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor(do_normalize=do_normalize, return_attention_mask=mask, padding_value=0.25)
    ours = AudioNormalizer(do_normalize=do_normalize, return_attention_mask=mask, padding_value=0.25)
    rng = np.random.default_rng(0)
    for n in (1, 400, 16000, 23457):
        x = (rng.standard_normal(n) * 0.1 + 0.02).astype(np.float32)
        np.testing.assert_allclose(ours(x), fe(x, sampling_rate=16000).input_values[0], atol=1e-6, rtol=0)
        padded = fe(x, sampling_rate=16000, padding="max_length", max_length=32000).input_values[0]
        np.testing.assert_allclose(ours(x, pad_to=32000), padded, atol=1e-6, rtol=0)
    assert np.isfinite(ours(np.zeros(100, np.float32))).all()


def _tokenizer(tmp_path: Path, vocab: list[str], **kwargs):
    from transformers import Wav2Vec2CTCTokenizer

    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    return Wav2Vec2CTCTokenizer(str(path), **kwargs)


def test_ctc_decode_equals_tokenizer(hf, tmp_path):
    punct = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "N", "T", "'", ".", ",", "?"]
    tokenizers = [hf[1].tokenizer,
                  _tokenizer(tmp_path, punct, do_lower_case=True, clean_up_tokenization_spaces=True)]
    rng = np.random.default_rng(0)
    for tok in tokenizers:
        size = len(tok.get_vocab())
        vocab = CtcVocabulary(_ctc_vocabulary(tok, size + 2))  # 2 ids past the vocabulary decode as <unk>
        for trial in range(300):
            n = int(rng.integers(0, 40))
            # mostly blanks and delimiters, with repeats: the cases grouping and stripping must get right
            p = np.full(size + 2, 1.0)
            p[0], p[4] = size, size / 3
            ids = rng.choice(size + 2, n, p=p / p.sum())
            if trial % 3 == 0 and n:
                ids = np.repeat(ids, rng.integers(1, 4, n))
            for skip in (False, True):
                assert vocab.decode(ids, skip_special_tokens=skip) == tok.decode(ids, skip_special_tokens=skip), ids
            words = tok.decode(ids, output_word_offsets=True).word_offsets
            assert [(w.text, w.start, w.end) for w in vocab.words(ids)] == [
                (w["word"].lower() if tok.do_lower_case else w["word"], w["start_offset"], w["end_offset"])
                for w in words]


def test_family_matching_and_other_architectures(tmp_path):
    """HuBERT and WavLM CTC models export too (dynamic ONNX, checked at two shapes); pre-training checkpoints
    (no CTC head) are not taken for this family."""
    from transformers import HubertConfig, HubertForCTC, Wav2Vec2Processor, WavLMConfig, WavLMForCTC

    from mmedge.exporter.export import export
    from mmedge.exporter.families.wav2vec2_tiny import TINY, VOCAB, write_tiny_wav2vec2

    spec = families.FAMILIES["wav2vec2-ctc"]
    assert spec.matches({"model_type": "hubert", "architectures": ["HubertForCTC"]})
    assert not spec.matches({"model_type": "wav2vec2", "architectures": ["Wav2Vec2ForPreTraining"]})
    assert families.detect_family({"model_type": "wavlm", "architectures": ["WavLMForCTC"]}) is spec
    processor = Wav2Vec2Processor.from_pretrained(write_tiny_wav2vec2(tmp_path / "w2v"))
    for name, config_cls, model_cls in (("hubert", HubertConfig, HubertForCTC), ("wavlm", WavLMConfig, WavLMForCTC)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = model_cls(config_cls(vocab_size=len(VOCAB), pad_token_id=0, num_buckets=32, **TINY)).eval()
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
        pkg = export(tmp_path / name, tmp_path / f"{name}-pkg", formats=["onnx"])
        pipe = runtime.load(pkg, engine="onnxruntime", device="x86-cpu")
        assert isinstance(pipe.transcribe(np.sin(np.arange(9000, dtype=np.float32) / 9)).text, str)


BLOCKED_RUN = textwrap.dedent("""
    import sys
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "transformers", "optimum", "litert_torch", "tensorflow", "jax"}:
                raise ImportError(f"blocked in this test: {name}")
    sys.meta_path.insert(0, Blocker())
    from mmedge import runtime
    import numpy as np
    texts = [runtime.load(sys.argv[1], engine=e, device="x86-cpu").transcribe(np.ones(5000, np.float32)).text
             for e in ("onnxruntime", "openvino", "litert")]
    print(len(texts), sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers"}))
""")


def test_runtime_needs_no_torch(package):
    proc = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(package)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "3 []"


def test_tiny_model_is_deterministic(tiny_dir, tmp_path):
    from mmedge.exporter.families.wav2vec2_tiny import write_tiny_wav2vec2

    again = write_tiny_wav2vec2(tmp_path / "again")
    for name in ("model.safetensors", "vocab.json", "preprocessor_config.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name


def test_profiler_workload(package, profile_static):
    result = profile_static(package)
    assert result["generation"] is None  # CTC decodes in one pass: no tokens/s to report
    # fixed windows (static) see less context than the whole clip (dynamic), so the transcripts may differ: the
    # profile reports by how much; here it must be the WER of the two transcripts of the same input
    from mmedge.runtime.profiling.accuracy import word_error_rate
    from mmedge.runtime.profiling.workloads import speech_input

    audio, _ = speech_input()
    static, dynamic = (load(package, "onnxruntime", v).transcribe(audio).text for v in ("fp32-static", "fp32"))
    assert result["accuracy"]["metric"] == "wer"
    assert result["accuracy"]["value"] == pytest.approx(word_error_rate(static, dynamic))
