"""EfficientNet-Lite model folders: the format ``importers.efficientnet_lite`` writes and the image-classification
family loads, Hugging Face style (``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``).

Why a folder format of our own: transformers has no EfficientNet-Lite (its ``efficientnet`` is B0-B7, with
squeeze-excitation and swish, which Lite drops for ReLU6 and fixed stem/head widths), so the architecture comes
from the ``efficientnet-lite-pytorch`` package (the port the real weights were converted for) and the folder says
which variant it is (``model_name``), its labels (``id2label``) and its pre-processing (the TF crop-fraction
recipe, ``runtime.preprocess.classification``). The weights are safetensors: nothing is unpickled at export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mmedge.errors import ExportError, PackageError
from mmedge.runtime.preprocess.classification import CropFractionPreprocessor

MODEL_TYPE = "efficientnet-lite"
ARCHITECTURE_REQUIREMENT = "efficientnet-lite-pytorch==0.1.0"
#: Input resolution per variant (``efficientnet_lite_builder.py``; the same table is in the architecture package).
RESOLUTIONS = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260,
               "efficientnet-lite3": 280, "efficientnet-lite4": 300}
#: TF EfficientNet-Lite evaluation: crop 224/(224+32) of the short side, bicubic, (x - 127) / 128 on 0..255.
CROP_PADDING, MEAN, STD = 32, 127.0, 128.0


def _architecture(model_name: str, num_labels: int, block_channels: list[int] | None = None) -> torch.nn.Module:
    """The ``efficientnet-lite-pytorch`` module; a channel-pruned folder's ``block_channels`` shrink its blocks."""
    if model_name not in RESOLUTIONS:
        raise ExportError(f"unknown EfficientNet-Lite variant {model_name!r}; one of {', '.join(RESOLUTIONS)}")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ExportError(f"EfficientNet-Lite needs its architecture package: pip install {ARCHITECTURE_REQUIREMENT} "
                          "(in mmedge's export extra)") from None
    model = EfficientNet.from_name(model_name, num_classes=num_labels)
    if block_channels is not None:
        from mmedge.quantize.prune.conv_channels import resize_blocks

        resize_blocks(model, block_channels)
    return model


def write_folder(out: Path, state: dict[str, torch.Tensor], model_name: str, labels: list[str],
                 block_channels: list[int] | None = None) -> None:
    """Write an EfficientNet-Lite folder into ``out`` after checking ``state`` fits the architecture exactly
    (shrunk to ``block_channels``, the hidden width of every block, for a channel-pruned model)."""
    from safetensors.numpy import save_file

    model = _architecture(model_name, len(labels), block_channels)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(f"the weights do not fit {model_name} with {len(labels)} classes: "
                          f"{str(e).splitlines()[0][:300]}") from None
    arrays = {k: np.ascontiguousarray(v.detach().float().numpy()) for k, v in model.state_dict().items()
              if v.is_floating_point()}
    save_file(arrays, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": MODEL_TYPE, "architectures": ["EfficientNetLite"], "model_name": model_name,
              "image_size": RESOLUTIONS[model_name], "num_labels": len(labels),
              "id2label": {str(i): label for i, label in enumerate(labels)}}
    if block_channels is not None:
        config["block_channels"] = list(block_channels)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    pre = CropFractionPreprocessor(size=RESOLUTIONS[model_name], crop_padding=CROP_PADDING,
                                   image_mean=(MEAN,) * 3, image_std=(STD,) * 3)
    (out / "preprocessor_config.json").write_text(json.dumps(pre.to_config(), indent=2) + "\n", encoding="utf-8")


def load_folder(model_dir: Path) -> tuple[torch.nn.Module, list[str], dict]:
    """(model in eval mode, labels, image preprocessing config) of an EfficientNet-Lite folder."""
    from safetensors.torch import load_file

    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        preprocessing = json.loads((model_dir / "preprocessor_config.json").read_text(encoding="utf-8"))
        labels = [config["id2label"][str(i)] for i in range(int(config["num_labels"]))]
        state = load_file(str(model_dir / "model.safetensors"))
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"{model_dir} is not a complete EfficientNet-Lite folder ({type(e).__name__}: {e}); "
                          "re-import it (mmedge export efficientnet-lite0 OUT does so)") from None
    model = _architecture(config.get("model_name", ""), len(labels), config.get("block_channels"))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ from the config (e.g. a wrong block_channels)
        raise ExportError(f"{model_dir / 'model.safetensors'} does not fit its config.json: "
                          f"{str(e).splitlines()[-1].strip()[:300]}") from None
    # BatchNorm's num_batches_tracked counters are integers the folder does not keep; everything else must be there
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ExportError(f"{model_dir / 'model.safetensors'} does not fit {config['model_name']}: missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}")
    try:
        CropFractionPreprocessor.from_config(preprocessing)  # a damaged config fails here, not on the device
    except PackageError as e:
        raise ExportError(f"{model_dir / 'preprocessor_config.json'}: {e}") from None
    return model.eval(), labels, preprocessing
