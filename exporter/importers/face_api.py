"""face-api's ``model/`` folder (TF.js) → an mmedge model folder the ``face-expression`` family loads.

Why: the family spec loads PyTorch weights from a folder with a ``config.json`` (what ``source.resolve`` and
``detect_family`` read), like every other source. The importer reads the two TF.js manifests face-api ships
(``tiny_face_detector_model``, ``face_expression_model``), maps them onto the PyTorch port
(``families.face_api_nets``) and writes ``config.json`` (``model_type: face-api``, labels, means, anchors) and
``model.safetensors`` (``detector.*``, ``expression.*``). The real weights come from npm (``importers.npm``):
``mmedge export face-api DIR`` fetches, imports and exports them in one go.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmedge.errors import ExportError
from mmedge.exporter.importers.atomic import atomic_folder
from mmedge.exporter.importers.tfjs import read_weights

MODEL_TYPE = "face-api"
MANIFESTS = {"detector": "tiny_face_detector_model-weights_manifest.json",
             "expression": "face_expression_model-weights_manifest.json"}
#: Names ``mmedge export`` takes for the real face-api weights on npm.
NAMES = ("face-api",)


def is_face_api_dir(path: str | Path) -> bool:
    """True for a face-api ``model/`` folder (or the unpacked npm package holding one)."""
    path = Path(path)
    return path.is_dir() and any(all((d / m).is_file() for m in MANIFESTS.values()) for d in (path, path / "model"))


def config(source: str) -> dict:
    """The ``config.json`` of an imported face-api model (what the family spec and the runtime need)."""
    from mmedge.exporter.families import face_api_nets as nets

    return {"model_type": MODEL_TYPE, "source": source,
            "expression": {"labels": list(nets.EXPRESSION_LABELS), "input_size": nets.EXPRESSION_INPUT,
                           "mean_rgb": list(nets.EXPRESSION_MEAN_RGB), "std": 255.0},
            "detector": {"input_size": nets.DETECTOR_INPUT, "stride": nets.DETECTOR_STRIDE,
                         "mean_rgb": list(nets.DETECTOR_MEAN_RGB), "std": 255.0,
                         "anchors": [list(a) for a in nets.DETECTOR_ANCHORS],
                         "iou_threshold": nets.DETECTOR_IOU_THRESHOLD, "score_threshold": 0.5}}


def import_face_api(model_dir: str | Path, out_dir: str | Path, *, source: str | None = None) -> Path:
    """Convert a face-api ``model/`` folder into ``out_dir`` (config.json + model.safetensors); returns it."""
    from safetensors.torch import save_file

    from mmedge.exporter.families import face_api_nets as nets

    model_dir = Path(model_dir)
    if not is_face_api_dir(model_dir):
        raise ExportError(f"{model_dir} is not a face-api model folder: it needs {' and '.join(MANIFESTS.values())} "
                          "with their .bin files (the model/ folder of the @vladmandic/face-api npm package)")
    if not (model_dir / MANIFESTS["detector"]).is_file():
        model_dir = model_dir / "model"
    tensors = {f"detector.{k}": v for k, v in
               nets.detector_state_dict(read_weights(model_dir / MANIFESTS["detector"])).items()}
    tensors.update({f"expression.{k}": v for k, v in
                    nets.expression_state_dict(read_weights(model_dir / MANIFESTS["expression"])).items()})
    out = Path(out_dir)
    with atomic_folder(out) as stage:
        save_file(tensors, str(stage / "model.safetensors"))
        (stage / "config.json").write_text(json.dumps(config(source or str(model_dir)), indent=2) + "\n")
    return out


def locate(name: str) -> Path:
    """The ``model/`` folder of the real face-api weights on npm (``importers.npm.FACE_API``, fetched once)."""
    from mmedge.exporter.importers.npm import FACE_API, fetch

    if name not in NAMES:
        raise ExportError(f"unknown face-api model '{name}'; known: {', '.join(NAMES)}")
    return fetch(FACE_API) / "model"
