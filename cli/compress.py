"""``mmedge quantize``: add compressed variants to an existing package, with an accuracy budget."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmedge.errors import UsageError
from mmedge.runtime.manifest import FORMATS

PRECISION_NOTE = ("int8, int4, fp16 (the best scheme per format and family), auto (what the device's plan prefers) "
                  "or a format's own mode: onnx dynamic-int8|static-int8|fp16|int4|optimized (fp32, ONNX Runtime's "
                  "graph optimisation), openvino "
                  "static-int8|int8-weights|int4-weights|fp16, tflite dynamic-int8|int8-weights|int4-weights|fp16")


def _log(message: str) -> None:
    print(f"  {message}", flush=True)


def quantize_formats(package: Path, out: Path, wish: str, formats: list[str], *, budget: str | None,
                     name: str | None, options: dict, samples_dir: str | None, calibration_dir: str | None,
                     limit: int | None, static: bool | None, source: str | None = None) -> list:
    """One ``add_variant`` per format (each writes the package whole; the next starts from it)."""
    from mmedge.quantize.compress import add_variant
    from mmedge.quantize.plan import scheme_for
    from mmedge.quantize.samples import samples
    from mmedge.quantize.tasks import task_for
    from mmedge.runtime.package import open_package

    manifest = open_package(package, verify=False).manifest
    modality = task_for(manifest.family, manifest.task).modality
    evaluation = samples(modality, folder=samples_dir, limit=limit)
    calibrating = samples(modality, folder=calibration_dir, limit=limit) if calibration_dir else None
    results, current = [], package
    for fmt in formats:
        scheme = scheme_for(wish, fmt, manifest.family, options)
        print(f"{fmt}: {scheme.mode} ({scheme.precision})" + (f", budget {budget}" if budget else ""), flush=True)
        result = add_variant(current, out, scheme, name=name, budget=budget, samples=evaluation,
                             calibration=calibrating, static=static, source=source, log=_log)
        current = out
        size = ", ".join(f"{c} {s['ratio']:.2f}x" for c, s in result.sizes.items())
        excluded = f"; {len(result.excluded)} layers kept in float" if result.excluded else ""
        print(f"{fmt}/{result.variant}: {result.metrics} ; size vs fp32: {size}{excluded}", flush=True)
        results.append(result)
    return results


def formats_with(wish: str, formats: list[str]) -> list[str]:
    """``formats`` that have ``wish`` when it is a format's own mode (e.g. ``optimized``: ONNX only), saying which
    are left as they are; all of them for int8/int4/fp16."""
    from mmedge.quantize.plan import WISHES
    from mmedge.quantize.scheme import MODES

    if wish in WISHES or not any(wish in MODES[f] for f in formats):
        return formats
    kept = [f for f in formats if wish in MODES[f]]
    if len(kept) < len(formats):
        print(f"{wish} is a mode of {', '.join(kept)} only: {', '.join(f for f in formats if f not in kept)} "
              "left as they are")
    return kept


def cmd_quantize(args: argparse.Namespace) -> int:
    from mmedge.exporter.package_writer import recover
    from mmedge.quantize.plan import auto_precision, parse_options
    from mmedge.runtime.package import open_package

    package = Path(args.package)
    recover(package)  # an earlier quantize killed while swapping the package in: the previous one is put back
    wish = args.mode
    if wish == "auto":
        if not args.device:
            raise UsageError("--mode auto needs --device (the profile whose plan chooses the precision)")
        wish, why = auto_precision(args.device)
        print(why)
        if wish is None:
            print("nothing to quantize for this device (pass --mode int8|int4|fp16 to force one)")
            return 0
    offered = {f for f, _v, p, _s in open_package(package, verify=False).manifest.variants() if p == "fp32"}
    formats = args.formats.split(",") if args.formats else formats_with(wish, [f for f in FORMATS if f in offered])
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    results = quantize_formats(package, Path(args.out or package), wish, formats, budget=args.budget,
                               name=args.name, options=parse_options(args.option), samples_dir=args.samples,
                               calibration_dir=args.calibration, limit=args.limit,
                               static=True if args.static else None, source=args.source)
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=2), encoding="utf-8")
        print(f"results written to {args.json}")
    return 0


def add_quantize_parser(sub) -> None:
    p = sub.add_parser("quantize", help="add int8/int4/fp16 variants to a package, checked against an accuracy "
                                        "budget on the family's task metric")
    p.add_argument("package")
    p.add_argument("--mode", required=True, help=PRECISION_NOTE)
    p.add_argument("--formats", help="comma list (default: every format the package has in fp32)")
    p.add_argument("--budget", help="e.g. wer+1.0, agreement>=0.98, perplexity+0.5, cosine>=0.995, psnr>=35 "
                                    "(missed: the most sensitive layers stay float until it holds)")
    p.add_argument("--name", help="variant name (default: the precision, e.g. int8; -static for fixed shapes)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="backend option, repeatable: per_channel=true, calibrate_method=entropy, "
                        "activation_type=int16, preset=U8S8, group_size=64, ratio=0.8, awq=true, block_size=32")
    p.add_argument("--samples", metavar="DIR", help="real inputs for the task metric (default: bundled photos, "
                                                    "LibriVox clips with transcripts, sentences)")
    p.add_argument("--calibration", metavar="DIR", help="real inputs for calibration (default: the --samples)")
    p.add_argument("--limit", type=int, help="use at most this many samples")
    p.add_argument("--static", action="store_true", help="quantize the fixed-shape fp32 variants")
    p.add_argument("--source", metavar="VARIANT", help="fp32 variant to start from, e.g. fp32-opt (the graph "
                                                       "`--mode optimized` wrote; default: the exported fp32)")
    p.add_argument("--out", help="write here instead of updating the package in place")
    p.add_argument("--device", help="device profile for --mode auto")
    p.add_argument("--json", metavar="OUT", help="write the results JSON here")
    p.set_defaults(func=cmd_quantize)
