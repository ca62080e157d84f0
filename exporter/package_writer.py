"""Atomic package writing: everything is built in a hidden staging directory next to the target, the
manifest (with every file's sha256) is written last, and only then is the directory renamed into place.
A killed export leaves at most a ``.NAME.staging-*`` directory, never something that opens as a package,
and an existing package is replaced only after the new one is complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mmedge.errors import ExportError
from mmedge.runtime.manifest import MANIFEST_NAME, Manifest
from mmedge.runtime.package import sha256_file


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory; choose another output path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise ExportError(f"{out_dir} exists, is not empty and is not an mmedge package; "
                          "choose an empty or new directory (mmedge only replaces its own packages)")


@contextlib.contextmanager
def staging(out_dir: str | Path) -> Iterator[Path]:
    """Yield a staging directory; on success ``commit`` must have been called, on error it is removed."""
    out_dir = Path(out_dir).absolute()
    _check_target(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    except OSError as e:
        raise ExportError(f"cannot write under {out_dir.parent}: {e.strerror}; choose a writable output path") from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def commit(stage: Path, out_dir: str | Path, manifest: Manifest) -> Path:
    """Checksum every staged file, write the manifest last, fsync, and swap the directory into place."""
    out_dir = Path(out_dir).absolute()
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    manifest.files = {p.relative_to(stage).as_posix(): sha256_file(p) for p in files}
    tmp = stage / (MANIFEST_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest.to_dict(), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, stage / MANIFEST_NAME)
    _check_target(out_dir)
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "pkg")
    final_stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.final-", dir=out_dir.parent))
    os.rmdir(final_stage)
    os.replace(stage, final_stage)
    os.replace(final_stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir
