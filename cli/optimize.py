"""``mmedge optimize MODEL OUT --device D``: distill -> prune -> export -> quantize -> validate -> package, with the
formats, shapes and precision chosen from the device profile where the user does not say.

The torch-level steps write Hugging Face folders under ``OUT``'s sibling work folder ``.OUT.work/`` (a student,
a pruned copy, the distillation checkpoint), so a rerun after an interruption resumes distillation from its
checkpoint and skips nothing silently: each step says what it did. A distilled model is then compared with its
teacher (both exported to ONNX fp32): task metric, median latency and size on the family's real samples. The package is written atomically by the
exporter; the quantized variants are then added to it atomically, each checked against the budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmedge.cli.compress import PRECISION_NOTE, formats_with, quantize_formats


def _say(message: str) -> None:
    print(message, flush=True)


def _distill(model: Path, spec, spec_text: str, work: Path, samples_dir: str | None) -> tuple[Path, dict]:
    from mmedge.quantize.distill import default_inputs, distill
    from mmedge.quantize.distill.student import layout_for

    family = layout_for(model).family
    inputs = [samples_dir] if samples_dir else default_inputs(family)
    student = work / "student"
    _say(f"distill: {spec_text} on {len(inputs)} {family} inputs (checkpoints in {work / 'distill-checkpoint'})")
    report = distill(model, student, inputs, spec, checkpoint_dir=work / "distill-checkpoint", log=_say)
    d = report.to_dict()
    if d.get("resumed_from"):
        _say(f"distill: resumed from the checkpoint at step {d['resumed_from']}")
    _say(f"distill: {d['teacher_params']:,} -> {d['student_params']:,} parameters, best held-out loss "
         f"{d['best_loss']:.4g} at step {d['best_step']}" + (" (stopped early)" if d["stopped_early"] else ""))
    return student, d


def _prune(model: Path, spec, spec_text: str, work: Path) -> tuple[Path, dict]:
    from mmedge.quantize.prune import prune_model_dir

    out = work / "pruned"
    report = prune_model_dir(model, out, spec, log=_say).to_dict()
    _say(f"prune: {spec_text}: {report['params_before']:,} -> {report['params_after']:,} parameters")
    return out, report  # the per-layer removals stay in pruned/prune_report.json


def _against_teacher(teacher: str, student_model: Path, student_pkg: Path, work: Path,
                     args: argparse.Namespace) -> dict:
    """The exported student against the teacher exported the same way (ONNX fp32, cached in the work folder):
    task metric, median latency and size on the family's real samples."""
    from mmedge.exporter.export import export
    from mmedge.quantize.evaluation import compare_packages
    from mmedge.quantize.samples import samples
    from mmedge.quantize.tasks import task_for
    from mmedge.runtime.package import open_package

    teacher_pkg = work / "teacher-package"
    if not (teacher_pkg / "mmedge.json").is_file():
        export(teacher, teacher_pkg, formats=["onnx"])
    student, reference = open_package(student_pkg, verify=False), open_package(teacher_pkg, verify=False)
    if ("onnx", "fp32") not in {(f, v) for f, v, _p, _s in student.manifest.variants()}:  # e.g. an NPU package
        student = open_package(export(student_model, work / "student-package", formats=["onnx"]), verify=False)
    modality = task_for(student.manifest.family, student.manifest.task).modality
    found = samples(modality, folder=args.samples, limit=args.limit)
    result = compare_packages(student, reference, found)
    lat, size = result["latency_ms"], result["package_bytes"]
    _say(f"distill: student vs teacher on {len(found)} samples: {result['metrics']}; median task call "
         f"{lat['candidate']:.1f} ms vs {lat['reference']:.1f} ms; package {size['candidate'] / 1e6:.1f} MB vs "
         f"{size['reference'] / 1e6:.1f} MB")
    return result


def cmd_optimize(args: argparse.Namespace) -> int:
    from mmedge.devices import profile as device_profile
    from mmedge.exporter.export import export
    from mmedge.exporter.source import resolve
    from mmedge.quantize.budget import parse_budget
    from mmedge.quantize.distill import parse_distill_spec
    from mmedge.quantize.plan import auto_precision, parse_options
    from mmedge.quantize.prune import parse_prune_spec
    from mmedge.runtime.package import open_package

    # every request is checked before any work starts
    prof = device_profile(args.device)
    distill_spec = parse_distill_spec(args.distill) if args.distill else None
    prune_spec = parse_prune_spec(args.prune) if args.prune else None
    options = parse_options(args.option)
    if args.budget:
        parse_budget(args.budget)
    out = Path(args.out_dir).absolute()
    work = out.parent / f".{out.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"device": prof.name, "steps": []}
    model: Path | str = args.model
    if args.distill or args.prune:
        model = resolve(args.model).directory  # the torch steps need a Hugging Face folder
    if args.distill:
        model, report = _distill(Path(model), distill_spec, args.distill, work, args.samples)
        summary["steps"].append({"step": "distill", "report": report})
    if args.prune:
        model, report = _prune(Path(model), prune_spec, args.prune, work)
        summary["steps"].append({"step": "prune", "report": {k: v for k, v in report.items() if k != "layers"}})
    formats = args.formats.split(",") if args.formats else None
    _say(f"export: {model} for {prof.title}" + (f" ({', '.join(formats)})" if formats else ""))
    export(model, out, device=args.device, formats=formats, log=lambda m: _say(f"  {m}"))
    summary["steps"].append({"step": "export", "package": str(out)})
    if args.distill:
        summary["steps"].append({"step": "student vs teacher",
                                 **_against_teacher(args.model, Path(model), out, work, args)})
    wish = None if args.quantize == "none" else args.quantize
    if wish == "auto":
        wish, why = auto_precision(args.device)
        _say(f"quantize: auto -> {wish or 'none'} ({why})")
    if wish:
        manifest = open_package(out, verify=False).manifest
        static = prof.static_shapes or None  # NPUs and phones run the fixed-shape variants
        offered = [f for f, _v, p, s in manifest.variants() if p == "fp32" and (static is None or s)]
        results = quantize_formats(out, out, wish, formats_with(wish, list(dict.fromkeys(offered))),
                                   budget=args.budget, name=None,
                                   options=options, samples_dir=args.samples,
                                   calibration_dir=args.calibration, limit=args.limit, static=static)
        summary["steps"].append({"step": "quantize", "variants": [r.to_dict() for r in results]})
    _say(f"package: {out} (mmedge run {out} --variant NAME; `mmedge info {out}` lists the variants)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        _say(f"summary written to {args.json}")
    return 0


def add_optimize_parser(sub) -> None:
    p = sub.add_parser("optimize", help="distill -> prune -> export -> quantize -> validate -> package for a device")
    p.add_argument("model", help="HF id or folder, CTranslate2 folder, GGUF file or bundled name")
    p.add_argument("out_dir")
    p.add_argument("--device", required=True, help="device profile: its routes choose formats, shapes, precision")
    p.add_argument("--distill", metavar="SPEC", help="e.g. layers=1/2,ffn=0.5,steps=200 (Whisper decoder, LMs, CLIP)")
    p.add_argument("--prune", metavar="SPEC", help="e.g. ffn=0.3,heads=0.25, or channels=0.3 for EfficientNet-Lite (structured: "
                                                    "the graphs really shrink)")
    p.add_argument("--quantize", default="auto", help=PRECISION_NOTE + "; none to skip (default auto)")
    p.add_argument("--budget", help="accuracy budget for the quantized variants, e.g. wer+1.0 or agreement>=0.98")
    p.add_argument("--formats", help="comma list (default: the device profile's formats)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="quantization backend option")
    p.add_argument("--samples", metavar="DIR", help="real inputs for distillation and the task metric")
    p.add_argument("--calibration", metavar="DIR", help="real inputs for calibration (default: --samples)")
    p.add_argument("--limit", type=int, help="use at most this many samples for calibration and the metric")
    p.add_argument("--json", metavar="OUT", help="write the summary JSON here")
    p.set_defaults(func=cmd_optimize)
