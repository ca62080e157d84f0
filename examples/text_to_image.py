"""Text-to-image on a device: turn a list of prompts into PNG files with a Stable Diffusion package, offline.

    python examples/text_to_image.py "a red bicycle" "a lighthouse at dusk" [--prompts prompts.txt]
                                     [--package PKG] [--out images/] [--steps 20] [--guidance 7.5]
                                     [--scheduler dpm++2m] [--seed 0] [--negative-prompt "blurry"]
                                     [--image sketch.png --strength 0.6] [--engine litert] [--json]

Each prompt becomes ``OUT/NN-words-of-the-prompt.png`` with its own seed (``--seed`` + its index, so any image
can be made again alone), and one line saying the file, the seed, the seconds taken and the engine, format and
variant that ran (``--json``: one JSON object per image, with the timings of each stage). ``--image`` starts every
prompt from that picture (image-to-image; ``--strength`` says how much of it is redrawn).

Without ``--package`` it builds a tiny random-weight Stable Diffusion package (ONNX) into ``--work`` on the first
run, which needs the exporter (torch, diffusers: the export machine), and reuses it afterwards; its images are
noise-like (random weights) but every step runs as with a real model. With a package (``mmedge export
./stable-diffusion-v1-5 sd-pkg --static`` on the export machine) it needs only the slim runtime (numpy, Pillow,
tokenizers and one engine): no torch. A prompt too long for the text encoder (77 tokens for SD) is reported and
skipped (exit code 1); bad options stop with a message (exit codes as the ``mmedge`` CLI).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

from mmedge import runtime
from mmedge.errors import InputError, MmedgeError, StaticShapeError, UsageError

TASK = "text-to-image"


def tiny_package(work: Path, log: Callable[[str], None]) -> Path:
    """The tiny package in ``work``: built (ONNX only, ~30 s) when missing, reused otherwise. Only building imports
    the exporter (torch)."""
    package = work / "stable-diffusion-pkg"
    if not (package / "mmedge.json").is_file():
        from mmedge.exporter.export import export
        from mmedge.exporter.families import write_tiny_model

        log(f"building a tiny random-weight Stable Diffusion package in {package} (first run only)")
        export(write_tiny_model("stable-diffusion", work / "tiny-stable-diffusion"), package, formats=["onnx"])
    return package


def file_name(index: int, prompt: str) -> str:
    """``NN-first-words.png``: sortable, readable, safe on every file system."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())[:6]
    return f"{index:02d}-{'-'.join(words) or 'unconditional'}.png"


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file:
        try:
            prompts += [line.strip() for line in args.prompts_file.read_text(encoding="utf-8").splitlines()
                        if line.strip()]
        except OSError as e:
            raise UsageError(f"cannot read --prompts {args.prompts_file}: {e}") from None
    if not prompts:
        raise UsageError("give at least one prompt, e.g. \"a red bicycle\", or --prompts FILE (one per line)")
    return prompts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate an image per prompt with a Stable Diffusion package.")
    p.add_argument("prompts", nargs="*", help="prompts ('' is an unconditional image)")
    p.add_argument("--prompts", dest="prompts_file", type=Path, help="a text file with one prompt per line")
    p.add_argument("--package", type=Path, help="a text-to-image package (default: a tiny one in --work)")
    p.add_argument("--out", type=Path, default=Path("images"), help="folder for the PNG files (default: images/)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmedge-text-to-image",
                   help="where the tiny default package is built and kept")
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance (default: the package's, 7.5)")
    p.add_argument("--scheduler", help="ddim, euler, dpm++2m or lcm (default: the package's)")
    p.add_argument("--negative-prompt", help="what no image should show")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; the next ones count up (default 0)")
    p.add_argument("--image", type=Path, help="start every image from this picture (image-to-image)")
    p.add_argument("--strength", type=float, help="image-to-image: how much is redrawn, 0-1 (default 0.8)")
    p.add_argument("--engine", choices=["onnxruntime", "openvino", "litert"], help="default: the device plan's")
    p.add_argument("--variant", help="package variant, e.g. fp32 or fp32-static")
    p.add_argument("--device", help="device profile (default: detected)")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="one JSON object per image instead of text")
    args = p.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    failed = 0
    try:
        prompts = read_prompts(args)
        if args.image and not args.image.is_file():
            raise InputError(f"--image {args.image} not found; give the path of an existing picture")
        package = args.package or tiny_package(args.work, log)
        pipe = runtime.load(package, engine=args.engine, variant=args.variant, device=args.device,
                            options={"num_threads": args.threads, "intra_op_num_threads": args.threads,
                                     "INFERENCE_NUM_THREADS": args.threads} if args.threads else None)
        if pipe.task != TASK:
            raise UsageError(f"{package} is a '{pipe.family}' ({pipe.task}) package; give a {TASK} package")
        log(f"model: {package} on {pipe.ran.engine} {pipe.ran.format}/{pipe.ran.variant} "
            f"(device profile {pipe.ran.device})")
        args.out.mkdir(parents=True, exist_ok=True)
        for i, prompt in enumerate(prompts):
            try:
                result = pipe.generate(prompt, negative_prompt=args.negative_prompt, steps=args.steps,
                                       guidance=args.guidance, scheduler=args.scheduler, seed=args.seed + i,
                                       image=args.image, strength=args.strength)
            except StaticShapeError as e:  # this prompt is too long for the text encoder: report it, go on
                print(f"{prompt!r}: FAILED: {e}", file=sys.stderr)
                failed += 1
                continue
            path = result.save(args.out / file_name(i, prompt))
            info = {"file": str(path), **result.to_dict()}
            if args.json:
                print(json.dumps(info))
            else:
                ran = result.ran
                print(f"{path}  seed {result.seed}  {result.timings['total_ms'] / 1000:.1f} s  "
                      f"{ran.engine} {ran.format}/{ran.variant}  {prompt!r}")
    except MmedgeError as e:
        print(f"text_to_image: error: {e}", file=sys.stderr)
        return e.exit_code
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
