"""Smart camera on a device: describe a snapshot and answer questions about it, fully offline.

    python examples/smart_camera.py [IMAGE ...] [--question "is there a person?" ...]
                                    [--caption-package PKG] [--vqa-package PKG] [--engine litert] [--json]

For each image (default: a bundled photo, ``examples/data/photos/chelsea.jpg``) it prints a caption from an
image-to-text package (BLIP captioning, ViT+GPT-2) and the answer of a visual-question-answering package (BLIP
VQA) to each question, with the engine, format and variant that ran and the milliseconds each took. A camera
loop would call ``describe()`` on every new frame; the two pipelines are loaded once.

Without packages it builds tiny random-weight ones into ``--work`` (default: ``mmedge-smart-camera`` in the
temporary directory) on the first run, which needs the exporter (torch, transformers: the export machine), and
reuses them afterwards. Their words mean nothing (random weights), but every step runs as with real models:
export real ones with ``mmedge export Salesforce/blip-image-captioning-base cap-pkg`` and
``mmedge export Salesforce/blip-vqa-base vqa-pkg`` where the hub is reachable.

Running with packages (given, or built earlier) uses only the slim runtime (``mmedge.runtime``: numpy, Pillow,
tokenizers and one engine): no torch. An unreadable image is reported and skipped (exit code 1); a wrong package
or an empty question stops with a message (exit codes as the ``mmedge`` CLI).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmedge import runtime
from mmedge.errors import InputError, MmedgeError, UsageError

PHOTO = Path(__file__).resolve().parent / "data" / "photos" / "chelsea.jpg"
DEFAULT_QUESTION = "what is in the picture?"
#: role -> (the task its package must have, the tiny model built when no package is given)
ROLES = {"caption": ("image-to-text", "blip"), "vqa": ("visual-question-answering", "blip-vqa")}


def tiny_packages(work: Path, log: Callable[[str], None]) -> dict[str, Path]:
    """The tiny packages of every role in ``work``: built (ONNX only, a few seconds each) when missing, reused
    otherwise. Only building imports the exporter (torch)."""
    packages = {role: work / f"{tiny}-pkg" for role, (_, tiny) in ROLES.items()}
    missing = [role for role, path in packages.items() if not (path / "mmedge.json").is_file()]
    if missing:
        from mmedge.exporter.export import export
        from mmedge.exporter.families import write_tiny_model

        for role in missing:
            tiny = ROLES[role][1]
            log(f"building a tiny random-weight '{tiny}' package in {packages[role]} (first run only)")
            export(write_tiny_model(tiny, work / f"tiny-{tiny}"), packages[role], formats=["onnx"])
    return packages


def load_pipeline(role: str, package: Path, **options: Any):
    """Load ``package`` for ``role``; a package of another task is refused with the fix."""
    task = ROLES[role][0]
    pipe = runtime.load(package, **options)
    if pipe.task != task:
        raise UsageError(f"{package} is a '{pipe.family}' ({pipe.task}) package; --{role}-package needs a package "
                         f"of task {task}")
    return pipe


def ran_text(ran) -> str:
    return f"{ran.engine} {ran.format}/{ran.variant}"


@dataclass
class Observation:
    """What the camera saw in one image: a caption and one answer per question, each with what ran and how long
    it took (ms)."""

    image: str
    caption: dict
    answers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"image": self.image, "caption": self.caption, "answers": self.answers}


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, 1000 * (time.perf_counter() - start)


def describe(captioner, vqa, image: str | Path, questions: list[str], **generation: Any) -> Observation:
    """Caption ``image`` and answer each question about it (generation settings apply to both)."""
    caption, caption_ms = _timed(lambda: captioner.caption(image, **generation))
    seen = Observation(image=str(image), caption={"text": caption.text, "tokens": caption.tokens,
                                                  "ran": ran_text(caption.ran), "ms": round(caption_ms, 1)})
    for question in questions:
        answer, answer_ms = _timed(lambda: vqa.answer(image, question, **generation))
        seen.answers.append({"question": question, "text": answer.text, "tokens": answer.tokens,
                             "ran": ran_text(answer.ran), "ms": round(answer_ms, 1)})
    return seen


def _print(seen: Observation) -> None:
    print(Path(seen.image).name)
    c = seen.caption
    print(f"  caption: {c['text']!r}  [{c['ran']}, {c['ms']:.0f} ms]")
    for a in seen.answers:
        print(f"  Q: {a['question']}\n  A: {a['text']!r}  [{a['ran']}, {a['ms']:.0f} ms]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Caption images and answer questions about them (smart camera).")
    p.add_argument("images", nargs="*", type=Path, help=f"images (default: the bundled {PHOTO.name})")
    p.add_argument("--question", action="append", help=f"a question, repeatable (default: {DEFAULT_QUESTION!r})")
    p.add_argument("--caption-package", type=Path, help="an image-to-text package (default: a tiny one in --work)")
    p.add_argument("--vqa-package", type=Path, help="a visual-question-answering package (default: tiny, in --work)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmedge-smart-camera",
                   help="where the tiny default packages are built and kept")
    p.add_argument("--engine", choices=["onnxruntime", "openvino", "litert"], help="default: the device plan's")
    p.add_argument("--variant", help="package variant, e.g. fp32 or fp32-static")
    p.add_argument("--device", help="device profile (default: detected)")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--max-new-tokens", type=int, help="longest caption/answer (default: the package's)")
    p.add_argument("--beams", type=int, help="beam search width (default: the package's, greedy)")
    p.add_argument("--json", action="store_true", help="one JSON object per image instead of text")
    args = p.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    options = {"engine": args.engine, "variant": args.variant, "device": args.device,
               "options": ({"num_threads": args.threads, "intra_op_num_threads": args.threads,
                            "INFERENCE_NUM_THREADS": args.threads} if args.threads else None)}
    generation = {k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("num_beams", args.beams)) if v}
    questions = args.question or [DEFAULT_QUESTION]
    failed = 0
    try:
        for question in questions:  # an empty question fails before any package is built or loaded
            if not question.strip():
                raise InputError("a --question is empty; ask something about the image, e.g. "
                                 f"--question {DEFAULT_QUESTION!r}")
        given = {"caption": args.caption_package, "vqa": args.vqa_package}
        if not all(given.values()):
            log("no package given for " + " and ".join(r for r, v in given.items() if not v)
                + ": using tiny random-weight models (their words mean nothing)")
            given = {**tiny_packages(args.work, log), **{r: v for r, v in given.items() if v}}
        captioner = load_pipeline("caption", given["caption"], **options)
        vqa = load_pipeline("vqa", given["vqa"], **options)
        for role, pipe in (("caption", captioner), ("vqa", vqa)):
            log(f"{role}: {given[role]} ({pipe.family}) on {ran_text(pipe.ran)} (device profile {pipe.ran.device})")
        for image in args.images or [PHOTO]:
            try:
                seen = describe(captioner, vqa, image, questions, **generation)
            except InputError as e:  # an unreadable snapshot: report it, go on with the others
                print(f"{image.name}: FAILED: {e}", file=sys.stderr)
                failed += 1
                continue
            print(json.dumps(seen.to_dict())) if args.json else _print(seen)
    except MmedgeError as e:
        print(f"smart_camera: error: {e}", file=sys.stderr)
        return e.exit_code
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
