"""BLIP visual question answering (``blip-vqa``) end to end on a tiny random-weight ``BlipForQuestionAnswering``:
answer tokens identical to transformers' ``generate`` on the same weights and real photos, greedy and beam search,
on every engine with dynamic and static shapes (questions of several lengths: padded to the static question
length, exactly at it, and over it); family detection beside BLIP captioning; what the manifest states; typed
errors; the CLI; the slim runtime.

The tiny model is exported once per module (every format, static variants too: ~40 s of the module's time)."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import InputError, StaticShapeError, UsageError

CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
MAX_QUESTION_LEN = 16  # blip_vqa_tiny.TINY_MAX_QUESTION_LEN
#: With the tiny tokenizer: 6, 11 and 14 tokens (padded in static variants), 16 (exactly the static length).
# Token counts with the tiny WordPiece vocabulary ([CLS] and [SEP] included): 6, 15, 14 and 16 = the static limit.
QUESTIONS = ("is it red?", "what is the cat doing?", "is the woman smiling at the camera?",
             "what is the woman smiling at?")
TOO_LONG = "what is the woman holding in her hand?"  # 28 tokens


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """Written through the CLI (``mmedge tiny-model blip-vqa DIR``), as a user would."""
    out = tmp_path_factory.mktemp("tiny-blip-vqa") / "model"
    assert main(["tiny-model", "blip-vqa", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def package(tiny_dir, tmp_path_factory) -> Path:
    """Every format, dynamic and static; the family is detected from config.json."""
    from mmedge.exporter.export import export

    return export(tiny_dir, tmp_path_factory.mktemp("vqa-pkg") / "pkg", static=True)


@pytest.fixture(scope="module")
def pipes(package) -> dict:
    return {(e, s): runtime.load(package, engine=e, variant=s, device="x86-cpu") for e, s in CASES}


@pytest.fixture(scope="module")
def hf(tiny_dir):
    """A memoised reference: (answer tokens without the start token and the final stop token, decoded text)
    from transformers' ``BlipForQuestionAnswering.generate``; ``eos`` stands in for ``text_config.sep_token_id``
    (the stop token its generate reads)."""
    from transformers import BlipForQuestionAnswering, BlipProcessor

    model = BlipForQuestionAnswering.from_pretrained(tiny_dir).eval()
    processor = BlipProcessor.from_pretrained(tiny_dir)

    @lru_cache(maxsize=None)
    def answer(image: str, question: str, eos: int | None = None, **settings) -> tuple[list[int], str]:
        text_config = model.config.text_config
        default = text_config.sep_token_id
        stop = default if eos is None else eos
        inputs = processor(images=Image.open(image), text=question, return_tensors="pt")
        text_config.sep_token_id = stop
        try:
            with torch.no_grad():
                out = model.generate(**inputs, **settings)[0].tolist()
        finally:
            text_config.sep_token_id = default
        assert out[0] == text_config.bos_token_id
        out = out[1:]
        if out and out[-1] == stop:  # a stand-in stop token is no special token: not in the text
            out = out[:-1]
        return out, processor.decode(out, skip_special_tokens=True).strip()

    answer.model, answer.processor = model, processor
    return answer


@pytest.fixture(scope="module")
def chelsea(photos) -> str:
    """A real photo (451x300 from scikit-image); ``photos / "astronaut.jpg"`` is the second one the tests use."""
    return str(photos / "chelsea.jpg")


def test_question_lengths_cover_the_static_contract(pipes):
    pipe = pipes[("onnxruntime", "fp32-static")]
    assert pipe.static_question_len == MAX_QUESTION_LEN and pipes[("onnxruntime", "fp32")].static_question_len is None
    lengths = [len(pipe.question_ids(q)) for q in QUESTIONS]
    assert lengths[-1] == MAX_QUESTION_LEN and min(lengths) < MAX_QUESTION_LEN - 8, lengths
    assert len(pipes[("onnxruntime", "fp32")].question_ids(TOO_LONG)) > MAX_QUESTION_LEN


@pytest.mark.parametrize("engine, shape", CASES)
def test_answers_equal_transformers_generate(pipes, hf, chelsea, photos, engine, shape):
    pipe, astronaut = pipes[(engine, shape)], str(photos / "astronaut.jpg")
    assert (pipe.ran.engine, pipe.ran.variant, pipe.family, pipe.task) == (engine, shape, "blip-vqa",
                                                                             "visual-question-answering")
    for question in QUESTIONS:
        result = pipe.answer(chelsea, question, max_new_tokens=8)
        assert (result.tokens, result.text) == hf(chelsea, question, max_new_tokens=8), question
        assert result.ran.engine == engine and result.prompt_tokens == len(pipe.question_ids(question))
    beams = pipe.answer(astronaut, QUESTIONS[1], max_new_tokens=6, num_beams=3)
    assert (beams.tokens, beams.text) == hf(astronaut, QUESTIONS[1], max_new_tokens=6, num_beams=3)
    # image and question both reach the decoder's cross keys/values (the answers of random weights may coincide)
    ids = [pipe.question_ids(q) for q in QUESTIONS[:2]]
    keys = [pipe.encode(image, i)["cross_values_0"][..., :5, :] for image in (chelsea, astronaut) for i in ids]
    assert all(np.abs(keys[0] - other).max() > 1e-3 for other in keys[1:])


def test_stopping_and_default_lengths_follow_transformers(pipes, hf, chelsea, photos):
    """Random weights rarely pick [SEP]: another token is made the stop token, in both. Without length settings,
    HF's defaults apply (20 new tokens within the position range); an explicit max_length counts the start token."""
    pipe, astronaut = pipes[("onnxruntime", "fp32-static")], str(photos / "astronaut.jpg")
    full = pipe.answer(astronaut, QUESTIONS[0], max_new_tokens=12).tokens
    eos = full[2]
    for settings in (dict(max_new_tokens=12), dict(max_new_tokens=12, num_beams=3, length_penalty=0.6)):
        result = pipe.answer(astronaut, QUESTIONS[0], eos_token_id=eos, **settings)
        assert (result.tokens, result.text) == hf(astronaut, QUESTIONS[0], eos=eos, **settings)
        assert eos not in result.tokens and result.stop_reason == "eos"
    default = pipes[("openvino", "fp32")].answer(chelsea, QUESTIONS[2])
    assert (default.tokens, default.text) == hf(chelsea, QUESTIONS[2])
    assert pipe.answer(chelsea, QUESTIONS[2], max_length=6).tokens == hf(chelsea, QUESTIONS[2], max_length=6)[0]


def test_detect_family_tells_vqa_from_captioning(tiny_dir):
    from mmedge.exporter.families import detect_family

    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["architectures"] == ["BlipForQuestionAnswering"]
    assert detect_family(config).name == "blip-vqa"
    assert detect_family({**config, "architectures": ["BlipForConditionalGeneration"]}).name == "blip-captioning"
    # a BLIP config without architectures keeps meaning captioning, as before this family existed
    assert detect_family({k: v for k, v in config.items() if k != "architectures"}).name == "blip-captioning"


def test_manifest_states_the_contract(package, hf):
    from mmedge.runtime import open_package

    m = open_package(package).manifest
    assert (m.family, m.task) == ("blip-vqa", "visual-question-answering")
    artifacts = {(name, a.format, a.variant): a for name, c in m.components.items() for a in c.artifacts}
    assert set(artifacts) == {(name, *case) for name in ("encoder", "decoder") for case in
                              (("onnx", "fp32"), ("onnx", "fp32-static"), ("openvino", "fp32"),
                               ("openvino", "fp32-static"), ("tflite", "fp32-static"))}
    assert all(a.parity["passed"] for a in artifacts.values())
    for artifact in (a for a in artifacts.values() if not a.static):  # checked at several batches and lengths
        for dim in ("batch", "question"):
            assert len({c["sizes"][dim] for c in artifact.parity["checks"]}) >= 2
    encoder = m.components["encoder"].find("tflite", "fp32-static")
    shapes = {t.name: list(t.shape) for t in encoder.inputs}
    assert shapes["input_ids"] == shapes["attention_mask"] == [1, MAX_QUESTION_LEN]
    assert shapes["pixel_values"] == [1, 3, 32, 32]
    decoder = m.components["decoder"].find("tflite", "fp32-static")
    assert set(decoder.signatures) == {"decode"}  # the decoder prompt is the start token alone
    inputs = {t.name: list(t.shape) for t in decoder.inputs}  # per layer, keys transposed: [B, H, D, Q]
    assert inputs["cross_keys_1"][3] == inputs["cross_values_1"][2] == inputs["encoder_attention_mask"][1] \
        == MAX_QUESTION_LEN
    dynamic = {t.name: list(t.shape) for t in m.components["decoder"].find("onnx", "fp32").inputs}
    assert dynamic["cross_keys_0"][3] == dynamic["encoder_attention_mask"][1] == "question"
    text_config = hf.model.config.text_config
    gen = m.generation
    assert gen["prompt"] == {"start_token_id": text_config.bos_token_id, "text_prompt": None}
    assert gen["config"]["eos_token_id"] == text_config.sep_token_id != text_config.eos_token_id
    assert gen["config"]["max_new_tokens"] == 20 and gen["cache"]["max_cache_len"] == 32
    text = m.preprocessing["text"]
    assert text["max_question_len"] == MAX_QUESTION_LEN and text["tokenizer_file"] in m.files


def test_errors_are_typed(package, pipes, chelsea, tmp_path):
    pipe = runtime.load(package, engine="litert", device="x86-cpu")  # its sessions are patched below
    fake = tmp_path / "snapshot.jpg"
    fake.write_text("this is not an image\n" * 20)
    with pytest.raises(InputError, match="snapshot.jpg"):
        pipe.answer(fake, QUESTIONS[0])
    for empty in ("", "   ", None):
        with pytest.raises(InputError, match="question is empty"):
            pipe.answer(chelsea, empty)
    with pytest.raises(StaticShapeError, match="max_length=32"):  # more than the static cache holds
        pipe.answer(chelsea, QUESTIONS[0], max_new_tokens=40)
    calls = []
    for runner in (pipe.encoder, pipe.decoder_runner):
        for signature in runner.signatures.values():
            signature.session.run = lambda *a, **k: calls.append(a)
    with pytest.raises(StaticShapeError, match=f"at most {MAX_QUESTION_LEN} .*shorter question"):
        pipe.answer(chelsea, TOO_LONG)
    with pytest.raises(UsageError, match="num_beams"):
        pipe.answer(chelsea, QUESTIONS[0], num_beams=0)
    with pytest.raises(UsageError, match="answer\\(image, question\\)"):
        pipe.caption(chelsea)
    assert calls == []  # every refusal came before any engine ran
    # the dynamic variant takes the long question
    assert pipes[("onnxruntime", "fp32")].answer(chelsea, TOO_LONG, max_new_tokens=3).tokens


def test_cli_answers_and_requires_a_question(package, hf, chelsea, capsys):
    common = ["run", str(package), "--device", "x86-cpu", "--image", chelsea]
    assert main([*common, "--question", QUESTIONS[1], "--max-new-tokens", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "visual-question-answering" and out["ran"]["engine"]
    assert (out["tokens"], out["text"]) == hf(chelsea, QUESTIONS[1], max_new_tokens=5)
    assert main([*common, "--question", QUESTIONS[1], "--max-new-tokens", "5", "--beams", "2"]) == 0
    printed = capsys.readouterr().out
    assert "ran: engine" in printed
    assert main(common) == 2
    assert "add --question" in capsys.readouterr().err
    assert main([*common, "--chat"]) == 2
    assert "--chat" in capsys.readouterr().err


def test_slim_runtime(package, pipes, chelsea):
    """The pipeline runs with torch and transformers unimportable, with the same answer."""
    expected = pipes[("onnxruntime", "fp32")].answer(chelsea, QUESTIONS[1], max_new_tokens=5).tokens
    code = f"""
import sys
for name in ("torch", "transformers"):
    sys.modules[name] = None
from mmedge import runtime
pipe = runtime.load({str(package)!r}, engine="onnxruntime", variant="fp32", device="x86-cpu")
print(pipe.answer({chelsea!r}, {QUESTIONS[1]!r}, max_new_tokens=5).tokens)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(expected)


def test_profiler_workload(package, profile_static):
    result = profile_static(package)
    assert result["generation"]["new_tokens"] >= 1 and result["generation"]["time_to_first_token_ms"] > 0
    assert result["accuracy"]["metric"] == "token_agreement" and result["accuracy"]["value"] == 1.0
