"""Phone exports (``mmedge export --device android|ios``): beside the usual artifacts, ORT-format files of the
fixed-shape ONNX graphs with their required-operators config, a compatibility report, the EP / delegate options
and Kotlin / Swift examples, all under ``mobile/`` and described by the manifest's optional ``mobile`` section.

A device profile opts in with a ``mobile`` key (``devices/profiles/android.json``, ``ios.json``); the options it
holds are copied into the package so the phone app reads them from the package, not from mmedge.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from mmedge.errors import UsageError
from mmedge.exporter import parity
from mmedge.exporter.families.base import ComponentSpec
from mmedge.exporter.mobile import compat, ort_format, snippets
from mmedge.runtime.manifest import Artifact, MobileSection, Signature

FOLDER = "mobile"
NEEDS = ("onnx", "tflite")  # fixed-shape ONNX becomes .ort; the .tflite files are the LiteRT half


def delegate_options(device: str) -> dict[str, dict] | None:
    """The profile's phone runtime options per engine, or None when ``device`` is no phone."""
    text = resources.files("mmedge.devices").joinpath("profiles", f"{device}.json").read_text(encoding="utf-8")
    mobile = json.loads(text).get("mobile")
    return None if mobile is None else {k: v for k, v in mobile.items() if isinstance(v, dict)}


def check_formats(device: str, formats: Sequence[str]) -> None:
    """A phone export needs ONNX (for .ort) and TFLite; say so before minutes of conversion."""
    missing = [f for f in NEEDS if f not in formats]
    if missing:
        raise UsageError(f"--device {device} writes .ort and .tflite files and needs the formats "
                         f"{', '.join(NEEDS)}; add {', '.join(missing)} to --formats or leave --formats out")


def _static(artifacts: list[Artifact], fmt: str) -> Artifact:
    return next(a for a in artifacts if a.format == fmt and a.static)


def write(stage: Path, device: str, specs: Sequence[ComponentSpec], artifacts: dict[str, list[Artifact]],
          log: Callable[[str], None]) -> MobileSection:
    """Write the phone files into ``stage`` (the package being built) and return the manifest section."""
    delegates = delegate_options(device) or {}
    folder = stage / FOLDER
    onnx = {s.name: _static(artifacts[s.name], "onnx") for s in specs}
    tflite = {s.name: _static(artifacts[s.name], "tflite") for s in specs}
    log(f"converting the fixed-shape ONNX graphs to ORT format for {device}")
    ort_files, config = ort_format.convert(
        {name: [stage / f for f in a.files()] for name, a in onnx.items()}, folder / "ort")
    ort: dict[str, dict] = {}
    for spec in specs:
        static = onnx[spec.name]
        sigs = {n: dataclasses.replace(s, file=ort_files[spec.name][Path(s.file).name.split(".")[0]]
                                       .relative_to(stage).as_posix())
                for n, s in static.signatures.items()}
        as_ort = dataclasses.replace(static, signatures=sigs, file=next(iter(sigs.values())).file, extra_files=())
        record = parity.check(spec, as_ort, {s.file: stage / s.file for s in sigs.values()})
        log(f"  {spec.name} .ort parity vs PyTorch: passed (tolerance {spec.atol})")
        ort[spec.name] = {"signatures": {n: s.file for n, s in sigs.items()}, "parity": record}
    log("checking NNAPI / CoreML coverage (ORT mobile usability checker)")
    report = compat.report(device, {n: {s: stage / sig.file for s, sig in a.signatures.items()} for n, a in onnx.items()},
                           {n: stage / a.file for n, a in tflite.items()}, stage)
    (folder / "compatibility.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    first = specs[0].name
    ort_first = next(iter(ort[first]["signatures"].values()))
    texts = {"README.md": snippets.readme(first, device, ort_first, tflite[first], config.relative_to(stage).as_posix(),
                                          f"{FOLDER}/compatibility.json"),
             # each example with its own platform's options: the files themselves run on both kinds of phone
             "Example.kt": snippets.kotlin(onnx[first], ort_first, tflite[first], delegate_options("android") or {}),
             "Example.swift": snippets.swift(onnx[first], ort_first, tflite[first], delegate_options("ios") or {})}
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    return MobileSection(device=device, ort=ort, required_operators=config.relative_to(stage).as_posix(),
                         report=f"{FOLDER}/compatibility.json", snippets=tuple(f"{FOLDER}/{n}" for n in texts),
                         delegates=delegates)


def summary(package: str | Path) -> list[str]:
    """Lines for the CLI after a phone export: where the files are and the compatibility numbers."""
    from mmedge.runtime import open_package

    pkg = open_package(package, verify=False)
    mobile = pkg.manifest.mobile
    if mobile is None:
        return []
    report = json.loads(pkg.file_path(mobile.report).read_text(encoding="utf-8"))
    return [f"phone files ({mobile.device}): {len(mobile.files())} under {FOLDER}/ (.ort, {Path(mobile.required_operators).name}, "
            "compatibility.json, Example.kt, Example.swift)", *compat.summary(report)]
