"""One converter per format. Each turns a family's ComponentSpec into a file and the I/O contract that
goes into the manifest (logical name, engine name, dtype, shape with named dynamic dims)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmedge.exporter.families.base import ComponentSpec, TensorDecl
from mmedge.runtime.manifest import TensorSpec


@dataclass
class Converted:
    file: Path
    extra_files: list[Path]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def contract(decls: tuple[TensorDecl, ...], *, static_sizes: dict[str, int] | None,
             dtype_map: dict[str, str] | None = None, engine_names: dict[str, str] | None = None
             ) -> tuple[TensorSpec, ...]:
    """Manifest tensor specs: named dims stay symbolic unless the artifact is static."""
    specs = []
    for d in decls:
        shape = d.shape(static_sizes) if static_sizes is not None else d.dims
        specs.append(TensorSpec(name=d.name, dtype=(dtype_map or {}).get(d.dtype, d.dtype), shape=tuple(shape),
                                engine_name=(engine_names or {}).get(d.name, d.name)))
    return tuple(specs)


def sizes_for(spec: ComponentSpec, static: bool) -> dict[str, int]:
    return spec.static_sizes if static else spec.export_sizes
