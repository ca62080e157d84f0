"""The model package manifest (`mmedge.json`): the contract between the exporter and the runtime.

Both sides use these classes: the exporter builds them and writes ``to_dict()``; the runtime reads the
JSON back with ``Manifest.from_dict`` which validates every field it relies on, so a damaged or foreign
manifest fails here with a ``PackageError`` instead of deep inside an engine.

Schema version 1 (changes must bump ``SCHEMA_VERSION`` and update the exporter and runtime together)::

    schema_version: 1
    family, task: str                      # e.g. "clip", "zero-shot-image-classification"
    source: {model, kind, revision, config_sha256}
    tools: {name: version}                 # mmedge, torch, transformers, onnx, openvino, litert-torch ...
    created_utc: str
    components: {name: {description, artifacts: [Artifact]}}
    preprocessing, postprocessing, generation: free-form dicts owned by the family
    files: {relative path: sha256}         # every file of the package except mmedge.json
    mobile: MobileSection                  # optional; only phone exports (mmedge export --device android|ios)

    MobileSection: {device, ort, required_operators, report, snippets, delegates}
        ort: {component: {signatures: {name: file}, parity}}  # ORT-format (.ort) copies of the fixed-shape
            # ONNX graphs, checked against PyTorch like every artifact
        required_operators: file           # ORT's required-operators config for a reduced-size ORT mobile build
        report: file                       # compatibility report (JSON): NNAPI / CoreML partitions, LiteRT GPU
        snippets: [file]                   # Kotlin / Swift examples and their README
        delegates: {engine: options}       # the EP / delegate options to use on the phone (NNAPI flags, CoreML
            # compute units, QNN HTP, XNNPACK; LiteRT GPU delegate), as the device profile states them
    ``mobile`` is optional and additive: a v1 reader that predates it ignores unknown keys (``from_dict`` reads
    only the keys it knows), so it did not need a schema bump; packages without it omit the key entirely.

    Artifact: {format, variant, precision, static, file, extra_files, signatures, parity}
    signatures: {name: {file, engine_key, inputs, outputs}}  # entry points: one per graph, or per TFLite
        # signature (a static decoder has "decode" and one "prefill_N" per prompt bucket); the first is the default
    TensorSpec: {name, engine_name, dtype, shape, dims}  # shape: ints (fixed) or strings (named dynamic dims);
        # dims: the axis names, kept for fixed shapes too (which axis is "batch")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mmedge.errors import PackageError, SchemaVersionError

SCHEMA_VERSION = 1
MANIFEST_NAME = "mmedge.json"
FORMATS = ("onnx", "openvino", "tflite")
PRECISIONS = ("fp32", "fp16", "int8", "int4")
DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")


def _require(d: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise PackageError(f"manifest: {where} lacks '{key}'; re-export the package with `mmedge export`")
    value = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # True is an int in Python
        raise PackageError(f"manifest: {where}.{key} has the wrong type ({type(value).__name__}); re-export the package")
    return value


def _optional(d: dict, key: str, kind: type, where: str) -> Any:
    """An optional field: None when absent or null, else type-checked like ``_require``."""
    return None if d.get(key) is None else _require(d, key, kind, where)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its logical name (what pipelines use), the engine's name and its contract."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    engine_name: str = ""
    dims: tuple[str | None, ...] = ()  # what each axis is ("batch", "sequence"...), kept when the shape is fixed

    @property
    def bound_name(self) -> str:
        return self.engine_name or self.name

    def axis(self, dim: str) -> int | None:
        """Index of the axis named ``dim`` (e.g. "batch"), or None."""
        names = self.dims or tuple(d if isinstance(d, str) else None for d in self.shape)
        return names.index(dim) if dim in names else None

    @classmethod
    def from_dict(cls, d: dict, where: str) -> TensorSpec:
        dtype = _require(d, "dtype", str, where)
        if dtype not in DTYPES:
            raise PackageError(f"manifest: {where} has unknown dtype '{dtype}' (known: {', '.join(DTYPES)})")
        shape = _require(d, "shape", list, where)
        if not all(isinstance(s, (int, str)) for s in shape):
            raise PackageError(f"manifest: {where}.shape must hold ints or dimension names")
        dims = tuple(_optional(d, "dims", list, where) or ())
        if dims and (len(dims) != len(shape) or not all(n is None or isinstance(n, str) for n in dims)):
            raise PackageError(f"manifest: {where}.dims must name each axis of the shape (or be null)")
        return cls(name=_require(d, "name", str, where), dtype=dtype, shape=tuple(shape),
                   engine_name=_optional(d, "engine_name", str, where) or "", dims=dims)

    def to_dict(self) -> dict:
        return {"name": self.name, "engine_name": self.engine_name, "dtype": self.dtype, "shape": list(self.shape),
                "dims": list(self.dims)}


@dataclass(frozen=True)
class Signature:
    """One entry point of an artifact: the file that holds it (several signatures may share a TFLite
    file, told apart by ``engine_key``) and its input/output contract."""

    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    engine_key: str = ""

    @classmethod
    def from_dict(cls, name: str, d: dict, where: str) -> Signature:
        return cls(
            name=name, file=_require(d, "file", str, where), engine_key=_optional(d, "engine_key", str, where) or "",
            inputs=tuple(TensorSpec.from_dict(t, f"{where}.inputs[{i}]")
                         for i, t in enumerate(_require(d, "inputs", list, where))),
            outputs=tuple(TensorSpec.from_dict(t, f"{where}.outputs[{i}]")
                          for i, t in enumerate(_require(d, "outputs", list, where))))

    def to_dict(self) -> dict:
        return {"file": self.file, "engine_key": self.engine_key,
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}


@dataclass(frozen=True)
class Artifact:
    """A component in one format and variant (precision + shape mode): its files and entry points."""

    format: str
    variant: str
    precision: str
    static: bool
    file: str
    signatures: dict[str, Signature]
    extra_files: tuple[str, ...] = ()
    parity: dict = field(default_factory=dict)

    @property
    def default(self) -> Signature:
        return next(iter(self.signatures.values()))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.default.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.default.outputs

    def files(self) -> list[str]:
        """Every file this artifact needs, main file first."""
        return list(dict.fromkeys([self.file, *(s.file for s in self.signatures.values()), *self.extra_files]))

    @classmethod
    def from_dict(cls, d: dict, where: str) -> Artifact:
        fmt = _require(d, "format", str, where)
        if fmt not in FORMATS:
            raise PackageError(f"manifest: {where} has unknown format '{fmt}' (known: {', '.join(FORMATS)})")
        precision = _require(d, "precision", str, where)
        if precision not in PRECISIONS:
            raise PackageError(f"manifest: {where} has unknown precision '{precision}'")
        signatures = {name: Signature.from_dict(name, sig, f"{where}.signatures.{name}")
                      for name, sig in _require(d, "signatures", dict, where).items()}
        if not signatures:
            raise PackageError(f"manifest: {where} has no signatures; re-export the package")
        extra_files = _optional(d, "extra_files", list, where) or []
        if not all(isinstance(f, str) for f in extra_files):
            raise PackageError(f"manifest: {where}.extra_files must list file names; re-export the package")
        return cls(
            format=fmt,
            variant=_require(d, "variant", str, where),
            precision=precision,
            static=bool(_require(d, "static", bool, where)),
            file=_require(d, "file", str, where),
            extra_files=tuple(extra_files),
            signatures=signatures,
            parity=dict(_optional(d, "parity", dict, where) or {}),
        )

    def to_dict(self) -> dict:
        return {
            "format": self.format, "variant": self.variant, "precision": self.precision, "static": self.static,
            "file": self.file, "extra_files": list(self.extra_files),
            "signatures": {name: sig.to_dict() for name, sig in self.signatures.items()},
            "parity": self.parity,
        }


@dataclass(frozen=True)
class Component:
    name: str
    description: str
    artifacts: tuple[Artifact, ...]

    def find(self, fmt: str, variant: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.format == fmt and a.variant == variant), None)


@dataclass(frozen=True)
class MobileSection:
    """What a phone export adds beside the artifacts: files for ORT Mobile and the delegate options to use.

    Kept out of ``artifacts`` on purpose: ``.ort`` files are for ORT Mobile builds on phones; the runtime's
    planner keeps choosing among the artifacts, and an x86 runtime only exposes these options to callers.
    """

    device: str
    ort: dict[str, dict]
    required_operators: str
    report: str
    snippets: tuple[str, ...] = ()
    delegates: dict[str, dict] = field(default_factory=dict)

    def files(self) -> list[str]:
        """Every package file the section names."""
        ort = [f for c in self.ort.values() for f in c["signatures"].values()]
        return [*ort, self.required_operators, self.report, *self.snippets]

    @classmethod
    def from_dict(cls, d: Any) -> MobileSection:
        where = "mobile"
        ort = _require(d, "ort", dict, where)
        for name, comp in ort.items():
            sigs = _require(comp, "signatures", dict, f"{where}.ort.{name}")
            if not sigs or not all(isinstance(f, str) for f in sigs.values()):
                raise PackageError(f"manifest: {where}.ort.{name}.signatures must map names to files; re-export")
        snippets = _require(d, "snippets", list, where)
        delegates = _require(d, "delegates", dict, where)
        if not all(isinstance(s, str) for s in snippets) or not all(isinstance(v, dict) for v in delegates.values()):
            raise PackageError(f"manifest: {where} has malformed snippets or delegates; re-export the package")
        return cls(device=_require(d, "device", str, where), ort=ort,
                   required_operators=_require(d, "required_operators", str, where),
                   report=_require(d, "report", str, where), snippets=tuple(snippets), delegates=delegates)

    def to_dict(self) -> dict:
        return {"device": self.device, "ort": self.ort, "required_operators": self.required_operators,
                "report": self.report, "snippets": list(self.snippets), "delegates": self.delegates}


@dataclass
class Manifest:
    family: str
    task: str
    components: dict[str, Component]
    source: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)
    created_utc: str = ""
    preprocessing: dict = field(default_factory=dict)
    postprocessing: dict = field(default_factory=dict)
    generation: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    mobile: MobileSection | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        if not isinstance(d, dict):
            raise PackageError("manifest: mmedge.json is not a JSON object; re-export the package")
        version = _require(d, "schema_version", int, "manifest")
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"manifest schema_version {version} is not supported by this mmedge (reads {SCHEMA_VERSION}); "
                + ("upgrade mmedge" if version > SCHEMA_VERSION else "re-export the package with this mmedge"))
        components = {}
        for name, c in _require(d, "components", dict, "manifest").items():
            where = f"components.{name}"
            arts = _require(c, "artifacts", list, where)
            components[name] = Component(
                name=name, description=str(c.get("description", "")),
                artifacts=tuple(Artifact.from_dict(a, f"{where}.artifacts[{i}]") for i, a in enumerate(arts)))
        if not components:
            raise PackageError("manifest: the package has no components; re-export it")
        files = _require(d, "files", dict, "manifest")
        for rel, digest in files.items():
            if not isinstance(digest, str) or len(digest) != 64:
                raise PackageError(f"manifest: files['{rel}'] is not a sha256 hex digest; re-export the package")
        return cls(
            family=_require(d, "family", str, "manifest"), task=_require(d, "task", str, "manifest"),
            components=components, source=dict(_optional(d, "source", dict, "manifest") or {}),
            tools=dict(_optional(d, "tools", dict, "manifest") or {}), created_utc=str(d.get("created_utc", "")),
            preprocessing=dict(_optional(d, "preprocessing", dict, "manifest") or {}),
            postprocessing=dict(_optional(d, "postprocessing", dict, "manifest") or {}),
            generation=dict(_optional(d, "generation", dict, "manifest") or {}),
            files=dict(files), schema_version=version,
            mobile=MobileSection.from_dict(d["mobile"]) if d.get("mobile") is not None else None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("mobile")
        d["components"] = {n: {"description": c.description, "artifacts": [a.to_dict() for a in c.artifacts]}
                           for n, c in self.components.items()}
        order = ["schema_version", "family", "task", "source", "tools", "created_utc", "components",
                 "preprocessing", "postprocessing", "generation", "files"]
        out = {k: d[k] for k in order}
        if self.mobile is not None:
            out["mobile"] = self.mobile.to_dict()
        return out

    def variants(self) -> list[tuple[str, str, str, bool]]:
        """(format, variant, precision, static) offered by *every* component, in manifest order."""
        per_component = [{(a.format, a.variant, a.precision, a.static) for a in c.artifacts}
                         for c in self.components.values()]
        common = set.intersection(*per_component)
        first = next(iter(self.components.values()))
        return [k for k in ((a.format, a.variant, a.precision, a.static) for a in first.artifacts) if k in common]
