"""CLIP end to end on every engine: the same zero-shot probabilities as transformers' CLIPModel on real
photos, on onnxruntime, OpenVINO and LiteRT, dynamic and static variants; what ran is reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmedge import runtime
from mmedge.errors import InputError, StaticShapeError

LABELS = ["a photo of a cat", "a photo of a dog", "a rocket on a launch pad", "a cup of coffee"]
CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]


@pytest.fixture(scope="module")
def reference(tiny_clip_dir, photos):
    """transformers' CLIPModel probabilities and embeddings for each photo."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    out = {}
    for path in sorted(photos.iterdir()):
        inputs = processor(text=LABELS, images=Image.open(path), return_tensors="pt", padding=True)
        with torch.no_grad():
            result = model(**inputs)
        out[path.name] = (result.logits_per_image.softmax(-1)[0].numpy(), result.text_embeds.numpy())
    return out


@pytest.mark.parametrize("engine, variant", CASES)
def test_zero_shot_matches_transformers(clip_package, photos, reference, engine, variant):
    pipe = runtime.load(clip_package, engine=engine, variant=variant, device="x86-cpu")
    assert pipe.ran.engine == engine and pipe.ran.variant == variant
    for path in sorted(photos.iterdir()):
        result = pipe.zero_shot(path, LABELS)
        expected_probs, _ = reference[path.name]
        np.testing.assert_allclose(result.probs, expected_probs, atol=1e-4)
        assert result.to_dict()["ran"]["engine"] == engine


def test_engines_agree_within_1e4(clip_package, photos):
    probs = {}
    for engine, variant in CASES:
        pipe = runtime.load(clip_package, engine=engine, variant=variant, device="x86-cpu")
        probs[(engine, variant)] = np.array([pipe.zero_shot(p, LABELS).probs for p in sorted(photos.iterdir())])
    base = probs[CASES[0]]
    for key, value in probs.items():
        assert np.abs(value - base).max() <= 1e-4, key


def test_embeddings_match_get_text_features(clip_package, reference, photos):
    pipe = runtime.load(clip_package, engine="litert", device="x86-cpu")  # fixed batch 1: runs in chunks
    emb = pipe.embed_text(LABELS)
    _, expected = reference[sorted(p.name for p in photos.iterdir())[0]]
    np.testing.assert_allclose(emb / np.linalg.norm(emb, axis=-1, keepdims=True), expected, atol=1e-5)


def test_what_ran_is_reported(clip_package):
    ort = runtime.load(clip_package, engine="onnxruntime", device="x86-cpu")
    assert ort.ran.components["text"]["providers"] == ["CPUExecutionProvider"]
    ov = runtime.load(clip_package, engine="openvino", device="x86-cpu")
    assert ov.ran.components["vision"]["options"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert ov.ran.components["vision"]["execution_devices"] == ["CPU"]
    lite = runtime.load(clip_package, engine="litert", device="x86-cpu", options={"num_threads": 1})
    assert lite.ran.components["text"]["num_threads"] == 1
    assert lite.ran.components["text"]["version"].startswith("ai-edge-litert")


def test_default_plan_picks_first_route(clip_package):
    pipe = runtime.load(clip_package, device="x86-cpu")
    assert (pipe.ran.engine, pipe.ran.format, pipe.ran.variant) == ("onnxruntime", "onnx", "fp32")


def test_search_ranks_a_folder(clip_package, photos):
    pipe = runtime.load(clip_package, engine="onnxruntime", device="x86-cpu")
    result = pipe.search(photos, "a photo of a cat", k=3)
    assert len(result.hits) == 3
    scores = [s for _, s in result.hits]
    assert scores == sorted(scores, reverse=True)
    # the ranking equals a brute-force cosine ranking of the embeddings
    paths = sorted(photos.iterdir())
    img = pipe.embed_images(paths)
    img /= np.linalg.norm(img, axis=-1, keepdims=True)
    txt = pipe.embed_text(["a photo of a cat"])[0]
    expected = [str(paths[i]) for i in np.argsort(-(img @ (txt / np.linalg.norm(txt))))[:3]]
    assert [p for p, _ in result.hits] == expected


def test_static_text_limit_is_an_error_not_truncation(clip_package):
    pipe = runtime.load(clip_package, engine="openvino", variant="fp32-static", device="x86-cpu")
    long_text = " ".join(["cat"] * 200)
    with pytest.raises(StaticShapeError, match="77"):
        pipe.embed_text([long_text])
    assert pipe.embed_text([long_text], truncate=True).shape[0] == 1


def test_bad_task_inputs(clip_package, tmp_path):
    pipe = runtime.load(clip_package, engine="onnxruntime", device="x86-cpu")
    with pytest.raises(InputError, match="at least one non-empty label"):
        pipe.zero_shot(np.zeros((8, 8, 3), np.uint8), [" ", ""])
    with pytest.raises(InputError, match="'{}'"):
        pipe.zero_shot(np.zeros((8, 8, 3), np.uint8), ["a"], template="a photo")
    with pytest.raises(InputError, match="no images found"):
        pipe.search(tmp_path, "anything")
    with pytest.raises(InputError, match="dimensions"):
        pipe.vision(pixel_values=np.zeros((3, 32, 32), np.float32))
    with pytest.raises(InputError, match="NaN"):
        pipe.vision(pixel_values=np.full((1, 3, 32, 32), np.nan, np.float32))


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino", "litert"])
def test_results_are_owned_by_the_caller(clip_package, engine):
    """Engines may reuse buffers; a result must not change when the session runs again."""
    pipe = runtime.load(clip_package, engine=engine, device="x86-cpu")
    first = pipe.vision(pixel_values=np.zeros((1, 3, 32, 32), np.float32))["image_embeds"]
    kept = first.copy()
    second = pipe.vision(pixel_values=np.ones((1, 3, 32, 32), np.float32))["image_embeds"]
    assert np.array_equal(first, kept) and not np.array_equal(first, second)
