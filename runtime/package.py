"""Reading a model package from disk: manifest, safe paths and checksums.

The runtime never trusts a package blindly: every path in the manifest must stay inside the package
directory, and every file's sha256 can be checked: all of them on ``open_package(verify=True)``, or only
the files a load really uses (``runtime.load``: the shared files + the chosen variant's, so a package holding
five variants is not hashed five times over at every start); ``verify=False`` skips it, for speed, when the
caller knows the files are intact. Nothing here unpickles or touches the network.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mmedge.errors import ChecksumError, PackageError
from mmedge.runtime.manifest import MANIFEST_NAME, Manifest

_CHUNK = 1 << 20
#: The scratch folders of ``exporter.package_writer`` next to a package NAME being written: never a package.
SCRATCH_DIR = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|final|old)-(?P<pid>\d+)-")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large weights never sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Package:
    """An opened package: its root directory and its validated manifest."""

    root: Path
    manifest: Manifest

    def path(self, rel: str) -> Path:
        """Absolute path of a file named in the manifest; refuses paths that escape the package."""
        try:
            candidate = (self.root / rel).resolve()
        except (ValueError, OSError) as e:  # a NUL byte in the name, a symlink loop
            raise PackageError(f"manifest path {rel!r} is not a usable file name ({e}); the package is damaged: "
                               "re-export it") from None
        if Path(rel).is_absolute() or not candidate.is_relative_to(self.root.resolve()):
            raise PackageError(f"manifest path '{rel}' points outside the package {self.root}; "
                               "the package is damaged or hostile: re-export it")
        return candidate

    def file_path(self, rel: str) -> Path:
        """Like ``path`` but the file must exist."""
        p = self.path(rel)
        if not p.is_file():
            raise PackageError(f"package file {p} is missing; re-export the package or copy it completely")
        return p

    def verify(self, files: Iterable[str] | None = None) -> list[str]:
        """Problems found (missing files, checksum mismatches) among ``files`` (default: every file of the
        package); an empty list means intact."""
        wanted = None if files is None else set(files)
        problems = []
        for rel, digest in sorted(self.manifest.files.items()):
            if wanted is not None and rel not in wanted:
                continue
            p = self.path(rel)
            if not p.is_file():
                problems.append(f"missing: {rel}")
            elif sha256_file(p) != digest:
                problems.append(f"checksum mismatch: {rel}")
        for component in self.manifest.components.values():
            for a in component.artifacts:
                for rel in a.files():
                    if rel not in self.manifest.files and (wanted is None or rel in wanted):
                        problems.append(f"not covered by a checksum: {rel}")
        return problems

    def shared_files(self) -> list[str]:
        """Files no artifact owns (tokenizer, pre-processing tables...): every variant needs them."""
        owned = {rel for c in self.manifest.components.values() for a in c.artifacts for rel in a.files()}
        return sorted(set(self.manifest.files) - owned)

    def check(self, files: Iterable[str] | None = None) -> None:
        """``verify`` that raises: a ``ChecksumError`` naming the first problems and the fix."""
        problems = self.verify(files)
        if problems:
            raise ChecksumError(f"package {self.root} failed verification: {'; '.join(problems[:5])}"
                                f"{' ...' if len(problems) > 5 else ''}. Re-export or re-copy the package "
                                "(or open with verify=False at your own risk)")


def open_package(path: str | Path, *, verify: bool = True) -> Package:
    """Open and validate a package directory; with ``verify`` every file's sha256 is checked."""
    root = Path(path)
    if not root.is_dir():
        raise PackageError(f"{root} is not a model package directory; create one with `mmedge export MODEL {root}`")
    scratch = next((m for p in (root.absolute(), root.absolute().parent) if (m := SCRATCH_DIR.match(p.name))), None)
    if scratch:
        raise PackageError(f"{root} is a scratch folder of an mmedge write of '{scratch['name']}' that did not finish, "
                           f"not a package; rerun the export/quantize that writes '{scratch['name']}' (it removes "
                           "this folder and, if needed, puts the previous package back)")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise PackageError(f"{root} has no {MANIFEST_NAME}: not an mmedge package (or an export that did not "
                           f"finish); run `mmedge export MODEL {root}` again")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # JSON/UTF-8 errors are ValueErrors, as are ints over 4300 digits;
        # nesting deeper than Python's recursion limit is a RecursionError
        raise PackageError(f"{manifest_path} is not valid JSON ({str(e)[:200]}); the package is damaged: "
                           "re-export it") from None
    package = Package(root=root, manifest=Manifest.from_dict(data))
    for rel in package.manifest.files:
        package.path(rel)  # path-escape check even when checksums are skipped
    if verify:
        package.check()
    return package
