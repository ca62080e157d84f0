"""Runs tiny packages with the slim runtime and writes what came out as JSON.

The same file runs on the x86 host (the reference) and inside the emulated Pi (copied into the work dir), so both
sides do exactly the same calls. It imports only the slim runtime's dependencies (numpy, Pillow, tokenizers, the
engines), never the tests or torch: the emulated venv has nothing else.

    python pi_check.py --clip CLIP_PKG --gpt2 GPT2_PKG --out result.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mmedge import runtime
from mmedge.devices import ArtifactRef, detect, plan

#: (engine, variant) pairs per package: ONNX Runtime on the dynamic graphs, LiteRT on the fixed-shape ones.
RUNS = (("onnxruntime", "fp32"), ("litert", "fp32-static"))
LABELS = ["a photo of a cat", "a photo of a dog", "a diagram"]
#: a prompt on which the tiny random GPT-2 changes token mid-way (most prompts repeat one token throughout)
PROMPT = "The quick brown fox"
NEW_TOKENS = 12


def _image() -> np.ndarray:
    """A fixed pseudo-random RGB image: the same bytes on every machine, no file or decoder involved."""
    return np.random.default_rng(0).integers(0, 256, size=(72, 96, 3), dtype=np.uint8)


def _plan(package: Path, device) -> list[dict]:
    refs = [ArtifactRef(format=f, variant=v, precision=p, static=s)
            for f, v, p, s in runtime.open_package(package, verify=False).manifest.variants()]
    return [c.to_dict() for c in plan(refs, device).choices]


def check_clip(package: Path) -> dict:
    results = {}
    for engine, variant in RUNS:
        clip = runtime.load(package, engine=engine, variant=variant)
        results[engine] = {
            "probs": clip.zero_shot(_image(), LABELS).probs,
            "image_embeds": clip.embed_images([_image()])[0].tolist(),
            "text_embeds": clip.embed_text(LABELS[:1])[0].tolist(),
            "ran": clip.ran.to_dict(),
        }
    return results


def check_gpt2(package: Path) -> dict:
    results = {}
    for engine, variant in RUNS:
        lm = runtime.load(package, engine=engine, variant=variant)
        out = lm.generate(PROMPT, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1)
        results[engine] = {"tokens": out.tokens, "ran": lm.ran.to_dict()}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--gpt2", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    device = detect()
    report = {"device": device.to_dict(),
              "plan": {"clip": _plan(args.clip, device), "gpt2": _plan(args.gpt2, device)},
              "clip": check_clip(args.clip), "gpt2": check_gpt2(args.gpt2)}
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
