"""The ``mmedge`` command: thin subcommands over the public APIs.

Heavy rooms are imported inside the commands that need them, so ``mmedge run`` on a device needs only
the slim runtime. Every ``MmedgeError`` becomes one line on stderr and the error's exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmedge import __version__
from mmedge.cli.compress import add_quantize_parser
from mmedge.cli.optimize import add_optimize_parser
from mmedge.cli.run_tasks import csv_list, describe_ran
from mmedge.errors import MmedgeError, UsageError


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from mmedge.exporter.families import write_tiny_model

    path = write_tiny_model(args.family, Path(args.out_dir))
    print(f"wrote a tiny random-weight {args.family} model to {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mmedge.exporter.export import export

    formats = csv_list(args.formats) if args.formats else None
    path = export(args.model, args.out_dir, family=args.family, formats=formats, static=args.static,
                  device=args.device, revision=args.revision, log=_log)
    print(f"package written to {path}")
    if args.device:
        from mmedge.exporter.mobile import summary

        for line in summary(path):
            print(line)
    return 0


def _runtime_options(args: argparse.Namespace) -> dict:
    options = {}
    if args.threads:
        options.update(num_threads=args.threads, intra_op_num_threads=args.threads)
    if args.precision_hint:
        options["INFERENCE_PRECISION_HINT"] = args.precision_hint
    return options


def cmd_run(args: argparse.Namespace) -> int:
    from mmedge import runtime
    from mmedge.cli.run_tasks import run

    pipe = runtime.load(args.package, engine=args.engine, device=args.device, variant=args.variant,
                        verify=not args.no_verify, options=_runtime_options(args))
    return run(pipe, args)


def cmd_emotion(args: argparse.Namespace) -> int:
    """Late fusion of a face-expression and a speech-emotion package (``runtime.pipelines.emotion``)."""
    from mmedge.runtime.pipelines.emotion import EmotionRecognizer

    weights = {}
    for item in csv_list(args.weights or ""):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--weights takes face=W,speech=W (numbers), got {item!r}") from None
    recognizer = EmotionRecognizer.load(args.face_package, args.speech_package, weights=weights, engine=args.engine,
                                        device=args.device, variant=args.variant, verify=not args.no_verify,
                                        options=_runtime_options(args))
    result = recognizer.recognize(image=args.image, audio=args.audio).to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if result["label"] is None:
        print("no emotion: no face found in the image and no audio given")
        return 0
    print(f"{result['label']}  (" + ", ".join(f"{k} {v:.3f}" for k, v in list(result["probs"].items())[:3]) + ")")
    for source, probs in result["sources"].items():
        top = max(probs, key=probs.__getitem__)
        print(f"  {source} (weight {result['weights'][source]:.2f}): {top} {probs[top]:.3f}")
    if result["face"] is not None and not result["face"]["found"]:
        print("  face: no face found in the image")
    return 0


def _parity_text(parity: dict) -> str:
    """One line on how an artifact was checked: against PyTorch (exported), or against the variant it was made
    from (quantized or optimised: mode, graph error, task metric)."""
    quant = parity.get("quantization")
    if quant:
        errors = [g.get("relative_error_max") for g in (parity.get("graph_vs_fp32") or {}).values()]
        errors = [e for e in errors if e is not None]
        metrics = ((parity.get("task_metric") or {}).get("metrics") or {})
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if not k.endswith("_fp32"))
        return (f"{quant.get('mode')} of {quant.get('source_variant')}"
                + (f": graph error {max(errors):.1e}" if errors else "") + (f"; {shown}" if shown else ""))
    if not parity.get("passed"):
        return "parity not recorded"
    worst = max((max(c["max_abs_diff"].values()) for c in parity.get("checks", [])), default=None)
    return "parity ok" + (f" (max abs diff {worst:.1e})" if worst is not None else "")


def cmd_info(args: argparse.Namespace) -> int:
    from mmedge.runtime import open_package

    package = open_package(args.package, verify=False)
    m = package.manifest
    problems = package.verify() if args.verify else []
    if args.json:
        print(json.dumps({"manifest": m.to_dict(), "verified": args.verify, "problems": problems}, indent=2))
    else:
        print(f"{package.root}: family {m.family}, task {m.task}, schema {m.schema_version}")
        print(f"source: {m.source.get('model')} ({m.source.get('kind')}); created {m.created_utc}")
        for comp in m.components.values():
            print(f"component {comp.name}: {comp.description}")
            for a in comp.artifacts:
                ins = ", ".join(f"{t.name}:{t.dtype}{list(t.shape)}" for t in a.inputs)
                print(f"  {a.format:8s} {a.variant:12s} {a.file}  [{ins}]  {_parity_text(a.parity)}")
        if args.verify:
            print("verify: " + ("all %d files intact" % len(m.files) if not problems else "; ".join(problems)))
    return 3 if problems else 0


def cmd_devices(args: argparse.Namespace) -> int:
    from mmedge.devices import describe
    from mmedge.devices.profiles import THREAD_OPTIONS

    info = describe(args.root, profile_name=args.profile)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    det = info["detected"]
    print(f"detected: {det['profile']} (cores {det.get('cores')}, arch {det.get('arch')}, "
          f"int8 dot product {'yes' if det.get('has_int8_dot') else 'no'})")
    for key, value in det.get("evidence", {}).items():
        print(f"  evidence {key}: {value}")
    for note in det.get("notes", []):
        print(f"  note: {note}")
    print("engines: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["engines"].items()))
    print(f"routes of {info['profile']['name']} (tried in this order; a failure falls back to the next, reported):")
    for r in info["routes"]:
        opts = " ".join(f"{k}={'all cores' if v is None and k in THREAD_OPTIONS else json.dumps(v, separators=(',', ':'))}"
                        for k, v in r["options"].items())
        print(f"  {r['rank']}. {r['engine']}[{r['target']}] via {r['accelerator']}"
              + (" (static shapes only)" if r["static_only"] else "")
              + f": precisions {'>'.join(r['precisions'])}"
              + ("" if r["installed"] else f"; engine not installed: {r['fix']}"))
        print(f"     options {opts}")
    print("profiles:")
    for p in info["profiles"]:
        routes = " -> ".join(f"{r['engine']}[{r['target']}]" for r in p["preferred"])
        print(f"  {p['name']:12s} {p['title']}: {routes}")
    return 0


def _describe_profile(r: dict) -> str:
    lat, mem, acc, ops = r["latency_ms"], r["memory"], r["accuracy"], r["operators"]
    lines = [f"{r['engine']}/{r['variant']}: load {r['load_ms']:.1f} ms, cold {r['cold_ms']:.2f} ms, "
             f"p50 {lat['p50']:.3f} / p90 {lat['p90']:.3f} / p99 {lat['p99']:.3f} ms over {lat['runs']} runs, "
             f"{r['throughput_per_s']:.1f} calls/s, peak RSS {(mem['peak_rss_bytes'] or 0) / 2**20:.1f} MB, "
             f"files {r['files']['bytes'] / 2**20:.2f} MB"]
    if r.get("generation"):
        g = r["generation"]
        ttft = f"{g['time_to_first_token_ms']:.2f} ms" if g.get("time_to_first_token_ms") is not None else "n/a"
        speed = f"{g['tokens_per_s']:.1f}" if g.get("tokens_per_s") else "n/a"
        lines.append(f"  generation: first token {ttft}, {speed} tokens/s ({g['new_tokens']} tokens)")
    lines.append(f"  accuracy vs {acc['reference']}: " + (f"{acc['metric']} {acc['value']:.6f}" if acc["available"]
                                                          else f"n/a ({acc['reason']})"))
    lines.append("  operators: " + (", ".join(f"{o['op_type']} {o['ms_per_call']:.3f} ms" for o in ops["by_op_type"][:5])
                                    if ops["available"] else f"n/a ({ops['reason']})"))
    lines.append("  " + describe_ran(r["ran"]).replace("\n", "\n  "))
    return "\n".join(lines)


def cmd_profile(args: argparse.Namespace) -> int:
    from mmedge.runtime.profiling import profile, write_profile
    from mmedge.runtime.profiling.report import write_report

    result = profile(args.package, engines=csv_list(args.engine) if args.engine else None, device=args.device,
                     variants=csv_list(args.variants) if args.variants else None, runs=args.runs, warmup=args.warmup,
                     options=_runtime_options(args))
    print("\n".join(_describe_profile(r) for r in result["results"]))
    if args.json:
        print(f"profile written to {write_profile(result, args.json)}")
    if args.html:
        print(f"report written to {write_report([result], args.html)}")
    return 0


def cmd_int8_advice(args: argparse.Namespace) -> int:
    from mmedge.quantize.advisor import advise_int8

    advice = advise_int8(args.package, device=args.device, measure=not args.no_measure, runs=args.runs,
                         warmup=args.warmup, options=_runtime_options(args), log=_log)
    cov = advice.coverage
    print(f"device {advice.device}: {advice.isa.name} ({advice.isa.evidence}); int8 GEMM rule of thumb "
          f"{advice.isa.gemm_speedup:.1f}x fp32")
    print(f"op coverage: {cov['quantized_share']:.1%} of the call's time is in the {cov['quantized_nodes']} nodes "
          f"dynamic int8 quantizes ({cov['conv_share']:.1%} in convolutions)")
    print(f"predicted: {advice.predicted} ({advice.predicted_speedup:.2f}x)")
    if advice.measured:
        m, acc = advice.measured, advice.measured["accuracy"]
        metric = f"{acc['metric']} {acc['value']:.4f}" if acc.get("available") else "n/a"
        print(f"measured on {advice.measured_on}: {m['verdict']} ({m['speedup']:.2f}x: p50 {m['fp32_p50_ms']:.2f} ms "
              f"fp32 -> {m['int8_p50_ms']:.2f} ms int8), files {m['size_ratio']:.2f}x, {metric} vs fp32; "
              f"prediction {'confirmed' if advice.agrees else 'not confirmed'}")
    for note in advice.notes:
        print(f"note: {note}")
    print(f"advice: {advice.recommendation}")
    if args.json:
        Path(args.json).write_text(json.dumps(advice.to_dict(), indent=2), encoding="utf-8")
        print(f"advice written to {args.json}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mmedge.runtime.profiling import load_profile
    from mmedge.runtime.profiling.report import write_report

    print(f"report written to {write_report([load_profile(p) for p in args.profiles], args.html)}")
    return 0


def _add_load_options(p: argparse.ArgumentParser) -> None:
    """The options of ``runtime.load`` (and ``_runtime_options``), shared by the commands that run a package."""
    p.add_argument("--engine", choices=["onnxruntime", "openvino", "litert"])
    p.add_argument("--device", help="device profile (default: detected)")
    p.add_argument("--variant", help="package variant, e.g. fp32 or fp32-static")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--precision-hint", help="OpenVINO INFERENCE_PRECISION_HINT (default f32)")
    p.add_argument("--no-verify", action="store_true", help="skip checksum verification on open")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmedge", description="Export, package and run multimodal models on edge devices")
    parser.add_argument("--version", action="version", version=f"mmedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tiny-model", help="write a small random-weight model of a family (offline)")
    p.add_argument("family", help="clip, gpt2, llama, llava, vit-gpt2, blip, t5, marian, wav2vec2, vits, vit, "
                                     "swin2sr, stable-diffusion, speech-emotion, speecht5")
    p.add_argument("out_dir")
    p.set_defaults(func=cmd_tiny_model)

    p = sub.add_parser("export", help="export a model to a verified package (ONNX, OpenVINO IR, TFLite)")
    p.add_argument("model", help="a Hugging Face or diffusers directory or hub id, a CTranslate2 Whisper directory, a "
                                 ".gguf file, a Piper voice (.onnx + .onnx.json), or a bundled name (whisper-tiny.en, "
                                 "whisper-base, qwen2.5-coder-0.5b-instruct, efficientnet-lite0, "
                                 "realesr-animevideov3-x4, face-api, joe-us-piper)")
    p.add_argument("out_dir")
    p.add_argument("--family", help="model family (detected from config.json when omitted)")
    p.add_argument("--formats", help="comma list of onnx,openvino,tflite (default: all)")
    p.add_argument("--static", action="store_true", help="also write fixed-shape variants (NPU, phones)")
    p.add_argument("--device", help="target device profile: formats and shapes it needs")
    p.add_argument("--revision", help="hub revision")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="run a package on this device")
    p.add_argument("package")
    _add_load_options(p)
    p.add_argument("--json", action="store_true", help="print results and what ran as JSON")
    p.add_argument("--image", help="image file: CLIP zero-shot (with --labels) or embedding, classification, "
                                   "captioning, VQA (with --question), faces, super-resolution, img2img input")
    p.add_argument("--labels", help="comma-separated labels for zero-shot classification")
    p.add_argument("--template", default="{}", help="label template, e.g. 'a photo of {}'")
    p.add_argument("--text", help="CLIP: text to embed; text-to-speech: the text to speak (with --out)")
    p.add_argument("--images", help="folder of images to search")
    p.add_argument("--query", help="text query for --images")
    p.add_argument("--top-k", type=int, help="search: number of hits (default 5); classification: labels shown "
                                                        "(default 5); generation: top-k sampling")
    p.add_argument("--audio", help="speech recognition: audio file (WAV, FLAC, .raw 16 kHz 16-bit PCM)")
    p.add_argument("--language", help="Whisper: language code (default: detected; English-only models: en)")
    p.add_argument("--task", choices=["transcribe", "translate"], help="Whisper: task (default transcribe)")
    p.add_argument("--question", help="vision-language / visual question answering: a question about --image")
    p.add_argument("--prompt", help="text generation: the prompt")
    p.add_argument("--chat", action="store_true", help="text generation: interactive multi-turn chat on stdin")
    p.add_argument("--system", help="chat: system message")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float, help="sampling temperature (turns sampling on)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (turns sampling on)")
    p.add_argument("--beams", type=int, help="beam search width")
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--seed", type=int, help="sampling seed")
    p.add_argument("--speaker", help="text-to-speech: speaker id (or name) of a multi-speaker voice")
    p.add_argument("--speaker-embedding", help="text-to-speech (SpeechT5): speaker embedding .npy file")
    p.add_argument("--greedy", action="store_true", help="force greedy decoding")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument("--out", help="output file: the image (text-to-image, super-resolution) or WAV (text-to-speech)")
    p.add_argument("--tile", type=int, help="super-resolution: tile size in input pixels (0: whole image; default: "
                                            "the static tile, or whole image up to 512x512)")
    p.add_argument("--score-threshold", type=float, help="face-expression: face detection threshold (default 0.5)")
    p.add_argument("--steps", type=int, help="text-to-image: denoising steps (default: the package's, 50)")
    p.add_argument("--guidance", type=float, help="text-to-image: classifier-free guidance scale (default 7.5; <= 1 "
                                                   "turns it off)")
    p.add_argument("--scheduler", help="text-to-image: ddim, euler, dpm++2m or lcm (default: the package's)")
    p.add_argument("--negative-prompt", help="text-to-image: what the image should not show (needs guidance > 1)")
    p.add_argument("--strength", type=float, help="image-to-image (with --image): how much of the image is redrawn, "
                                                   "0-1 (default 0.8)")
    p.add_argument("--width", type=int, help="text-to-image: image width (dynamic packages; default: the model's)")
    p.add_argument("--height", type=int, help="text-to-image: image height (dynamic packages; default: the model's)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("emotion", help="emotion from a face image and/or speech: late fusion of two packages")
    p.add_argument("--face-package", help="a face-expression package (mmedge export face-api DIR)")
    p.add_argument("--speech-package", help="a speech-emotion (audio-classification) package")
    p.add_argument("--image", help="image with a face")
    p.add_argument("--audio", help="speech recording (WAV, FLAC, raw 16 kHz PCM...)")
    p.add_argument("--weights", help="fusion weights, e.g. face=0.6,speech=0.4 (default: equal)")
    _add_load_options(p)
    p.add_argument("--json", action="store_true", help="print the fused result and both sources as JSON")
    p.set_defaults(func=cmd_emotion)

    p = sub.add_parser("info", help="summarise a package; --verify checks every checksum")
    p.add_argument("package")
    p.add_argument("--verify", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("devices", help="device profiles and the detected device")
    p.add_argument("--root", default="/", help="read device files under this root (testing)")
    p.add_argument("--profile", help="show the routes of this profile (e.g. jetson-orin) instead of the detected one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("profile", help="measure latency, memory, size, operators and accuracy of each variant")
    p.add_argument("package")
    p.add_argument("--engine", help="engine(s), comma list of onnxruntime,openvino,litert (default: the device plan's)")
    p.add_argument("--device", help="device profile (default: detected)")
    p.add_argument("--variants", help="comma list, e.g. fp32,fp32-static (default: every variant of the engine)")
    p.add_argument("--runs", type=int, default=20, help="timed task calls per variant (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed task calls before them (default 3)")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--precision-hint", help="OpenVINO INFERENCE_PRECISION_HINT (default f32)")
    p.add_argument("--json", metavar="OUT", help="write the profile JSON here")
    p.add_argument("--html", metavar="OUT", help="write an HTML report of this profile here")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("int8-advice", help="predict from op coverage and the CPU's ISA whether int8 will be faster "
                                          "on a device, then confirm by measuring a quantized copy here")
    p.add_argument("package")
    p.add_argument("--device", help="target device profile (default: this machine)")
    p.add_argument("--no-measure", action="store_true", help="predict only (no quantized copy, no int8 timing)")
    p.add_argument("--runs", type=int, default=20, help="timed task calls per variant (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed task calls before them (default 3)")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--json", metavar="OUT", help="write the advice JSON here")
    p.set_defaults(func=cmd_int8_advice, precision_hint=None)

    add_quantize_parser(sub)
    add_optimize_parser(sub)

    p = sub.add_parser("report", help="compare profile JSONs (devices, variants, engines) in one HTML page")
    p.add_argument("profiles", nargs="+", help="JSON files written by mmedge profile --json")
    p.add_argument("--html", metavar="OUT", required=True, help="the HTML file to write")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MmedgeError as e:
        print(f"mmedge: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mmedge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
