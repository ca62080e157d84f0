"""Facial expression recognition: face-api's TinyFaceDetector finds faces, its FaceExpressionNet scores each crop
for 7 expressions (neutral, happy, sad, angry, fearful, disgusted, surprised). Both nets ship in one package.

The detector is face-api's own (the expression net was trained on its crops, and the pair is what face-api users
run): a 193k-parameter depthwise-separable YOLO with five anchors, plain convolutions and max-pools only, so it
exports to ONNX, OpenVINO and TFLite alike and runs in the slim runtime with numpy box decoding
(``runtime.preprocess.face``). scikit-image's LBP cascade was the alternative; it needs scikit-image on the
device and is no graph at all.

Components: ``detector`` (``image`` [batch, 3, size, size], size a multiple of 32 → ``grid`` [batch, 25, cells,
cells], cells = size / 32; static: 416, face-api's default) and ``expression`` (``face`` [batch, 3, 112, 112] →
``logits`` [batch, 7]; static batch 1, the runtime feeds faces one at a time). Sources: ``mmedge export face-api``
(real weights from npm, see ``importers.face_api``) or a folder that importer wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmedge.errors import ExportError
from mmedge.exporter.families import face_api_nets as nets
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl
from mmedge.exporter.importers.face_api import MODEL_TYPE

#: The detector's grid holds box and score logits up to ~±40: float32 rounding over 7 conv layers reaches
#: ~3e-5 there (measured against face-api's TF.js kernels too), so its tolerance is looser than the default.
DETECTOR_ATOL = 5e-4


def _images(batch: int, side: int, seed: int) -> torch.Tensor:
    """Normalised-image-like input: pixels uniform in 0..255, minus a mean, over 255."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, side, side, generator=g) * 255 - 115) / 255


def _load(module: torch.nn.Module, weights: dict[str, torch.Tensor], prefix: str) -> torch.nn.Module:
    own = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(own)
    except RuntimeError as e:
        raise ExportError(f"the {prefix.rstrip('.')} weights do not fit the face-api architecture: "
                          f"{str(e).splitlines()[0][:200]}; re-import the face-api model folder") from None
    return module.eval()


class FaceExpressionSpec(FamilySpec):
    name = "face-expression"
    task = "facial-expression-recognition"
    model_types = (MODEL_TYPE,)

    def load(self, model_dir: Path) -> LoadedFamily:
        from safetensors.torch import load_file

        try:
            config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            weights = load_file(str(model_dir / "model.safetensors"))
            det_cfg, expr_cfg = config["detector"], config["expression"]
        except (OSError, ValueError, KeyError) as e:
            raise ExportError(f"{model_dir} is not an imported face-api model ({e}); import it with "
                              "`mmedge export face-api DIR` or from face-api's model/ folder") from None
        detector = _load(nets.TinyFaceDetector(), weights, "detector.")
        expression = _load(nets.FaceExpressionNet(), weights, "expression.")
        size, stride, face = int(det_cfg["input_size"]), int(det_cfg["stride"]), int(expr_cfg["input_size"])
        grid = 5 * len(det_cfg["anchors"])
        labels = list(expr_cfg["labels"])
        detector_spec = ComponentSpec(
            name="detector", description="face-api TinyFaceDetector: normalised RGB square -> raw YOLO grid",
            module=detector,
            inputs=(TensorDecl("image", "float32", ("batch", 3, "size", "size")),),
            outputs=(TensorDecl("grid", "float32", ("batch", grid, "cells", "cells")),),
            sample=lambda sizes, seed: {"image": _images(sizes["batch"], sizes["size"], seed)},
            export_sizes={"batch": 1, "size": size, "cells": size // stride},
            second_sizes={"batch": 2, "size": 320, "cells": 320 // stride},
            static_signatures={"default": {"batch": 1, "size": size, "cells": size // stride}},
            atol=DETECTOR_ATOL)
        expression_spec = ComponentSpec(
            name="expression", description="face-api FaceExpressionNet: normalised 112x112 face -> 7 logits",
            module=expression,
            inputs=(TensorDecl("face", "float32", ("batch", 3, face, face)),),
            outputs=(TensorDecl("logits", "float32", ("batch", len(labels))),),
            sample=lambda sizes, seed: {"face": _images(sizes["batch"], face, seed)},
            export_sizes={"batch": 1}, second_sizes={"batch": 3}, static_signatures={"default": {"batch": 1}})
        return LoadedFamily(
            family=self.name, task=self.task, components=[detector_spec, expression_spec],
            preprocessing={"detector": {k: det_cfg[k] for k in ("input_size", "stride", "mean_rgb", "std")},
                           "expression": {k: expr_cfg[k] for k in ("input_size", "mean_rgb", "std")}},
            postprocessing={"labels": labels, "activation": "softmax",
                            "detector": {k: det_cfg[k] for k in ("anchors", "iou_threshold", "score_threshold")}})
