"""face-expression end to end on face-api's real weights (npm ``@vladmandic/face-api`` 1.7.15, fetched and
verified by ``importers.npm``): the TF.js → PyTorch port equals face-api's own outputs (``fixtures/face_api``,
written in Node.js by ``make_reference.py``), every exported engine/variant equals the port, the smiling astronaut
is happy everywhere, and odd or bad input is handled as documented.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmedge import runtime
from mmedge.cli.main import main
from mmedge.errors import ExportError, InputError, StaticShapeError
from mmedge.exporter.families.face_expression import FaceExpressionSpec
from mmedge.exporter.importers import face_api, npm, tfjs
from mmedge.runtime.package import open_package
from mmedge.runtime.pipelines.face_expression import FaceExpressionPipeline
from mmedge.runtime.preprocess.face import crop, detector_input

FIXTURES = Path(__file__).parent / "fixtures" / "face_api"
REFERENCE = json.loads((FIXTURES / "reference.json").read_text())
CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO runs bf16 by default on AVX512-BF16 CPUs


def _reference_images() -> dict[str, np.ndarray]:
    spec = importlib.util.spec_from_file_location("make_reference", FIXTURES / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    images = {name: module.image(name) for name in module.IMAGES}
    for name, pixels in images.items():  # the reference was made from exactly these pixels
        assert module.sha256(pixels) == REFERENCE["sha256"][name], f"{name} changed: rerun make_reference.py"
    return images


IMAGES = _reference_images()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    try:
        folder = face_api.locate("face-api")
    except ExportError as e:  # no npm on this machine (CI installs it)
        pytest.skip(str(e))
    return face_api.import_face_api(folder, tmp_path_factory.mktemp("face-api") / "model")


@pytest.fixture(scope="module")
def package(model_dir, tmp_path_factory) -> Path:
    from mmedge.exporter.export import export

    return export("face-api", tmp_path_factory.mktemp("face-pkg") / "pkg", static=True)  # the bundled name


class TorchRunner:
    """A PyTorch module behind the runner interface, so the port runs through the runtime's own numpy steps."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {k: v.numpy() for k, v in self.module(**{k: torch.from_numpy(v) for k, v in feeds.items()}).items()}

    def fixed_dim(self, name: str, axis: int) -> None:
        return None


@pytest.fixture(scope="module")
def port(model_dir, package) -> FaceExpressionPipeline:
    nets = {c.name: TorchRunner(c.module) for c in FaceExpressionSpec().load(model_dir).components}
    return FaceExpressionPipeline(open_package(package), nets, ran=None)


def load(package: Path, engine: str, variant: str) -> FaceExpressionPipeline:
    return runtime.load(package, engine=engine, variant=variant, device="x86-cpu",
                        options=F32 if engine == "openvino" else None)


# ----------------------------------------------------------------------------------- port vs face-api (JS)


def test_detector_grid_equals_face_api(port):
    grid = REFERENCE["grid"]
    expected = np.asarray(grid["values"], np.float32).reshape(grid["shape"])[0].transpose(2, 0, 1)
    image = detector_input(IMAGES[grid["image"]], 416, port.det_mean, port.det_std)[None]
    got = port.detector(image=image)["grid"][0]
    np.testing.assert_allclose(got, expected, atol=2e-4)  # grid logits reach ~±40


@pytest.mark.parametrize("name", list(IMAGES))
def test_port_equals_face_api(port, name):
    faces = port.recognize(IMAGES[name]).faces
    expected = REFERENCE["images"][name]
    assert len(faces) == len(expected) == 1
    for got, want in zip(faces, expected):
        assert got.score == pytest.approx(want["score"], abs=1e-5)
        for key in ("x", "y", "width", "height"):
            assert getattr(got.box, key) == pytest.approx(want["box"][key], abs=1e-3)
        # log-probabilities: compares the tiny ones too (the astronaut's are ~1e-12)
        labels = list(want["probs"])
        np.testing.assert_allclose(np.log([got.probs[k] for k in labels]), np.log([want["probs"][k] for k in labels]),
                                   atol=2e-3)
    assert faces[0].label == ("neutral" if name == "camera" else "happy")


# ------------------------------------------------------------------------------------- engines vs the port


@pytest.fixture(scope="module")
def port_results(port) -> dict:
    return {name: port.recognize(pixels).faces for name, pixels in IMAGES.items()}


@pytest.mark.parametrize("engine, variant", CASES)
def test_every_engine_equals_the_port(package, port_results, engine, variant):
    pipe = load(package, engine, variant)
    assert (pipe.ran.engine, pipe.ran.variant) == (engine, variant)
    for name, pixels in IMAGES.items():
        result = pipe.recognize(pixels)
        want = port_results[name]
        assert [f.label for f in result.faces] == [f.label for f in want]
        for got, ref in zip(result.faces, want):
            assert got.score == pytest.approx(ref.score, abs=1e-5)
            np.testing.assert_allclose([got.box.x, got.box.y, got.box.width, got.box.height],
                                       [ref.box.x, ref.box.y, ref.box.width, ref.box.height], atol=1e-3)
            np.testing.assert_allclose(list(got.probs.values()), list(ref.probs.values()), atol=1e-5)
    smile = pipe.recognize(IMAGES["astronaut"])  # a clearly smiling face
    assert smile.found and smile.faces[0].label == "happy" and smile.faces[0].probs["happy"] > 0.99
    assert smile.to_dict()["ran"]["engine"] == engine and smile.to_dict()["faces"][0]["label"] == "happy"


def test_classify_faces_scores_given_crops(package, port_results):
    pipe = load(package, "onnxruntime", "fp32")
    face = port_results["astronaut"][0]
    assert [(d.box, d.score) for d in pipe.detect(IMAGES["astronaut"])] == \
        [(f.box, f.score) for f in pipe.recognize(IMAGES["astronaut"]).faces]
    probs = pipe.classify_faces([crop(IMAGES["astronaut"], face.box)])[0]
    np.testing.assert_allclose(list(probs.values()), list(face.probs.values()), atol=1e-5)
    for bad in ([], IMAGES["astronaut"]):  # a single image is not a list of faces
        with pytest.raises(InputError, match="non-empty list"):
            pipe.classify_faces(bad)


# ------------------------------------------------------------------------------------ odd and bad input


@pytest.mark.parametrize("engine, variant", [CASES[0], CASES[4]])
def test_no_face_and_tiny_images_are_results(package, engine, variant):
    from skimage import data

    pipe = load(package, engine, variant)
    gradient = np.tile(np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None], (64, 1, 3))
    for image in (gradient, np.zeros((1, 1, 3), np.uint8), (data.lfw_subset()[0] * 255).astype(np.uint8)):
        result = pipe.recognize(image)  # the 25x25 face is too small for the detector
        assert not result.found and result.faces == []
        assert result.to_dict()["found"] is False and result.to_dict()["faces"] == []


def test_grayscale_rgba_and_16_bit_images(package, tmp_path):
    pipe = load(package, "onnxruntime", "fp32")
    rgb = pipe.recognize(IMAGES["astronaut"]).faces[0].probs
    rgba = np.concatenate([IMAGES["astronaut"], np.full((512, 512, 1), 7, np.uint8)], axis=2)
    assert pipe.recognize(rgba).faces[0].probs == rgb  # alpha dropped
    gray = IMAGES["camera"][:, :, 0]
    Image.fromarray(gray).save(tmp_path / "camera.png")
    assert pipe.recognize(tmp_path / "camera.png").faces[0].probs == pipe.recognize(IMAGES["camera"]).faces[0].probs
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "camera16.png")
    assert pipe.recognize(tmp_path / "camera16.png").faces[0].label == "neutral"


def test_bad_input_is_a_typed_error(package, tmp_path):
    pipe = load(package, "onnxruntime", "fp32")
    (tmp_path / "face.jpg").write_text("not an image\n")
    with pytest.raises(InputError, match="cannot read image"):
        pipe.recognize(tmp_path / "face.jpg")
    with pytest.raises(InputError, match="not found"):
        pipe.recognize(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="dtype float64"):
        pipe.recognize(np.zeros((8, 8, 3)))
    for threshold in (0, 1.5):
        with pytest.raises(InputError, match="score_threshold must be between 0 and 1"):
            pipe.recognize(IMAGES["astronaut"], score_threshold=threshold)
    with pytest.raises(InputError, match="multiple of 32"):
        pipe.recognize(IMAGES["astronaut"], input_size=100)
    assert pipe.recognize(IMAGES["astronaut"], input_size=320).faces[0].label == "happy"
    with pytest.raises(StaticShapeError, match="416x416 only"):
        load(package, "onnxruntime", "fp32-static").recognize(IMAGES["astronaut"], input_size=320)


def test_cli_reports_faces_and_no_face(package, tmp_path, capsys):
    Image.fromarray(IMAGES["astronaut"]).save(tmp_path / "astronaut.png")
    assert main(["run", str(package), "--engine", "litert", "--device", "x86-cpu", "--image",
                 str(tmp_path / "astronaut.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["found"] and out["faces"][0]["label"] == "happy" and out["ran"]["variant"] == "fp32-static"
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    assert main(["run", str(package), "--device", "x86-cpu", "--image", str(tmp_path / "wall.png")]) == 0
    assert "no face found" in capsys.readouterr().out
    assert main(["run", str(package), "--device", "x86-cpu"]) == 2
    assert "give --image" in capsys.readouterr().err


def test_profiler_workload_agrees_with_the_reference(package):
    from mmedge.runtime.profiling import profile

    result = profile(package, engines=["litert"], runs=1, warmup=0, progress=False)["results"][0]
    acc = result["accuracy"]
    assert acc["metric"] == "top1_agreement" and acc["value"] == 1.0 and acc["same_count"]
    assert acc["probs_cosine"] > 0.99999 and "astronaut" in result["workload"]


# ------------------------------------------------------------------------------- TF.js reader and npm fetch


def _manifest(tmp_path: Path, weights: list[dict], data: bytes) -> Path:
    (tmp_path / "w.bin").write_bytes(data)
    path = tmp_path / "m-weights_manifest.json"
    path.write_text(json.dumps([{"paths": ["w.bin"], "weights": weights}]))
    return path


def test_tfjs_weights_are_dequantized(tmp_path):
    weights = [{"name": "a", "shape": [2, 2], "dtype": "float32",
                "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
               {"name": "b", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 2.0,
                                                                                 "min": 1.0}},
               {"name": "c", "shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}},
               {"name": "d", "shape": [2], "dtype": "float32"}, {"name": "e", "shape": [1], "dtype": "int32"}]
    data = bytes([0, 1, 2, 255]) + struct.pack("<3H", 0, 3, 65535) + np.array([0.5, -2], "<f2").tobytes() \
        + struct.pack("<2f", 1.25, -3.5) + struct.pack("<i", -7)
    got = tfjs.read_weights(_manifest(tmp_path, weights, data))
    np.testing.assert_array_equal(got["a"], [[-1.0, -0.5], [0.0, 126.5]])
    np.testing.assert_array_equal(got["b"], [1.0, 7.0, 131071.0])
    np.testing.assert_array_equal(got["c"], [0.5, -2.0])
    np.testing.assert_array_equal(got["d"], [1.25, -3.5])
    assert got["e"].dtype == np.int32 and got["e"].tolist() == [-7]
    with pytest.raises(ExportError, match="truncated"):
        tfjs.read_weights(_manifest(tmp_path, weights, data[:-3]))
    with pytest.raises(ExportError, match="different versions"):
        tfjs.read_weights(_manifest(tmp_path, weights, data + b"\0"))


def test_tfjs_depthwise_layout_with_a_channel_multiplier():
    rng = np.random.default_rng(0)
    x, f = rng.normal(size=(1, 5, 5, 2)), rng.normal(size=(3, 3, 2, 2))  # NHWC input, [h, w, C, multiplier]
    expected = np.zeros((3, 3, 4))  # TensorFlow: output channel c * multiplier + m reads input channel c
    for i in range(3):
        for j in range(3):
            window = x[0, i:i + 3, j:j + 3]
            expected[i, j] = np.einsum("hwc,hwcm->cm", window, f).reshape(4)
    conv = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                      torch.from_numpy(tfjs.depthwise_weight(f)), groups=2)
    np.testing.assert_allclose(conv[0].numpy().transpose(1, 2, 0), expected, atol=1e-12)


def test_a_face_api_folder_is_an_export_source(model_dir):
    from mmedge.exporter.families import detect_family
    from mmedge.exporter.source import resolve

    folder = face_api.locate("face-api")
    for path in (folder, folder.parent):  # the model/ folder, or the unpacked npm package holding it
        source = resolve(path)
        assert source.kind == "tfjs" and detect_family(source.config).name == "face-expression"
        assert (source.directory / "model.safetensors").is_file()


def test_import_and_fetch_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="not a face-api model folder"):
        face_api.import_face_api(tmp_path, tmp_path / "out")
    monkeypatch.setenv("MMEDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(npm.shutil, "which", lambda name: None)
    with pytest.raises(ExportError, match="apt install npm"):
        npm.fetch(npm.FACE_API)


def test_npm_tarball_with_another_hash_is_refused(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MMEDGE_CACHE", str(tmp_path / "cache"))  # a fresh cache; npm's own cache has the tarball
    wrong = npm.NpmPackage(npm.FACE_API.name, npm.FACE_API.version,
                           "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode())
    with pytest.raises(ExportError, match="damaged or not the pinned release"):
        npm.fetch(wrong)
    assert not (tmp_path / "cache" / "npm" / wrong.folder_name).exists()
