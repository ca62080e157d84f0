"""Multimodal emotion: label mapping and late fusion (``runtime.pipelines.emotion``), then end to end with the
real face-api package and a tiny speech-emotion package (ONNX only: the per-engine checks live in
test_face_expression.py and test_audio_classification.py): the Python API, ``mmedge emotion`` and
examples/emotion.py agree with fusing the two packages' own results."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import ExportError, InputError, UsageError
from mmedge.runtime.pipelines.emotion import EMOTIONS, EmotionRecognizer, fuse, to_emotions

SPEECH = Path(__file__).resolve().parents[1] / "examples" / "data" / "audio" / "goforward.wav"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "emotion.py"

# ----------------------------------------------------------------------------------------- mapping, fusion


def test_labels_map_onto_the_common_set():
    superb = to_emotions({"neu": 0.1, "hap": 0.5, "ang": 0.3, "sad": 0.1})
    assert list(superb) == list(EMOTIONS) and superb["happy"] == 0.5 and superb["angry"] == 0.3
    assert superb["fearful"] == superb["surprised"] == 0.0
    merged = to_emotions({"Happy": 0.2, "excited": 0.3, "calm": 0.5})  # IEMOCAP merges excited into happy
    assert merged["happy"] == pytest.approx(0.5) and merged["neutral"] == pytest.approx(0.5)
    with pytest.raises(UsageError, match=r"labels \['boredom'\] have no emotion.*label_map"):
        to_emotions({"boredom": 0.4, "neu": 0.6})
    dropped = to_emotions({"boredom": 0.4, "neu": 0.3, "sad": 0.3}, {"boredom": None})
    assert dropped["neutral"] == pytest.approx(0.5) and sum(dropped.values()) == pytest.approx(1.0)
    assert to_emotions({"boredom": 1.0}, {"boredom": "neutral"})["neutral"] == 1.0
    with pytest.raises(UsageError, match="not emotions"):
        to_emotions({"neu": 1.0}, {"neu": "calmness"})


def test_linear_opinion_pool():
    face = to_emotions({"fearful": 0.8, "happy": 0.2})
    speech = to_emotions({"hap": 0.9, "sad": 0.1})
    fused, used = fuse(face, speech)
    assert used == {"face": 0.5, "speech": 0.5}
    assert fused["happy"] == pytest.approx(0.55) and fused["fearful"] == pytest.approx(0.4)  # speech can't say fear
    assert sum(fused.values()) == pytest.approx(1.0)
    fused, used = fuse(face, speech, {"face": 3, "speech": 1})
    assert used == {"face": 0.75, "speech": 0.25} and fused["happy"] == pytest.approx(0.375)
    assert fuse(None, speech, {"speech": 0.2}) == (speech, {"speech": 1.0})  # one modality: its own probabilities
    assert fuse(None, None) == ({}, {})
    with pytest.raises(UsageError, match="non-negative and named face/speech"):
        fuse(face, speech, {"face": -1})
    with pytest.raises(UsageError, match="non-negative and named face/speech"):
        fuse(face, speech, {"voice": 1})
    with pytest.raises(UsageError, match="are all 0"):
        fuse(face, None, {"face": 0})


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    from mmedge.exporter import families
    from mmedge.exporter.export import export

    root = tmp_path_factory.mktemp("emotion")
    try:
        face = export("face-api", root / "face", formats=["onnx"])
    except ExportError as e:  # no npm on this machine (CI installs it)
        pytest.skip(str(e))
    speech = export(families.write_tiny_model("speech-emotion", root / "tiny-ser"), root / "ser", formats=["onnx"])
    return {"face": face, "speech": speech}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    folder = tmp_path_factory.mktemp("emotion-photos")
    Image.fromarray(data.astronaut()).save(folder / "smile.png")
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(folder / "wall.png")
    return {"smile": folder / "smile.png", "wall": folder / "wall.png"}


def _own_results(packages, image, audio) -> tuple[dict, dict]:
    face = runtime.load(packages["face"], device="x86-cpu").recognize(image).faces[0].probs
    speech = runtime.load(packages["speech"], device="x86-cpu").classify(audio)
    return to_emotions(face), to_emotions(dict(zip(speech.labels, speech.probs)))


def test_fusion_of_two_packages(packages, photos):
    recognizer = EmotionRecognizer.load(packages["face"], packages["speech"], device="x86-cpu")
    face, speech = _own_results(packages, photos["smile"], SPEECH)
    both = recognizer.recognize(image=photos["smile"], audio=SPEECH)
    assert both.sources == {"face": face, "speech": speech} and both.weights == {"face": 0.5, "speech": 0.5}
    for emotion in EMOTIONS:
        assert both.probs[emotion] == pytest.approx(0.5 * face[emotion] + 0.5 * speech[emotion])
    out = both.to_dict()
    assert out["task"] == "emotion-recognition" and out["label"] == both.label
    assert out["face"]["faces"][0]["label"] == "happy" and out["speech"]["task"] == "audio-classification"
    assert recognizer.recognize(image=photos["smile"]).probs == face  # either modality alone
    assert recognizer.recognize(audio=SPEECH).probs == speech
    no_face = recognizer.recognize(image=photos["wall"], audio=SPEECH)  # the voice decides
    assert no_face.probs == speech and no_face.weights == {"speech": 1.0} and not no_face.face["found"]
    nothing = recognizer.recognize(image=photos["wall"])
    assert nothing.label is None and nothing.probs == {} and nothing.to_dict()["label"] is None


def test_fusion_usage_errors(packages, photos):
    face_only = EmotionRecognizer.load(packages["face"], device="x86-cpu")
    with pytest.raises(UsageError, match="audio was given but no speech-emotion package"):
        face_only.recognize(image=photos["smile"], audio=SPEECH)
    with pytest.raises(InputError, match="give an image, an audio recording, or both"):
        face_only.recognize()
    with pytest.raises(UsageError, match="must be a 'face-expression' package, got 'audio-classification'"):
        EmotionRecognizer.load(packages["speech"], device="x86-cpu")
    with pytest.raises(UsageError, match="give a face-expression package"):
        EmotionRecognizer()
    with pytest.raises(UsageError, match="non-negative"):
        EmotionRecognizer.load(packages["face"], weights={"face": -2}, device="x86-cpu")


def test_cli_emotion(packages, photos, capsys):
    common = ["emotion", "--face-package", str(packages["face"]), "--speech-package", str(packages["speech"]),
              "--device", "x86-cpu"]
    assert main([*common, "--image", str(photos["smile"]), "--audio", str(SPEECH), "--weights", "face=3,speech=1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    face, speech = _own_results(packages, photos["smile"], SPEECH)
    assert out["weights"] == {"face": 0.75, "speech": 0.25}
    assert out["probs"]["happy"] == pytest.approx(0.75 * face["happy"] + 0.25 * speech["happy"])
    assert main([*common, "--image", str(photos["wall"])]) == 0
    assert "no face found" in capsys.readouterr().out
    assert main([*common, "--image", str(photos["smile"]), "--weights", "face=lots"]) == 2
    assert "--weights takes face=W,speech=W" in capsys.readouterr().err


def test_example_logs_the_mood_of_each_capture(packages, photos, tmp_path):
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "visit1.png").write_bytes(photos["smile"].read_bytes())
    (captures / "visit1.wav").write_bytes(SPEECH.read_bytes())
    (captures / "visit2.png").write_bytes(photos["wall"].read_bytes())
    (captures / "visit3.wav").write_bytes(SPEECH.read_bytes())
    (captures / "broken.jpg").write_text("not an image")
    done = subprocess.run([sys.executable, "-X", "importtime", str(EXAMPLE), str(captures), "--face-package",
                           str(packages["face"]), "--speech-package", str(packages["speech"]), "--device", "x86-cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr  # the broken image is reported and skipped
    assert not re.search(r"\|\s+(torch|transformers|mmedge\.exporter)(\.|\s*$)", done.stderr, re.M)
    assert "broken: skipped: cannot read image" in done.stderr
    rows = {r["capture"]: r for r in csv.DictReader((captures / "mood.csv").open())}
    assert sorted(rows) == ["visit1", "visit2", "visit3"]
    recognizer = EmotionRecognizer.load(packages["face"], packages["speech"], device="x86-cpu")
    expected = recognizer.recognize(image=captures / "visit1.png", audio=captures / "visit1.wav")
    assert rows["visit1"]["emotion"] == expected.label and rows["visit1"]["face"].startswith("happy")
    assert rows["visit1"]["probability"] == f"{expected.probs[expected.label]:.3f}"
    assert rows["visit2"]["faces_found"] == "0" and rows["visit2"]["emotion"] == "no emotion"
    assert rows["visit3"]["faces_found"] == "" and rows["visit3"]["voice"] and not rows["visit3"]["face"]
    assert "3 capture(s) logged" in done.stdout and "1 skipped" in done.stdout
