"""Stable Diffusion end to end: a tiny random-weight diffusers pipeline (``mmedge tiny-model stable-diffusion``)
exported once to ONNX, OpenVINO and TFLite (dynamic and fixed-resolution; ONNX only in the default run, every
format in the slow stage), then, from the same initial latents,
the image of every engine and variant must equal diffusers' ``StableDiffusionPipeline`` image (output_type="np",
same scheduler) for several schedulers; image-to-image equals ``StableDiffusionImg2ImgPipeline`` with the noise
drawn from the same torch generator. Plus the manifest's contract, the CLI, bad input and the profiler workload."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import heavy_matrix

from mmedge import runtime
from mmedge.errors import InputError, StaticShapeError, UsageError
from mmedge.exporter import families

ENGINES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
           ("openvino", "fp32-static"), ("litert", "fp32-static")]
CASES = heavy_matrix(*ENGINES)  # OpenVINO and LiteRT in the slow stage (their conversions cost the most)
STATIC = ENGINES[1]  # the fixed-shape variant every run has: two batch-1 UNet calls per step, the static limits
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO runs bf16 by default on AVX512-BF16 CPUs
PROMPT, NEGATIVE = "a photo of an astronaut riding a horse", "blurry, low quality"
PHOTO = Path(__file__).resolve().parents[1] / "examples" / "data" / "photos" / "chelsea.jpg"
ATOL = 1e-4  # pixels in [0, 1]; engines differ from PyTorch by ~1e-6


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return families.write_tiny_model("stable-diffusion", tmp_path_factory.mktemp("tiny-sd") / "model")


@pytest.fixture(scope="module")
def package(tiny_dir, tmp_path_factory, matrix_formats) -> Path:
    from mmedge.exporter.export import export

    return export(tiny_dir, tmp_path_factory.mktemp("sd-pkg") / "pkg", static=True, formats=matrix_formats)


@cache
def load(package: Path, engine: str = "onnxruntime", variant: str = "fp32"):
    return runtime.load(package, engine=engine, variant=variant, device="x86-cpu",
                        options=F32 if engine == "openvino" else None)


@pytest.fixture(scope="module")
def diffusers_pipes(tiny_dir):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    text = StableDiffusionPipeline.from_pretrained(tiny_dir, safety_checker=None, requires_safety_checker=False)
    text.set_progress_bar_config(disable=True)
    image = StableDiffusionImg2ImgPipeline(**text.components)
    image.set_progress_bar_config(disable=True)
    return text, image


def _scheduler(pipe, name: str):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler

    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm++2m": DPMSolverMultistepScheduler,
           "lcm": LCMScheduler}[name]
    return cls.from_config(pipe.scheduler.config)


def torch_randn(seed: int):
    """A noise source drawing from a torch generator exactly as diffusers' ``randn_tensor`` does on CPU."""
    g = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=g).numpy()


def reference(diffusers_pipes, scheduler: str, *, prompt=PROMPT, negative=NEGATIVE, steps=5, guidance=6.0,
              latents=None, image=None, strength=None, seed=0) -> np.ndarray:
    text, img2img = diffusers_pipes
    pipe = img2img if image is not None else text
    pipe.scheduler = _scheduler(text, scheduler)
    extra = {"image": image, "strength": strength} if image is not None else {"latents": torch.from_numpy(latents)}
    return pipe(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
                output_type="np", generator=torch.Generator().manual_seed(seed), **extra).images[0]


def latents_for(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 4, size, size), dtype=np.float32)


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def expected_images(diffusers_pipes) -> dict[str, np.ndarray]:
    """diffusers' image per scheduler from ``latents_for(1)``: what every engine and variant must give."""
    return {scheduler: reference(diffusers_pipes, scheduler, latents=latents_for(1)) for scheduler in ("ddim", "dpm++2m")}


@pytest.mark.parametrize("engine, variant", CASES)
def test_images_equal_diffusers(package, expected_images, engine, variant):
    pipe = load(package, engine, variant)
    assert (pipe.ran.engine, pipe.ran.variant) == (engine, variant)
    for scheduler, expected in expected_images.items():
        result = pipe.generate(PROMPT, negative_prompt=NEGATIVE, steps=5, guidance=6.0, scheduler=scheduler,
                               latents=latents_for(1))
        assert result.pixels.shape == expected.shape == (32, 32, 3)
        np.testing.assert_allclose(result.pixels, expected, atol=ATOL, err_msg=scheduler)
        assert result.to_dict()["ran"]["engine"] == engine and result.to_dict()["task"] == "text-to-image"
    assert 0.02 < result.pixels.std() and (result.pixels % 1 != 0).mean() > 0.9  # an image, not a clipped flat one


@pytest.mark.parametrize("scheduler", ["euler", "lcm"])
def test_other_schedulers_equal_diffusers(package, diffusers_pipes, scheduler):
    """Euler (fractional timesteps into the UNet) and LCM (fresh noise at every step, from the same generator)."""
    latents = latents_for(2)
    expected = reference(diffusers_pipes, scheduler, latents=latents, steps=4, seed=7)
    for engine, variant in (ENGINES[0], STATIC):
        result = load(package, engine, variant).generate(PROMPT, negative_prompt=NEGATIVE, steps=4, guidance=6.0,
                                                         scheduler=scheduler, latents=latents, randn=torch_randn(7))
        np.testing.assert_allclose(result.pixels, expected, atol=ATOL, err_msg=f"{engine} {variant}")


@pytest.mark.parametrize("engine, variant", heavy_matrix(STATIC, ENGINES[2], ENGINES[4]))
def test_image_to_image_equals_diffusers(package, diffusers_pipes, engine, variant):
    photo = Image.open(PHOTO).convert("RGB").resize((48, 32))  # resized to the 32x32 contract on both sides
    pipe = load(package, engine, variant)
    for scheduler, strength in (("dpm++2m", 0.6), ("euler", 0.35)):
        expected = reference(diffusers_pipes, scheduler, image=photo.resize((32, 32), Image.Resampling.LANCZOS),
                             strength=strength, steps=8, seed=3)
        result = pipe.generate(PROMPT, negative_prompt=NEGATIVE, steps=8, guidance=6.0, scheduler=scheduler,
                               image=photo, strength=strength, randn=torch_randn(3), width=32, height=32)
        np.testing.assert_allclose(result.pixels, expected, atol=ATOL, err_msg=scheduler)
        assert len(result.timesteps) == int(8 * strength) and result.to_dict()["task"] == "image-to-image"


def test_guidance_off_and_empty_prompt_equal_diffusers(package, diffusers_pipes):
    """guidance <= 1: no unconditional branch (one UNet batch row); an empty prompt is the unconditional image."""
    pipe, latents = load(package, *STATIC), latents_for(4)
    for prompt, guidance in ((PROMPT, 1.0), ("", 1.0), ("", 5.0)):
        expected = reference(diffusers_pipes, "ddim", prompt=prompt, negative=None, guidance=guidance, latents=latents)
        got = pipe.generate(prompt, guidance=guidance, steps=5, scheduler="ddim", latents=latents).pixels
        np.testing.assert_allclose(got, expected, atol=ATOL, err_msg=f"{prompt!r} {guidance}")


def test_seeded_generation_is_repeatable_across_engines(package):
    """A seed gives numpy's initial latents: the same image on every engine, another one for another seed."""
    images = [load(package, *case).generate(PROMPT, steps=3, seed=11).pixels for case in (ENGINES[0], STATIC)]
    np.testing.assert_allclose(images[0], images[1], atol=ATOL)
    result = load(package).generate(PROMPT, steps=3, seed=12)
    assert np.abs(result.pixels - images[0]).max() > 0.05 and result.seed == 12
    unseeded = load(package).generate(PROMPT, steps=3)
    assert isinstance(unseeded.seed, int)  # drawn and reported, so the run can be repeated
    np.testing.assert_array_equal(load(package).generate(PROMPT, steps=3, seed=unseeded.seed).pixels, unseeded.pixels)


def test_dynamic_package_takes_other_sizes(package, diffusers_pipes):
    latents = np.random.default_rng(5).standard_normal((1, 4, 8, 12), dtype=np.float32)
    text, _ = diffusers_pipes
    text.scheduler = _scheduler(text, "euler")
    expected = text(PROMPT, num_inference_steps=3, guidance_scale=4.0, height=16, width=24, output_type="np",
                    latents=torch.from_numpy(latents)).images[0]
    got = load(package).generate(PROMPT, steps=3, guidance=4.0, scheduler="euler", height=16, width=24,
                                 latents=latents)
    assert got.pixels.shape == (16, 24, 3)
    np.testing.assert_allclose(got.pixels, expected, atol=ATOL)


# --------------------------------------------------------------------------------------------------- contract


def test_manifest_states_the_contract(package):
    manifest = json.loads((package / "mmedge.json").read_text())
    assert (manifest["family"], manifest["task"]) == ("text-to-image", "text-to-image")
    pre, gen = manifest["preprocessing"], manifest["generation"]
    assert pre["image"] == {"vae_scale_factor": 2, "size_multiple": 4, "height": 32, "width": 32,
                            "latent_channels": 4, "resample": "lanczos"}
    # SD 1.5's own scheduler (PNDM) has no numpy twin: the package names its default, and keeps the config file
    assert pre["scheduler"]["default"] == "dpm++2m" and pre["scheduler"]["pipeline_class"] == "PNDMScheduler"
    stored = json.loads((package / pre["scheduler"]["config_file"]).read_text())
    assert stored["clip_sample"] is False and stored["steps_offset"] == 1
    assert "two calls per step" in gen["classifier_free_guidance"] and gen["default_steps"] == 50
    pkg = runtime.open_package(package)
    assert set(pkg.manifest.components) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    unet = pkg.manifest.components["unet"]
    static = unet.find("onnx", "fp32-static").signatures["default"]
    assert {t.name: list(t.shape) for t in static.inputs} == {
        "sample": [1, 4, 16, 16], "timestep": [1], "encoder_hidden_states": [1, 77, 32]}
    dynamic = unet.find("onnx", "fp32")
    assert [t.shape for t in dynamic.signatures["default"].inputs][1] == ("batch",)  # timestep: (batch,), not 0-d
    sizes = [c["sizes"] for c in dynamic.parity["checks"]]  # checked at a second batch and a non-square size
    assert {(s["batch"], s["latent_height"], s["latent_width"]) for s in sizes} == {(2, 16, 16), (1, 10, 8)}


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_a_typed_error_naming_the_fix(package, diffusers_pipes):
    pipe, static = load(package), load(package, *STATIC)
    cases = [
        (dict(steps=0), InputError, "steps must be a positive integer"),
        (dict(steps=1001), InputError, "from 1 to 1000"),
        (dict(guidance=-1.0), InputError, "guidance must be a finite number >= 0"),
        (dict(guidance=float("nan")), InputError, "guidance must be a finite number"),
        (dict(negative_prompt="dark", guidance=1.0), InputError, "raise guidance above 1"),
        (dict(strength=0.5), InputError, "give an image too"),
        (dict(image=PHOTO, strength=0.0), InputError, "strength must be in \\(0, 1\\]"),
        (dict(image=PHOTO, strength=1.5), InputError, "strength must be in"),
        (dict(image=PHOTO, strength=0.1, steps=5), InputError, "leaves no denoising step"),
        (dict(image=PHOTO, latents=latents_for(0)), InputError, "not both"),
        (dict(scheduler="pndm"), UsageError, "unknown scheduler 'pndm'"),
        (dict(scheduler="lcm", steps=60), InputError, "at most original_inference_steps=50"),
        (dict(latents=latents_for(0, size=8)), InputError, "latents must be finite floats of shape \\[1, 4, 16, 16\\]"),
        (dict(height=30), InputError, "height must be a positive multiple of 4"),
        (dict(seed=-1), InputError, "seed must be a non-negative integer"),
        (dict(image="missing.png"), InputError, "not found"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            pipe.generate(PROMPT, **{"steps": 2, **kwargs})
    with pytest.raises(InputError, match="prompt must be a string"):
        pipe.generate(None)
    with pytest.raises(StaticShapeError, match="generates 32x32 images only.*variant='fp32'"):
        static.generate(PROMPT, steps=2, width=64, height=64)
    with pytest.raises(StaticShapeError, match="the prompt is too long for the text encoder.*limit is 77.*truncate"):
        static.generate("a horse " * 60, steps=2)
    with pytest.raises(StaticShapeError, match="the negative prompt is too long"):
        static.generate("a horse", negative_prompt="dark " * 80, steps=2)
    long = static.generate("a horse " * 60, steps=2, guidance=6.0, scheduler="ddim", latents=latents_for(0),
                           truncate=True)  # cut where diffusers cuts it: 75 tokens between start and end
    expected = reference(diffusers_pipes, "ddim", prompt="a horse " * 60, negative=None, steps=2, latents=latents_for(0))
    np.testing.assert_allclose(long.pixels, expected, atol=ATOL)


# ------------------------------------------------------------------------------------------------- CLI, tools


def test_cli_writes_the_image(package, tmp_path, capsys):
    from mmedge.cli.main import main

    out = tmp_path / "astronaut.png"
    assert main(["run", str(package), "--engine", "onnxruntime", "--variant", "fp32-static", "--device", "x86-cpu",
                 "--prompt", PROMPT,
                 "--negative-prompt", NEGATIVE, "--steps", "3", "--guidance", "5", "--scheduler", "euler",
                 "--seed", "4", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["out"], data["steps"], data["scheduler"], data["seed"]) == (str(out), 3, "euler", 4)
    expected = load(package, *STATIC).generate(PROMPT, negative_prompt=NEGATIVE, steps=3, guidance=5,
                                               scheduler="euler", seed=4)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(expected.image))
    img2img = tmp_path / "cat.png"
    assert main(["run", str(package), "--device", "x86-cpu", "--prompt", "", "--image", str(PHOTO), "--strength",
                 "0.5", "--steps", "4", "--out", str(img2img)]) == 0
    text = capsys.readouterr()
    width, height = (side // 4 * 4 for side in Image.open(PHOTO).size)  # a dynamic package keeps the input's size
    assert f"wrote a {width}x{height} image" in text.out and "ran: engine onnxruntime" in text.out
    assert "denoising step 2/2" in text.err and Image.open(img2img).size == (width, height)


@pytest.mark.parametrize("argv, code, message", [
    (["--prompt", "a cat"], 2, "--out image.png"),
    (["--prompt", "a cat", "--out", "x.png", "--strength", "0.5"], 5, "give an image too"),
    (["--prompt", "a cat", "--out", "x.png", "--steps", "0"], 5, "steps must be a positive integer"),
    (["--prompt", "a cat", "--out", "x.png", "--scheduler", "heun"], 2, "unknown scheduler"),
])
def test_cli_bad_input(package, tmp_path, capsys, argv, code, message):
    from mmedge.cli.main import main

    argv = [str(tmp_path / a) if a == "x.png" else a for a in argv]
    assert main(["run", str(package), "--device", "x86-cpu", *argv]) == code
    assert message in capsys.readouterr().err


def test_tiny_model_cli_and_detection(tmp_path, capsys):
    from mmedge.cli.main import main
    from mmedge.exporter.families import detect_family
    from mmedge.exporter.source import resolve

    assert main(["tiny-model", "stable-diffusion", str(tmp_path / "sd")]) == 0
    assert (tmp_path / "sd" / "model_index.json").is_file() and "stable-diffusion" in capsys.readouterr().out
    assert detect_family(resolve(tmp_path / "sd").config).name == "text-to-image"


def test_profiler_workload(package, profile_static):
    result = profile_static(package)
    accuracy = result["accuracy"]  # static (two batch-1 UNet calls per step) against dynamic (one batch-2 call)
    assert accuracy["metric"] == "psnr_db" and accuracy["value"] > 80 and accuracy["cosine"] > 0.99999
    assert "astronaut" in result["workload"] and result["generation"] is None


def test_runtime_needs_no_torch(package, tmp_path):
    from test_slim_runtime import HEAVY, run_blocked

    code = """
        import json, sys
        import numpy as np
        from mmedge import runtime
        pipe = runtime.load(sys.argv[1], engine="onnxruntime", variant="fp32-static", device="x86-cpu")
        result = pipe.generate("a red car", steps=2, seed=0, scheduler="lcm")
        result.save(sys.argv[2])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({"heavy": heavy, "sum": float(result.pixels.sum())}))
    """
    proc = run_blocked(HEAVY, code, str(package), str(tmp_path / "car.png"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = load(package, "onnxruntime", "fp32-static").generate("a red car", steps=2, seed=0, scheduler="lcm")
    assert out["heavy"] == [] and out["sum"] == pytest.approx(float(expected.pixels.sum()), rel=1e-6)
