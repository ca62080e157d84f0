"""``export()``: one family spec → every component in every requested format → parity → package.

Per format the variants are: ONNX and OpenVINO ``fp32`` (dynamic shapes) plus ``fp32-static`` with
``static=True``; TFLite is always ``fp32-static`` (LiteRT graphs have fixed shapes). Nothing is written
to ``out_dir`` unless every file passed its parity check (see ``package_writer``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import sys
from pathlib import Path
from typing import Callable, Sequence

from mmedge.devices import profile as device_profile
from mmedge.errors import UsageError
from mmedge.exporter import mobile, package_writer, parity
from mmedge.exporter.converters import Converted
from mmedge.exporter.converters import onnx as onnx_conv
from mmedge.exporter.converters import openvino as ov_conv
from mmedge.exporter.converters import tflite as tflite_conv
from mmedge.exporter.families import detect_family, get_family
from mmedge.exporter.families.base import ComponentSpec
from mmedge.exporter.source import resolve
from mmedge.runtime.manifest import FORMATS, Artifact, Component, Manifest, Signature

TOOLS = ("mmedge", "torch", "transformers", "tokenizers", "onnx", "onnxruntime", "openvino", "litert-torch",
         "ai-edge-litert")


def tool_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _variants(fmt: str, static: bool) -> list[tuple[str, bool]]:
    if fmt == "tflite":
        return [("fp32-static", True)]
    return [("fp32", False)] + ([("fp32-static", True)] if static else [])


def _convert(fmt: str, spec: ComponentSpec, out_dir: Path, static: bool, onnx_files: dict) -> Converted:
    if fmt == "onnx":
        converted = onnx_conv.convert(spec, out_dir, static=static)
        onnx_files[(spec.name, static)] = {sig.name: sig.file for sig in converted.signatures}
        return converted
    if fmt == "openvino":
        return ov_conv.convert(spec, out_dir, static=static, onnx_files=onnx_files.get((spec.name, static)))
    return tflite_conv.convert(spec, out_dir)


def _artifact(fmt: str, variant: str, static: bool, converted: Converted, stage: Path) -> Artifact:
    def rel(p: Path) -> str:
        return p.relative_to(stage).as_posix()
    signatures = {s.name: Signature(name=s.name, file=rel(s.file), engine_key=s.engine_key, inputs=s.inputs,
                                    outputs=s.outputs) for s in converted.signatures}
    return Artifact(format=fmt, variant=variant, precision="fp32", static=static,
                    file=next(iter(signatures.values())).file, signatures=signatures,
                    extra_files=tuple(rel(p) for p in converted.extra_files))


def export(model: str | Path, out_dir: str | Path, *, family: str | None = None,
           formats: Sequence[str] | None = None, static: bool = False, device: str | None = None,
           revision: str | None = None, log: Callable[[str], None] = lambda _m: None) -> Path:
    """Export ``model`` (HF dir or hub id) into a verified package at ``out_dir``; returns its path.

    A phone ``device`` (android, ios) also gets the ``mobile/`` files (``exporter.mobile``)."""
    from mmedge.exporter.importers import piper

    if piper.is_piper_voice(model):  # a finished ONNX voice: split as it is (fixed shapes: through onnx2torch)
        return piper.export_voice(model, out_dir, formats=formats, static=static, device=device, log=log)
    phone = False
    if device is not None:
        prof = device_profile(device)
        formats = formats or list(dict.fromkeys(r.format for r in prof.preferred))
        static = static or prof.static_shapes
        phone = mobile.delegate_options(device) is not None
        if phone:
            mobile.check_formats(device, formats)
    formats = list(formats or FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UsageError(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    source = resolve(model, revision=revision)
    spec = get_family(family) if family else detect_family(source.config)
    log(f"loading {spec.name} model from {source.directory}")
    loaded = spec.load(source.directory)
    components: dict[str, list[Artifact]] = {}
    with package_writer.staging(out_dir) as stage:
        onnx_files: dict = {}
        for fmt in sorted(formats, key=FORMATS.index):  # ONNX first: OpenVINO converts from it
            for variant, is_static in _variants(fmt, static):
                for comp in loaded.components:
                    folder = stage / comp.name / f"{fmt}-{variant}"
                    folder.mkdir(parents=True, exist_ok=True)
                    log(f"exporting {comp.name} -> {fmt}/{variant}")
                    artifact = _artifact(fmt, variant, is_static, _convert(fmt, comp, folder, is_static, onnx_files), stage)
                    record = parity.check(comp, artifact, {rel: stage / rel for rel in
                                                           {s.file for s in artifact.signatures.values()}})
                    worst = max(max(c["max_abs_diff"].values()) for c in record["checks"])
                    log(f"  parity vs PyTorch on {record['engine']}: max abs diff {worst:.2e} (tolerance {comp.atol})")
                    components.setdefault(comp.name, []).append(dataclasses.replace(artifact, parity=record))
        for rel, content in loaded.files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_bytes(content)
        mobile_section = mobile.write(stage, device, loaded.components, components, log) if phone else None
        manifest = Manifest(
            family=loaded.family, task=loaded.task,
            components={c.name: Component(c.name, c.description, tuple(components[c.name])) for c in loaded.components},
            source=source.to_dict(), tools=tool_versions(),
            created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            preprocessing=loaded.preprocessing, postprocessing=loaded.postprocessing, generation=loaded.generation,
            mobile=mobile_section)
        return package_writer.commit(stage, out_dir, manifest)
