"""A Piper voice packaged split (``importers.piper_split``): dynamic halves that are the voice's own nodes, and
fixed-shape halves (ONNX, OpenVINO, TFLite) exported through mmedge's converters from onnx2torch modules.

Every format/variant is checked end to end through the runtime's own glue (``piper_tts.synthesize``) against the
voice's whole graph on ONNX Runtime with noise 0 (``_whole_voice_check``; on the joe voice: 0.0 for the dynamic
ONNX halves, which are the voice's nodes unchanged, ~1e-5 for OpenVINO and the fixed-shape files). Each
fixed-shape file is also checked against its PyTorch module (``exporter.parity``, as every family) and, half by
half, against the voice's own nodes at the unpadded length (``piper_split.truth_check``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from mmedge.errors import ExportError, ParityError
from mmedge.exporter import package_writer, parity
from mmedge.exporter.importers import piper_split
from mmedge.exporter.parity import ENGINE_OF_FORMAT, REFERENCE_OPTIONS
from mmedge.runtime.engines.base import open_session
from mmedge.runtime.manifest import Artifact, Component, Manifest, Signature, TensorSpec
from mmedge.runtime.pipelines.piper_tts import synthesize
from mmedge.runtime.runner import ComponentRunner

#: Fixed shapes: phoneme ids per sentence (``^ _ (p _)* $``: ~126 phonemes) and frames (1024 · 256 samples =
#: 11.9 s at 22.05 kHz); ``export_voice(..., limits=...)`` may ask for others.
MAX_PHONEMES, MAX_FRAMES = 256, 1024
#: The split voice against the whole graph, end to end (measured on joe: see tests/test_piper_tts.py).
ATOL = 1e-4


def _dynamic_signature(half: onnx.ModelProto, rel: str) -> Signature:
    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        t = value.type.tensor_type
        dtype = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}[t.elem_type]
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        return TensorSpec(value.name, dtype, dims, value.name, tuple(d if isinstance(d, str) else None for d in dims))

    return Signature(name="default", file=rel, inputs=tuple(spec(i) for i in half.graph.input),
                     outputs=tuple(spec(o) for o in half.graph.output))


def _dynamic(fmt: str, name: str, half: onnx.ModelProto, stage: Path) -> Artifact:
    folder = stage / name / f"{fmt}-fp32"
    folder.mkdir(parents=True)
    extra: tuple[str, ...] = ()
    path = folder / "model.onnx"
    onnx.save(half, str(path))
    if fmt == "openvino":
        import openvino as ov

        xml = folder / "model.xml"
        try:
            ov.save_model(ov.convert_model(str(path)), str(xml), compress_to_fp16=False)
        except Exception as e:  # OpenVINO raises its own exception types
            raise ExportError(f"OpenVINO could not convert the Piper voice's {name}: "
                              f"{str(e).strip().splitlines()[0][:300]}; export with --formats onnx") from None
        path.unlink()
        path, extra = xml, (xml.with_suffix(".bin").relative_to(stage).as_posix(),)
    rel = path.relative_to(stage).as_posix()
    sig = _dynamic_signature(half, rel)
    return Artifact(format=fmt, variant="fp32", precision="fp32", static=False, file=rel,
                    signatures={"default": sig}, extra_files=extra)


def _whole_voice_check(stage: Path, fmt: str, artifacts: dict[str, Artifact], samples: list[dict[str, np.ndarray]],
                       reference: list[np.ndarray], hop: int, sampling_rate: int) -> dict:
    """Both halves of one format/variant through the runtime's own numpy glue (``piper_tts.synthesize``, noise 0)
    against the whole voice graph on ONNX Runtime: the same waveform within ``ATOL``."""
    engine = ENGINE_OF_FORMAT[fmt]
    runners = {name: ComponentRunner(name, a, {s.file: open_session(engine, stage / s.file, precision="fp32",
                                                                     options=REFERENCE_OPTIONS.get(engine))
                                              for s in a.signatures.values()})
               for name, a in artifacts.items()}
    runners["decoder"].trust({"prior_latents"})
    checks = []
    for seed, (feed, expected) in enumerate(zip(samples, reference)):
        got = synthesize(runners["encoder"], runners["decoder"], feed, np.random.default_rng(seed), hop=hop,
                         sampling_rate=sampling_rate)
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        checks.append({"phoneme_ids": int(feed["input"].shape[1]), "samples": int(expected.size), "seed": seed,
                       "max_abs_diff": {"output": diff}, "passed": diff <= ATOL})
    record = {"reference": "the whole voice graph on onnxruntime (noise 0)", "engine": engine, "tolerance": ATOL,
              "checks": checks, "passed": all(c["passed"] for c in checks)}
    if not record["passed"]:
        worst = max(c["max_abs_diff"]["output"] for c in checks)
        raise ParityError(f"the split voice ({fmt}, {next(iter(artifacts.values())).variant}) differs from the whole "
                          f"voice graph by {worst:.3g} (tolerance {ATOL}; inf: another length)")
    return record


def export_split(graph_path: Path, config_path: Path, config: dict, out_dir: str | Path, *, formats: Sequence[str],
                 static: bool, source_name: str, samples: list[dict[str, np.ndarray]],
                 max_phonemes: int = MAX_PHONEMES, max_frames: int = MAX_FRAMES, device: str | None = None,
                 log: Callable[[str], None] = lambda _m: None) -> Path:
    """Package the voice at ``graph_path`` (config read and checked by the caller) at ``out_dir``: dynamic halves
    in the ONNX/OpenVINO ``formats``; with ``static``, fixed-shape halves in every one of ``formats``. ``samples``
    are whole-graph feeds with noise 0 for the end-to-end check. A phone ``device`` (android, ios) also gets the
    ``mobile/`` files from the fixed-shape halves, as every other family does (``exporter.mobile``)."""
    from mmedge.exporter import mobile
    from mmedge.exporter.export import _artifact, _convert, tool_versions

    phone = device is not None and mobile.delegate_options(device) is not None
    if phone:
        mobile.check_formats(device, formats)

    speakers = int(config.get("num_speakers", 1))
    if static and speakers > 1:
        raise ExportError("fixed-shape variants of multi-speaker Piper voices are not made yet; export without "
                          "--static and TFLite (onnx, openvino)")
    voice = onnx.load(str(graph_path))
    cut = piper_split.find_cut(voice)
    halves = {name: piper_split.extract(voice, cut, name) for name in ("encoder", "decoder")}
    channels = piper_split.prior_channels(voice, cut)
    _rates, hop = piper_split.hop_length(halves["decoder"])
    rate = int(config["audio"]["sample_rate"])
    whole = ort.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    reference = [whole.run(None, feed)[0].reshape(-1) for feed in samples]
    components: dict[str, list[Artifact]] = {"encoder": [], "decoder": []}
    mobile_section = None
    with package_writer.staging(out_dir) as stage:
        for fmt in [f for f in ("onnx", "openvino") if f in formats]:
            made = {name: _dynamic(fmt, name, half, stage) for name, half in halves.items()}
            log(f"checking the split voice ({fmt}) against the whole voice graph")
            record = _whole_voice_check(stage, fmt, made, samples, reference, hop, rate)
            for name, artifact in made.items():
                components[name].append(dataclasses.replace(artifact, parity={"voice_graph": record}))
        if static:
            symbols = 1 + max(i for ids in config["phoneme_id_map"].values() for i in ids)
            log(f"fixed shapes: {max_phonemes} phoneme ids, {max_frames} frames (onnx2torch)")
            specs = piper_split.static_specs(halves["encoder"], halves["decoder"], symbols=symbols, channels=channels,
                                             max_phonemes=max_phonemes, max_frames=max_frames)
            onnx_files: dict = {}
            for fmt in [f for f in ("onnx", "openvino", "tflite") if f in formats]:  # OpenVINO reuses the ONNX
                made = {}
                for spec in specs:
                    folder = stage / spec.name / f"{fmt}-fp32-static"
                    folder.mkdir(parents=True)
                    log(f"exporting {spec.name} -> {fmt}/fp32-static")
                    artifact = _artifact(fmt, "fp32-static", True, _convert(fmt, spec, folder, True, onnx_files), stage)
                    files = {s.file: stage / s.file for s in artifact.signatures.values()}
                    record = parity.check(spec, artifact, files)
                    record["voice_nodes"] = piper_split.truth_check(spec, artifact, files, halves[spec.name])
                    made[spec.name] = dataclasses.replace(artifact, parity=record)
                log(f"checking the fixed-shape split voice ({fmt}) against the whole voice graph")
                record = _whole_voice_check(stage, fmt, made, samples, reference, hop, rate)
                for name, artifact in made.items():
                    components[name].append(dataclasses.replace(artifact, parity={**artifact.parity,
                                                                                   "voice_graph": record}))
            if phone:
                mobile_section = mobile.write(stage, device, specs, components, log)
        shutil.copyfile(config_path, stage / "voice.onnx.json")
        card = graph_path.with_name("MODEL_CARD")
        if card.is_file():
            shutil.copyfile(card, stage / "MODEL_CARD")
        inference = config.get("inference") or {}
        manifest = Manifest(
            family="piper-tts", task="text-to-speech",
            components={"encoder": Component("encoder", "Piper text encoder + duration predictor (the voice's nodes):"
                                                        " phoneme ids -> log durations, prior",
                                             tuple(components["encoder"])),
                        "decoder": Component("decoder", "Piper inverted flow + HiFi-GAN (the voice's nodes): prior "
                                                        "latents over frames -> waveform", tuple(components["decoder"]))},
            source={"model": source_name, "kind": "piper-voice", "revision": None,
                    "voice_sha256": hashlib.sha256(graph_path.read_bytes()).hexdigest(),
                    "config_sha256": hashlib.sha256(config_path.read_bytes()).hexdigest(),
                    "piper_version": config.get("piper_version"), "dataset": config.get("dataset"),
                    "language": (config.get("language") or {}).get("code"),
                    "split": {"cut_tensors": cut.tensors,
                              "fp32": "the voice's own nodes on each side of the cut (onnx.utils.Extractor); "
                                      "OpenVINO IRs converted from them (fp32)",
                              "fp32-static": "shapes fixed and folded, the duration flows' spline and constant "
                                             "slices rewritten, onnx2torch, mmedge's converters; checked against "
                                             "the PyTorch modules and the voice's own nodes"}},
            tools=tool_versions(), created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            preprocessing={"phonemes": {"type": config.get("phoneme_type", "espeak"),
                                        "espeak_voice": (config.get("espeak") or {}).get("voice", ""),
                                        "phoneme_id_map": config["phoneme_id_map"],
                                        "vowel_clusters": config.get("vowel_clusters") or []},
                           "speakers": {"num_speakers": speakers,
                                        "speaker_id_map": config.get("speaker_id_map") or {}}},
            postprocessing={"audio": {"sampling_rate": rate, "peak_normalize": True, "hop_length": hop,
                                      **({"max_phonemes": max_phonemes, "max_frames": max_frames} if static else {})}},
            generation={"sample_rate": rate,
                        "noise_scale": float(inference.get("noise_scale", 0.667)),
                        "length_scale": float(inference.get("length_scale", 1.0)),
                        "noise_w": float(inference.get("noise_w", 0.8))},
            mobile=mobile_section)
        return package_writer.commit(stage, out_dir, manifest)
