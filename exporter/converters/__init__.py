"""One converter per format. Each turns a family's ComponentSpec into files and, per entry point
(signature), the I/O contract that goes into the manifest (logical name, engine name, dtype, shape with
named dynamic dims or the fixed sizes of a static signature)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmedge.exporter.families.base import ComponentSpec, TensorDecl
from mmedge.runtime.manifest import TensorSpec

DYNAMIC = "default"  # the one signature of a dynamic-shape graph


@dataclass
class ConvertedSignature:
    name: str
    file: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    engine_key: str = ""


@dataclass
class Converted:
    signatures: list[ConvertedSignature]
    extra_files: list[Path] = field(default_factory=list)


def contract(decls: tuple[TensorDecl, ...], *, sizes: dict[str, int] | None,
             dtype_map: dict[str, str] | None = None) -> tuple[TensorSpec, ...]:
    """Manifest tensor specs: named dims stay symbolic unless ``sizes`` fixes them (static signature)."""
    return tuple(TensorSpec(name=d.name, dtype=(dtype_map or {}).get(d.dtype, d.dtype),
                            shape=tuple(d.shape(sizes) if sizes is not None else d.dims), engine_name=d.name,
                            dims=tuple(n if isinstance(n, str) else None for n in d.dims))
                 for d in decls)


def graphs(spec: ComponentSpec, static: bool) -> dict[str, dict[str, int] | None]:
    """Signature name -> fixed sizes (None: dynamic) of the graphs a one-graph-per-file format writes."""
    return dict(spec.static_signatures) if static else {DYNAMIC: None}


def file_name(signature: str, extension: str) -> str:
    return f"model.{extension}" if signature == DYNAMIC else f"{signature}.{extension}"
