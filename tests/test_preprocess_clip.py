"""Slim CLIP pre-processing (numpy + Pillow + tokenizers) against transformers, on a tiny offline CLIP.

The runtime side must match HF exactly: pixel_values to ≤ 1e-6 (in practice 0) and token ids / masks equal,
on real photos (scikit-image's bundled data) saved in the formats and modes devices meet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.errors import InputError, PackageError, StaticShapeError, UsageError
from mmedge.exporter.families.clip_tiny import TINY, write_tiny_clip
from mmedge.runtime.preprocess import ClipImagePreprocessor, ClipTextTokenizer, load_image

skdata = pytest.importorskip("skimage.data")
transformers = pytest.importorskip("transformers")

ATOL = 1e-6  # measured: exactly 0 on every case here


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tinyclip"), seed=0)


@pytest.fixture(scope="module")
def hf_processor(tiny_dir: Path):
    proc = transformers.CLIPProcessor.from_pretrained(tiny_dir)
    assert type(proc.image_processor).__name__ == "CLIPImageProcessor"  # the slow one: our reference
    return proc


@pytest.fixture(scope="module")
def ours_image(tiny_dir: Path) -> ClipImagePreprocessor:
    return ClipImagePreprocessor.from_config(json.loads((tiny_dir / "preprocessor_config.json").read_text()))


@pytest.fixture(scope="module")
def ours_text(tiny_dir: Path) -> ClipTextTokenizer:
    return ClipTextTokenizer(tiny_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def hf_fast(tiny_dir: Path):
    return transformers.CLIPTokenizerFast.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def hf_slow(tiny_dir: Path):
    return transformers.CLIPTokenizer.from_pretrained(tiny_dir)


def _exif_rotated(img: Image.Image, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, quality=92, exif=exif)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real photos in many sizes, aspect ratios, formats and PIL modes."""
    d = tmp_path_factory.mktemp("images")
    chelsea = Image.fromarray(skdata.chelsea())
    coffee = Image.fromarray(skdata.coffee())
    camera = skdata.camera()
    files = {
        "astronaut.jpg": (Image.fromarray(skdata.astronaut()), {"quality": 90}),
        "chelsea.png": (chelsea, {}),
        "coffee_small.jpg": (coffee.resize((150, 100)), {"quality": 85}),
        "portrait.jpg": (coffee.transpose(Image.Transpose.ROTATE_90), {}),
        "camera_gray.png": (Image.fromarray(camera), {}),
        "rocket.jpg": (Image.fromarray(skdata.rocket()), {}),
        "horse_1bit.png": (Image.fromarray(skdata.horse()), {}),
        "logo_rgba.png": (Image.fromarray(skdata.logo()), {}),
        "tiny_7x5.png": (chelsea.resize((7, 5)), {}),
        "odd_333x500.png": (chelsea.resize((333, 500)), {}),
        "strip_400x20.jpg": (coffee.resize((400, 20)), {}),
        "gray16.png": (Image.fromarray((camera.astype(np.uint16) * 3)), {}),
        "palette.png": (chelsea.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), {"transparency": 0}),
        "gray_alpha.png": (Image.fromarray(camera).convert("LA"), {}),
        "cmyk.jpg": (coffee.convert("CMYK"), {}),
        "cat.bmp": (chelsea.resize((97, 61)), {}),
        "cat.webp": (chelsea, {"quality": 80}),
    }
    out = {}
    for name, (img, kwargs) in files.items():
        out[name] = d / name
        img.save(out[name], **kwargs)
    out["exif_rotated.jpg"] = d / "exif_rotated.jpg"
    _exif_rotated(Image.fromarray(skdata.astronaut()[:300, :180]), out["exif_rotated.jpg"], 6)
    return out


def _hf_pixels(hf_processor, images) -> np.ndarray:
    return hf_processor(images=images, return_tensors="np")["pixel_values"]


# --------------------------------------------------------------------------------------------- the tiny model


def test_tiny_clip_loads_and_runs(tiny_dir: Path, ours_image, ours_text) -> None:
    import torch

    model = transformers.CLIPModel.from_pretrained(tiny_dir).eval()
    tcfg = model.config.text_config
    fast = transformers.CLIPTokenizerFast.from_pretrained(tiny_dir)
    assert tcfg.vocab_size == len(fast) and 500 <= len(fast) <= 1000
    assert (tcfg.bos_token_id, tcfg.eos_token_id, tcfg.pad_token_id) == (
        fast.bos_token_id, fast.eos_token_id, fast.pad_token_id,
    )
    assert tcfg.eos_token_id != 2  # so CLIP pools at the first eos, not at argmax(input_ids)
    assert model.config.vision_config.image_size == TINY["image_size"]
    assert (tiny_dir / "model.safetensors").is_file()

    texts = ["a photo of a cat", "an astronaut riding a horse on the moon"]
    pixels = ours_image([skdata.chelsea(), skdata.astronaut()])
    longest = ours_text(texts)
    static = ours_text(texts, pad_to=77)
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(longest["input_ids"]),
            attention_mask=torch.from_numpy(longest["attention_mask"]),
            pixel_values=torch.from_numpy(pixels),
        )
        static_embeds = model.get_text_features(
            input_ids=torch.from_numpy(static["input_ids"]),
            attention_mask=torch.from_numpy(static["attention_mask"]),
        )
    assert out.logits_per_image.shape == (2, 2)
    assert out.image_embeds.shape == (2, TINY["projection_dim"])
    assert torch.isfinite(out.logits_per_image).all()
    with torch.no_grad():
        longest_embeds = model.get_text_features(
            input_ids=torch.from_numpy(longest["input_ids"]),
            attention_mask=torch.from_numpy(longest["attention_mask"]),
        )
    # Padding to a static length must not move the pooled (first eos) token.
    torch.testing.assert_close(static_embeds, longest_embeds, atol=1e-5, rtol=1e-5)


def test_tiny_clip_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    again = write_tiny_clip(tmp_path / "again", seed=0)
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "config.json", "model.safetensors"):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    other = write_tiny_clip(tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()


def test_all_hf_loaders_accept_the_tiny_dir(tiny_dir: Path) -> None:
    assert transformers.CLIPTokenizer.from_pretrained(tiny_dir)("a cat")["input_ids"][0] is not None
    assert transformers.AutoProcessor.from_pretrained(tiny_dir) is not None
    cfg = json.loads((tiny_dir / "preprocessor_config.json").read_text())
    assert cfg["size"] == {"shortest_edge": TINY["image_size"]}
    assert cfg["crop_size"] == {"height": TINY["image_size"], "width": TINY["image_size"]}
    assert cfg["resample"] == 3 and cfg["do_convert_rgb"] is True


# --------------------------------------------------------------------------------------------- images


def test_config_round_trip(ours_image: ClipImagePreprocessor, tiny_dir: Path) -> None:
    cfg = ours_image.to_config()
    json.dumps(cfg)  # plain, manifest-ready
    assert ClipImagePreprocessor.from_config(cfg) == ours_image
    hf_cfg = json.loads((tiny_dir / "preprocessor_config.json").read_text())
    for key, value in cfg.items():
        assert hf_cfg[key] == pytest.approx(value), key
    legacy = ClipImagePreprocessor.from_config({"size": 224, "crop_size": 224})
    assert legacy.size == {"shortest_edge": 224} and legacy.crop_size == {"height": 224, "width": 224}


@pytest.mark.parametrize(
    "name",
    [
        "astronaut.jpg", "chelsea.png", "coffee_small.jpg", "portrait.jpg", "camera_gray.png", "rocket.jpg",
        "horse_1bit.png", "logo_rgba.png", "tiny_7x5.png", "odd_333x500.png", "strip_400x20.jpg", "gray16.png",
        "palette.png", "gray_alpha.png", "cmyk.jpg", "cat.bmp", "cat.webp",
    ],
)
def test_pixels_match_hf_per_file(name: str, image_files, ours_image, hf_processor) -> None:
    path = image_files[name]
    ours = ours_image([path])
    assert ours.dtype == np.float32 and ours.shape == (1, 3, TINY["image_size"], TINY["image_size"])
    assert ours.flags.c_contiguous
    if name == "gray16.png":  # deliberate difference (image.to_rgb): 16 bits scaled to 8, where HF clips to white
        with Image.open(path) as pil:
            eight = Image.fromarray(np.round(np.asarray(pil) / 257).astype(np.uint8))
        assert np.abs(ours - _hf_pixels(hf_processor, [eight])).max() <= ATOL
        return
    with Image.open(path) as pil:
        assert np.abs(ours - _hf_pixels(hf_processor, [pil])).max() <= ATOL
    assert np.abs(ours - _hf_pixels(hf_processor, [str(path)])).max() <= ATOL  # HF's load_image path


def test_modes_really_differ(image_files) -> None:
    """The fixture covers the PIL modes it claims to (guards against Pillow silently normalising them)."""
    modes = {n: Image.open(p).mode for n, p in image_files.items()}
    assert modes["gray16.png"].startswith("I;16") and modes["palette.png"] == "P"
    assert modes["horse_1bit.png"] == "1" and modes["logo_rgba.png"] == "RGBA"
    assert modes["camera_gray.png"] == "L" and modes["cmyk.jpg"] == "CMYK" and modes["gray_alpha.png"] == "LA"


def test_batch_matches_hf(image_files, ours_image, hf_processor) -> None:
    paths = [p for n, p in sorted(image_files.items()) if n not in ("exif_rotated.jpg", "gray16.png")]
    ours = ours_image(paths)
    assert ours.shape[0] == len(paths)
    assert np.abs(ours - _hf_pixels(hf_processor, [str(p) for p in paths])).max() <= ATOL


def test_exif_rotation_like_hf_load_image(image_files, ours_image, hf_processor) -> None:
    from transformers.image_utils import load_image as hf_load_image

    path = image_files["exif_rotated.jpg"]
    loaded = load_image(path)
    assert loaded.size == (300, 180)  # stored 180 wide x 300 high, orientation 6 → rotated to landscape
    ours = ours_image([path])
    assert np.abs(ours - _hf_pixels(hf_processor, [hf_load_image(str(path))])).max() <= ATOL
    with Image.open(path) as unrotated:  # proves the rotation matters for this file
        assert np.abs(ours - _hf_pixels(hf_processor, [unrotated])).max() > 0.1


def test_arrays_and_pil_inputs(ours_image, hf_processor) -> None:
    arrays = [skdata.astronaut(), skdata.coffee(), skdata.chelsea()[:50, :7]]
    ours = ours_image(arrays)
    assert np.abs(ours - _hf_pixels(hf_processor, arrays)).max() <= ATOL
    pils = [Image.fromarray(a) for a in arrays]
    assert np.array_equal(ours_image(pils), ours)
    gray = skdata.camera()
    assert np.array_equal(ours_image([gray]), ours_image([gray[:, :, None]]))
    assert np.array_equal(ours_image([gray]), ours_image([Image.fromarray(gray)]))


def test_three_pixel_tall_image_is_channels_last() -> None:
    """HF would infer channels-first for an HxWx3 array with H == 3 (or 1); we always read PIL as HWC."""
    pre = ClipImagePreprocessor.from_config({"size": {"shortest_edge": 8}, "crop_size": 8})
    assert pre([skdata.chelsea()[:3, :40]]).shape == (1, 3, 8, 8)


@pytest.mark.parametrize(
    "config",
    [
        {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 48}},
        {"size": {"shortest_edge": 24}, "crop_size": 32},  # crop bigger than the resize: HF zero-pads
        {"size": {"shortest_edge": 17}, "crop_size": {"height": 9, "width": 30}},
        {"size": {"height": 30, "width": 20}, "do_center_crop": False},
        {"size": 33, "crop_size": 33, "resample": 2},
        {"size": 20, "crop_size": 20, "do_rescale": False},
        {"size": 20, "crop_size": 20, "do_normalize": False, "image_mean": 0.5, "image_std": 0.5},
        {"do_resize": False, "crop_size": {"height": 64, "width": 80}},
    ],
)
def test_other_configs_match_hf(config: dict, image_files) -> None:
    hf = transformers.CLIPImageProcessor(**config)
    ours = ClipImagePreprocessor.from_config(config)
    for name in ("chelsea.png", "portrait.jpg", "tiny_7x5.png", "palette.png"):
        with Image.open(image_files[name]) as pil:
            expected = hf(images=[pil], return_tensors="np")["pixel_values"]
            got = ours([pil])
        assert got.shape == expected.shape, name
        assert np.abs(got - expected).max() <= ATOL, name


# --------------------------------------------------------------------------------------------- image errors


@pytest.fixture()
def broken_files(tmp_path: Path, image_files) -> dict[str, Path]:
    data = image_files["astronaut.jpg"].read_bytes()
    files = {
        "truncated.jpg": data[: len(data) // 2],
        "notes.jpg": b"this is a text file, not a picture\n" * 4,
        "empty.jpg": b"",
        "garbage.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
    }
    out = {}
    for name, blob in files.items():
        out[name] = tmp_path / name
        out[name].write_bytes(blob)
    return out


@pytest.mark.parametrize("name", ["truncated.jpg", "notes.jpg", "empty.jpg", "garbage.png"])
def test_unreadable_files_raise_input_error(name: str, broken_files, ours_image) -> None:
    path = broken_files[name]
    with pytest.raises(InputError) as err:
        load_image(path)
    assert str(path) in str(err.value) and "JPEG" in str(err.value) and "PNG" in str(err.value)
    with pytest.raises(InputError):
        ours_image([path])


def test_missing_path_and_bad_inputs(tmp_path: Path, ours_image) -> None:
    missing = tmp_path / "nope.jpg"
    with pytest.raises(InputError, match="nope.jpg"):
        load_image(str(missing))
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path)  # a directory
    with pytest.raises(InputError, match="uint8"):
        load_image(skdata.horse())  # bool array
    with pytest.raises(InputError, match="shape"):
        load_image(np.zeros((4, 4, 5), dtype=np.uint8))
    with pytest.raises(InputError, match="type"):
        load_image(42)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="empty"):
        ours_image([])
    with pytest.raises(InputError, match="list"):
        ours_image(skdata.astronaut())  # type: ignore[arg-type]


def test_bad_config_is_a_package_error() -> None:
    with pytest.raises(PackageError):
        ClipImagePreprocessor.from_config({"size": {"longest_edge": 5}})
    with pytest.raises(PackageError):
        ClipImagePreprocessor.from_config({"resample": 99})


# --------------------------------------------------------------------------------------------- text

SENTENCES = [
    "a photo of a cat",
    "A Photo OF a DOG!!!",
    "  extra   spaces\tand\nnewlines  ",
    "café crème brûlée",
    "cafe\u0301 in NFD form",
    "numbers 12345 and 3.14, 2026-11-29",
    "",
    "emoji 🚀🐱👍🏽 rocket",
    "don't, can't, it's, we'll, I'M",
    "punctuation... (brackets) [x] {y} <z> @#$%^&*",
    "naïve façade Ω ß İstanbul ＦＵＬＬＷＩＤＴＨ",
    "An astronaut riding a horse on the moon, photographed at dawn.",
]
# Without ftfy, HF's slow CLIPTokenizer falls back to BERT's BasicTokenizer, which splits CJK characters,
# and drops control and zero-width characters: it disagrees with the fast tokenizer (and with us) here.
FAST_ONLY = ["日本語のテキスト", "zero\u200bwidth", "ctrl\x00char"]


def _hf_np(tok, texts, **kwargs) -> dict[str, np.ndarray]:
    enc = tok(texts, return_tensors="np", **kwargs)
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def _assert_same(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    for key in ("input_ids", "attention_mask"):
        assert ours[key].dtype == np.int64
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_special_ids(ours_text: ClipTextTokenizer, hf_fast) -> None:
    assert (ours_text.bos_id, ours_text.eos_id, ours_text.pad_id) == (
        hf_fast.bos_token_id, hf_fast.eos_token_id, hf_fast.pad_token_id,
    )
    assert ours_text.pad_id == ours_text.eos_id


def test_padding_longest_matches_fast_and_slow(ours_text, hf_fast, hf_slow) -> None:
    ours = ours_text(SENTENCES)
    _assert_same(ours, _hf_np(hf_fast, SENTENCES, padding=True))
    _assert_same(ours, _hf_np(hf_slow, SENTENCES, padding=True))
    _assert_same(ours_text(FAST_ONLY), _hf_np(hf_fast, FAST_ONLY, padding=True))


def test_padding_max_length_matches_hf(ours_text, hf_fast, hf_slow) -> None:
    ours = ours_text(SENTENCES, pad_to=77)
    assert ours["input_ids"].shape == (len(SENTENCES), 77)
    _assert_same(ours, _hf_np(hf_fast, SENTENCES, padding="max_length", max_length=77))
    _assert_same(ours, _hf_np(hf_slow, SENTENCES, padding="max_length", max_length=77))
    _assert_same(
        ours_text(SENTENCES, pad_to=64, max_length=64),
        _hf_np(hf_fast, SENTENCES, padding="max_length", max_length=64),
    )


def test_single_and_empty_string(ours_text, hf_fast) -> None:
    ids = ours_text([""])["input_ids"]
    assert ids.tolist() == [[ours_text.bos_id, ours_text.eos_id]]
    _assert_same(ours_text(["a photo of a dog"]), _hf_np(hf_fast, ["a photo of a dog"]))


LONG = "a photo of an astronaut riding a horse next to a rocket and a cup of coffee " * 8


def test_too_long_raises_static_shape_error(ours_text) -> None:
    with pytest.raises(StaticShapeError) as err:
        ours_text(["short", LONG])
    assert "77" in str(err.value) and "truncate=True" in str(err.value) and "#1" in str(err.value)
    with pytest.raises(StaticShapeError, match="16"):
        ours_text(["an astronaut riding a horse on the moon at dawn, with a rocket"], pad_to=16)


def test_truncation_matches_hf(ours_text, hf_fast, hf_slow) -> None:
    texts = ["short one", LONG]
    ours = ours_text(texts, truncate=True)
    assert ours["input_ids"].shape == (2, 77) and ours["input_ids"][1, -1] == ours_text.eos_id
    for tok in (hf_fast, hf_slow):
        _assert_same(ours, _hf_np(tok, texts, padding=True, truncation=True, max_length=77))
        _assert_same(
            ours_text(texts, pad_to=77, truncate=True),
            _hf_np(tok, texts, padding="max_length", truncation=True, max_length=77),
        )
    _assert_same(
        ours_text(texts, pad_to=10, max_length=10, truncate=True),
        _hf_np(hf_fast, texts, padding="max_length", truncation=True, max_length=10),
    )
    exact = ours_text([LONG], truncate=True)["input_ids"][0]
    assert len(ours_text([LONG], max_length=1000)["input_ids"][0]) > 77
    assert exact[0] == ours_text.bos_id


@pytest.mark.parametrize(
    ("texts", "match"),
    [([], "empty"), (["ok", 3], "str"), (["ok", None], "str"), ("a bare string", "list"), (b"bytes", "list")],
)
def test_text_input_errors(ours_text, texts, match: str) -> None:
    with pytest.raises(InputError, match=match):
        ours_text(texts)


def test_bad_lengths_are_usage_errors(ours_text) -> None:
    with pytest.raises(UsageError):
        ours_text(["a"], pad_to=100)  # longer than max_length: the graph could not take it
    with pytest.raises(UsageError):
        ours_text(["a"], max_length=1)


def test_tokenizer_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="tokenizer.json"):
        ClipTextTokenizer(tmp_path / "tokenizer.json")
    corrupt = tmp_path / "corrupt" / "tokenizer.json"
    corrupt.parent.mkdir()
    corrupt.write_text("{ not json")
    with pytest.raises(PackageError, match="corrupt"):
        ClipTextTokenizer(corrupt)
    with pytest.raises(PackageError, match="corrupt"):
        ClipTextTokenizer(corrupt.parent)  # a directory means its tokenizer.json


def test_tokenizer_without_clip_specials(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    path = tmp_path / "tokenizer.json"
    Tokenizer(models.BPE()).save(str(path))
    with pytest.raises(PackageError, match="special"):
        ClipTextTokenizer(path)
