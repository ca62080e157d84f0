"""Image captioning end to end on tiny random-weight models (ViT + GPT-2 vision-encoder-decoder, BLIP): caption
tokens identical to transformers' ``generate`` on the same weights and real photos, greedy and beam search, on
every engine with both cache strategies; numpy image pre-processing equal to the HF processors; BLIP's
conditional prompt; HF's length rules; typed errors; what the manifest states.

Each tiny model is exported once per module (all formats, static too: ~1 min each)."""

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
from mmedge.errors import InputError, StaticShapeError, UsageError

CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
VARIANTS = ("vit-gpt2", "blip")
FAMILY = {"vit-gpt2": "vision-encoder-decoder", "blip": "blip-captioning"}
PROMPT = "a picture of"


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    from mmedge.exporter.families import write_tiny_model

    root = tmp_path_factory.mktemp("tiny-captioners")
    return {v: write_tiny_model(v, root / v) for v in VARIANTS}


@pytest.fixture(scope="module")
def packages(tiny_dirs, tmp_path_factory) -> dict[str, Path]:
    """Every format, dynamic and static caches; the family is detected from config.json."""
    from mmedge.exporter.export import export

    root = tmp_path_factory.mktemp("caption-pkg")
    return {v: export(d, root / v, static=True) for v, d in tiny_dirs.items()}


@pytest.fixture(scope="module")
def hf(tiny_dirs):
    """transformers' models and processors on the same weights, and a memoised reference captioner."""
    from transformers import (AutoTokenizer, BlipForConditionalGeneration, BlipProcessor, ViTImageProcessor,
                              VisionEncoderDecoderModel)

    models = {"vit-gpt2": (VisionEncoderDecoderModel.from_pretrained(tiny_dirs["vit-gpt2"]).eval(),
                           ViTImageProcessor.from_pretrained(tiny_dirs["vit-gpt2"]),
                           AutoTokenizer.from_pretrained(tiny_dirs["vit-gpt2"])),
              "blip": (BlipForConditionalGeneration.from_pretrained(tiny_dirs["blip"]).eval(),
                       BlipProcessor.from_pretrained(tiny_dirs["blip"]), None)}

    @lru_cache(maxsize=None)
    def caption(variant: str, image: str, prompt: str | None = None, eos: int | None = None,
                **settings) -> tuple[list[int], str]:
        """(new tokens without the final eos, decoded text) from HF's ``generate`` with ``settings``;
        ``eos`` replaces the model's stop token (for BLIP: ``text_config.sep_token_id``, what its generate reads)."""
        model, processor, tokenizer = models[variant]
        picture = Image.open(image)
        with torch.no_grad():
            if variant == "vit-gpt2":
                stop = eos if eos is not None else model.generation_config.eos_token_id
                pixels = processor(picture, return_tensors="pt").pixel_values
                out = model.generate(pixels, eos_token_id=stop, **settings)[0].tolist()
                start, decode = 1, tokenizer.decode
            else:
                text_config = model.config.text_config
                default = text_config.sep_token_id
                stop = eos if eos is not None else default
                inputs = processor(images=picture, text=prompt, return_tensors="pt")
                text_config.sep_token_id = stop
                try:
                    out = model.generate(**inputs, **settings)[0].tolist()
                finally:
                    text_config.sep_token_id = default
                start = 1 if prompt is None else inputs.input_ids.shape[1] - 1  # [CLS]->[DEC], [SEP] dropped
                decode = processor.decode
        if len(out) > start and out[-1] == stop:  # a stand-in stop token is no special token: not in the text
            out = out[:-1]
        return out[start:], decode(out, skip_special_tokens=True).strip()

    caption.models = models
    return caption


@pytest.fixture(scope="module")
def astronaut(photos) -> str:
    return str(photos / "astronaut.jpg")


@pytest.fixture(scope="module")
def chelsea(photos) -> str:
    return str(photos / "chelsea.jpg")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("engine, shape", CASES)
def test_captions_equal_transformers_generate(packages, hf, astronaut, chelsea, variant, engine, shape):
    pipe = runtime.load(packages[variant], engine=engine, variant=shape, device="x86-cpu")
    assert pipe.ran.engine == engine and pipe.ran.variant == shape and pipe.family == FAMILY[variant]
    prompt = PROMPT if variant == "blip" else None  # BLIP: conditional beams, unconditional greedy
    greedy = pipe.caption(astronaut, max_new_tokens=12)
    assert (greedy.tokens, greedy.text) == hf(variant, astronaut, max_new_tokens=12)
    beams = pipe.caption(chelsea, prompt=prompt, max_new_tokens=10, num_beams=3)
    assert (beams.tokens, beams.text) == hf(variant, chelsea, prompt, max_new_tokens=10, num_beams=3)
    # the image matters: another photo, another caption (the cross keys/values reach the decoder)
    assert pipe.caption(chelsea, max_new_tokens=12).tokens != greedy.tokens


@pytest.mark.parametrize("variant", VARIANTS)
def test_stopping_at_eos_and_default_lengths_follow_transformers(packages, hf, astronaut, chelsea, variant):
    """Random weights rarely pick the model's eos: another token is made the stop token, in both. Without
    length settings, HF's defaults apply (max_length=20 -> 20 new tokens within the position range)."""
    pipe = runtime.load(packages[variant], engine="onnxruntime", variant="fp32", device="x86-cpu")
    full = pipe.caption(astronaut, max_new_tokens=12).tokens
    eos = full[3]
    for settings in (dict(max_new_tokens=12), dict(max_new_tokens=12, num_beams=3, length_penalty=0.6)):
        result = pipe.caption(astronaut, eos_token_id=eos, **settings)
        assert (result.tokens, result.text) == hf(variant, astronaut, eos=eos, **settings)
        assert eos not in result.tokens and len(result.tokens) < 12
    default = pipe.caption(chelsea)
    assert (default.tokens, default.text) == hf(variant, chelsea)
    assert pipe.caption(chelsea, max_length=9).tokens == hf(variant, chelsea, max_length=9)[0]


def test_conditional_blip_prompt(packages, hf, astronaut, chelsea):
    pipe = runtime.load(packages["blip"], engine="litert", device="x86-cpu")
    assert pipe.prompt_ids(None) == [pipe.start_token_id]
    result = pipe.caption(astronaut, prompt=PROMPT, max_new_tokens=8)
    assert (result.tokens, result.text) == hf("blip", astronaut, PROMPT, max_new_tokens=8)
    assert result.text.startswith(PROMPT + " ") or result.text.startswith(PROMPT)
    ids = pipe.prompt_ids(PROMPT)  # [DEC] + the prompt's words: [CLS] replaced, [SEP] dropped
    assert ids[0] == pipe.start_token_id and len(ids) > 2
    assert pipe.tokenizer.decode(ids[1:]) == PROMPT
    # longer than the static prefill bucket (8): prefilled in chunks, still equal
    long_prompt = "a black and white portrait of an old woman smiling at the camera on"
    assert len(pipe.prompt_ids(long_prompt)) > 8
    result = pipe.caption(chelsea, prompt=long_prompt, max_new_tokens=6, num_beams=3)
    assert result.tokens == hf("blip", chelsea, long_prompt, max_new_tokens=6, num_beams=3)[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_preprocessing_equals_the_hf_processor(packages, hf, photos, variant):
    from mmedge.runtime.preprocess.image import fixed_size_preprocessor

    pipe = runtime.load(packages[variant], engine="onnxruntime", device="x86-cpu")
    processor = hf.models[variant][1]
    processor = getattr(processor, "image_processor", processor)
    names = ["astronaut", "chelsea", "coffee", "rocket"] + (["camera"] if variant == "blip" else [])  # camera: gray
    for name in names:
        path = photos / f"{name}.jpg"
        expected = processor(Image.open(path), return_tensors="np").pixel_values
        got = pipe.image_preprocessor([path])
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-6, name
    # the real checkpoints' sizes (ViT 224 bilinear, BLIP 384 bicubic) from the class defaults and a legacy config
    cls = type(processor)
    configs = [{"image_processor_type": cls.__name__}]
    if variant == "vit-gpt2":  # nlpconnect/vit-gpt2-image-captioning's preprocessor_config.json
        configs.append({"feature_extractor_type": "ViTFeatureExtractor", "size": 224, "resample": 2,
                        "do_normalize": True, "do_resize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    for config in configs:
        hf_processor = cls(**{k: v for k, v in config.items() if not k.endswith("_type")})
        ours = fixed_size_preprocessor(config)
        assert ours.do_center_crop is False and ours.size == hf_processor.size
        for name in ("astronaut", "coffee"):
            path = photos / f"{name}.jpg"
            expected = hf_processor(Image.open(path), return_tensors="np").pixel_values
            assert np.abs(ours([path]) - expected).max() <= 1e-6, (config, name)


def test_errors_are_typed(packages, astronaut, tmp_path):
    vit = runtime.load(packages["vit-gpt2"], engine="onnxruntime", device="x86-cpu")
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image\n" * 20)
    with pytest.raises(InputError, match="notes.jpg"):
        vit.caption(fake)
    with pytest.raises(InputError, match="not found"):
        vit.caption(tmp_path / "missing.png")
    with pytest.raises(UsageError, match="no text prompt"):
        vit.caption(astronaut, prompt="a picture of")
    with pytest.raises(UsageError, match="num_beams"):
        vit.caption(astronaut, num_beams=0)
    static = runtime.load(packages["blip"], engine="litert", device="x86-cpu")
    calls = []
    static.decoder_runner.signature("decode").session.run = lambda *a, **k: calls.append(a)
    with pytest.raises(StaticShapeError, match="max_length=64"):
        static.caption(astronaut, prompt=PROMPT, max_new_tokens=100)
    assert calls == []


def test_manifest_states_the_contract(packages, tiny_dirs, hf):
    from mmedge.runtime import open_package

    for variant, path in packages.items():
        m = open_package(path).manifest
        assert (m.family, m.task) == (FAMILY[variant], "image-to-text")
        assert set(m.components) == {"encoder", "decoder"}
        for component in m.components.values():
            assert {(a.format, a.variant) for a in component.artifacts} == {
                ("onnx", "fp32"), ("onnx", "fp32-static"), ("openvino", "fp32"), ("openvino", "fp32-static"),
                ("tflite", "fp32-static")}
            for artifact in component.artifacts:
                assert artifact.parity["passed"]
                if not artifact.static:  # checked at more than one batch size: no silently fixed batch
                    assert len({c["sizes"]["batch"] for c in artifact.parity["checks"]}) >= 2
        gen = m.generation
        assert gen["cache"]["max_cache_len"] == 64 and gen["cache"]["prompt_buckets"] == [8]
        decoder = m.components["decoder"].find("tflite", "fp32-static")
        assert set(decoder.signatures) == {"decode", "prefill_8"}
        image = m.preprocessing["image"]
        assert image["do_center_crop"] is False and image["size"] == {"height": 32, "width": 32}
        assert m.preprocessing["text"]["tokenizer_file"] in m.files
        config = hf.models[variant][0].config
        if variant == "blip":
            text = config.text_config
            assert gen["prompt"]["start_token_id"] == text.bos_token_id
            assert gen["config"]["eos_token_id"] == text.sep_token_id != text.eos_token_id
            assert gen["config"]["max_new_tokens"] == 20 and gen["config"]["max_length"] == text.max_position_embeddings
            assert image["resample"] == 3 and gen["prompt"]["text_prompt"]["drop_last"] is True
        else:
            assert gen["prompt"] == {"start_token_id": config.decoder_start_token_id, "text_prompt": None}
            assert image["resample"] == 2 and gen["config"]["max_length"] == 16


def test_result_dict_and_slim_runtime(packages, astronaut):
    """``to_dict`` has the task's keys; the pipeline runs with torch and transformers unimportable."""
    pipe = runtime.load(packages["blip"], engine="onnxruntime", device="x86-cpu")
    result = pipe.caption(astronaut, max_new_tokens=5).to_dict()
    assert set(result) == {"task", "text", "tokens", "ran"} and result["task"] == "image-to-text"
    assert result["ran"]["engine"] == "onnxruntime"
    code = f"""
import sys
for name in ("torch", "transformers"):
    sys.modules[name] = None
from mmedge import runtime
pipe = runtime.load({str(packages["blip"])!r}, engine="onnxruntime", device="x86-cpu")
print(pipe.caption({astronaut!r}, max_new_tokens=5).tokens)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(result["tokens"])


def test_cli_caption(packages, tmp_path, capsys):
    from PIL import Image
    from skimage import data

    from mmedge.cli.main import main

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    assert main(["run", str(packages["vit-gpt2"]), "--device", "x86-cpu", "--image", str(path),
                 "--max-new-tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "image-to-text" and 0 < len(out["tokens"]) <= 4


def test_profiler_workload(packages, profile_static):
    """``mmedge profile`` captions with the decoder clock and compares tokens with onnxruntime fp32."""
    result = profile_static(packages["blip"])
    assert result["generation"]["new_tokens"] >= 1 and result["generation"]["source"] == "decoder calls"
    assert result["accuracy"]["metric"] == "token_agreement" and result["accuracy"]["value"] == 1.0
