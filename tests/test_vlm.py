"""LLaVA-style vision-language chat on every engine and cache strategy: answers token-equal to
transformers' ``generate`` on the same image and question, and a second turn on the kept cache equal to
transformers fed the whole conversation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import InputError

CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
QUESTION = "what is in this picture?"


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from mmedge.exporter.export import export
    from mmedge.exporter.families import write_tiny_model

    root = tmp_path_factory.mktemp("llava")
    model_dir = write_tiny_model("llava", root / "model")
    return model_dir, export(model_dir, root / "pkg", static=True)


@pytest.fixture(scope="module")
def hf(llava):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    return (LlavaForConditionalGeneration.from_pretrained(llava[0]).eval(),
            AutoProcessor.from_pretrained(llava[0], use_fast=False))


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return np.asarray(data.chelsea())


def hf_generate(hf, input_ids: torch.Tensor, pixel_values: torch.Tensor, n: int) -> list[int]:
    model, _ = hf
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values,
                             max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, input_ids.shape[1]:].tolist()


def hf_first_turn(hf, photo, question):
    _, processor = hf
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor(images=photo, text=processor.apply_chat_template(messages, add_generation_prompt=True),
                     return_tensors="pt")


@pytest.mark.parametrize("engine, variant", CASES)
def test_two_turns_equal_transformers(llava, hf, photo, engine, variant):
    pipe = runtime.load(llava[1], engine=engine, variant=variant, device="x86-cpu")
    inputs = hf_first_turn(hf, photo, QUESTION)
    chat = pipe.chat(photo)
    first = chat.send(QUESTION, max_new_tokens=6, min_new_tokens=6)
    assert first.tokens == hf_generate(hf, inputs.input_ids, inputs.pixel_values, 6)
    second = chat.send("and the colour?", max_new_tokens=5, min_new_tokens=5)
    tok = hf[1].tokenizer
    follow = tok("<|im_end|>\n<|im_start|>user\nand the colour?<|im_end|>\n<|im_start|>assistant\n",
                 add_special_tokens=False).input_ids
    history = torch.tensor([inputs.input_ids[0].tolist() + first.tokens + follow])
    assert second.tokens == hf_generate(hf, history, inputs.pixel_values, 5)


def test_answer_and_cli(llava, hf, photo, tmp_path, capsys):
    from PIL import Image

    pipe = runtime.load(llava[1], engine="onnxruntime", device="x86-cpu")
    result = pipe.answer(photo, QUESTION, max_new_tokens=4, min_new_tokens=4)
    inputs = hf_first_turn(hf, photo, QUESTION)
    assert result.tokens == hf_generate(hf, inputs.input_ids, inputs.pixel_values, 4)
    path = tmp_path / "cat.png"
    Image.fromarray(photo).save(path)
    assert main(["run", str(llava[1]), "--device", "x86-cpu", "--image", str(path), "--question", QUESTION,
                 "--max-new-tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "image-text-to-text" and len(out["tokens"]) <= 4


def test_bad_inputs(llava, tmp_path):
    pipe = runtime.load(llava[1], engine="onnxruntime", device="x86-cpu")
    bad = tmp_path / "x.jpg"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="x.jpg"):
        pipe.answer(bad, QUESTION)
    with pytest.raises(InputError, match="empty"):
        pipe.chat(np.zeros((8, 8, 3), np.uint8)).send("  ")


def test_profiler_workload(llava, profile_static):
    result = profile_static(llava[1])
    assert result["generation"]["new_tokens"] >= 1 and result["generation"]["source"] == "pipeline timings"
    assert result["accuracy"]["metric"] == "token_agreement" and result["accuracy"]["value"] == 1.0
