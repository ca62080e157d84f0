"""Run a CLIP package on the NVIDIA routes of the jetson-orin profile (TensorRT EP, CUDA EP) and compare with CPU.

Usage: python scripts/gpu_check.py PACKAGE [CACHE_DIR]  (scripts/gpu_check.sh sets up the environment)

Prints, per route, what really ran (providers, fallbacks and why) and the largest difference of the image and
text embeddings and the zero-shot probabilities from the CPU run. Exits non-zero only when a route crashes: a
route that falls back is a result to read, not a failure (e.g. TensorRT without its libraries).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from mmedge import runtime

ROOT = Path(__file__).resolve().parent.parent
IMAGES = sorted((ROOT / "examples/data/photos").glob("*.jpg"))[:2]
LABELS = ["a photo of an astronaut", "a photo of a cat", "a diagram"]
ROUTES = {"cpu": ["CPUExecutionProvider"],
          "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
          "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}


def outputs(package: str, providers: list[str], cache: str) -> tuple[dict[str, np.ndarray], dict, float]:
    start = time.perf_counter()
    clip = runtime.load(package, engine="onnxruntime", device="jetson-orin", variant="fp32",
                        options={"providers": providers, "cache_dir": cache})
    load_s = time.perf_counter() - start
    result = clip.zero_shot(IMAGES[0], LABELS)
    return ({"image": clip.embed_images(IMAGES), "text": clip.embed_text(LABELS), "probs": np.array(result.probs)},
            result.ran.to_dict(), load_s)


def main(package: str, cache: str) -> int:
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):        # onnxruntime-gpu >= 1.21: CUDA/cuDNN from the nvidia-* wheels
        ort.preload_dlls()
    print(f"onnxruntime {ort.__version__}, providers in this build: {ort.get_available_providers()}")
    reference, _, _ = outputs(package, ROUTES["cpu"], cache)
    for name in ("cuda", "tensorrt"):
        got, ran, load_s = outputs(package, ROUTES[name], cache)
        component = next(iter(ran["components"].values()))
        diff = {k: float(np.abs(got[k] - reference[k]).max()) for k in reference}
        print(f"\n== {name}: ran providers {component['providers']}, load {load_s:.1f} s")
        print("   max |diff| vs CPU: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
        for f in ran["fallbacks"]:
            print(f"   fallback: {f.get('component', '')}: {f['what']}: {f['why']}")
        trt = component["options"].get("provider_options", {}).get("TensorrtExecutionProvider")
        if "TensorrtExecutionProvider" in ROUTES[name]:
            print("   tensorrt options: " + json.dumps(trt))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else str(Path(sys.argv[1]).parent / "cache")))
