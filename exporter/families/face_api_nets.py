"""face-api's TinyFaceDetector and FaceExpressionNet as PyTorch modules, with the TF.js weight mapping.

Why a port: face-api (``@vladmandic/face-api``, MIT) publishes these real, small nets only as TF.js graphs in
JavaScript; mmedge exports from PyTorch. The modules below repeat face-api 1.7.15's ``src/`` operation for
operation (NCHW instead of NHWC), and ``*_state_dict`` map its weight names onto them (layouts: see
``importers.tfjs``). tests/test_face_expression.py checks both nets against face-api's own outputs (run in
Node.js by tests/fixtures/face_api/make_reference.py).

TensorFlow 'same' padding at stride 2 pads ``total = max((out - 1) * 2 + k - n, 0)`` with ``total // 2`` before
and the rest after: for the even sizes in these nets that is one row/column at the bottom/right only, which
PyTorch's symmetric ``padding=`` cannot express, so it is an explicit ``F.pad``. A 2×2 max-pool 'same' with
stride 2 equals ``ceil_mode=True`` (the missing cells are ignored, as TF's -inf padding is); with stride 1 it
pads the last row/column by replication, which leaves every max unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmedge.errors import ExportError
from mmedge.exporter.importers.tfjs import conv_weight, dense_weight, depthwise_weight

EXPRESSION_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
EXPRESSION_INPUT = 112
EXPRESSION_MEAN_RGB = (122.782, 117.001, 104.298)
DETECTOR_MEAN_RGB = (117.001, 114.697, 97.404)
#: TinyFaceDetector's anchors (width, height in grid cells), IoU threshold and default input size.
DETECTOR_ANCHORS = ((1.603231, 2.094468), (6.041143, 7.080126), (2.882459, 3.518061), (4.266906, 5.178857),
                    (9.041765, 10.66308))
DETECTOR_IOU_THRESHOLD = 0.4
DETECTOR_INPUT = 416
DETECTOR_STRIDE = 32  # input pixels per grid cell: the input size must be a multiple of it
LEAKY_SLOPE = 0.1


class SeparableConv(nn.Module):
    """``tf.separableConv2d`` (3×3 depthwise, then 1×1 pointwise) plus a bias. ``same_stride2``: TF 'same'
    padding at stride 2 (bottom/right); otherwise one pixel on every side (stride 1)."""

    def __init__(self, cin: int, cout: int, *, same_stride2: bool = False):
        super().__init__()
        self.same_stride2 = same_stride2
        stride, padding = (2, 0) if same_stride2 else (1, 1)
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, padding, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_stride2:
            x = F.pad(x, (0, 1, 0, 1))
        return self.pointwise(self.depthwise(x))


class DenseBlock4(nn.Module):
    """face-api's ``denseBlock4``: a downsampling conv, then three separable convs, each fed the (ReLU of the)
    sum of all earlier outputs."""

    def __init__(self, cin: int, cout: int, *, first: bool):
        super().__init__()
        self.first = first
        self.conv0 = nn.Conv2d(cin, cout, 3, 2) if first else SeparableConv(cin, cout, same_stride2=True)
        self.conv1, self.conv2, self.conv3 = (SeparableConv(cout, cout) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = F.relu(self.conv0(F.pad(x, (0, 1, 0, 1)) if self.first else x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + (out2 + out3)))
        return F.relu(out1 + (out2 + (out3 + out4)))


class FaceExpressionNet(nn.Module):
    """112×112 normalised RGB face → 7 expression logits (face-api applies softmax to them)."""

    def __init__(self) -> None:
        super().__init__()
        widths = (3, 32, 64, 128, 256)
        self.blocks = nn.ModuleList(DenseBlock4(widths[i], widths[i + 1], first=i == 0) for i in range(4))
        self.fc = nn.Linear(256, len(EXPRESSION_LABELS))

    def forward(self, face: torch.Tensor) -> dict[str, torch.Tensor]:
        x = face
        for block in self.blocks:
            x = block(x)
        x = F.avg_pool2d(x, 7, 2)  # 7×7 → 1×1
        return {"logits": self.fc(x.flatten(1))}


class TinyFaceDetector(nn.Module):
    """Normalised RGB square (side a multiple of 32) → the raw YOLO grid [batch, 5 anchors × 5, cells, cells]
    (channel ``anchor * 5 + k``: x, y, w, h, score logits), decoded in numpy by the runtime."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3)
        widths = (16, 32, 64, 128, 256, 512)
        self.convs = nn.ModuleList(SeparableConv(widths[i], widths[i + 1]) for i in range(5))
        self.conv8 = nn.Conv2d(512, 5 * len(DETECTOR_ANCHORS), 1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.leaky_relu(self.conv0(image), LEAKY_SLOPE)
        for i, conv in enumerate(self.convs):
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            x = F.leaky_relu(conv(x), LEAKY_SLOPE)
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)
        return {"grid": self.conv8(x)}


# ------------------------------------------------------------------------------------------ TF.js weights


def _separable(prefix: str, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.depthwise.weight": depthwise_weight(w[f"{prefix.replace('.', '/')}/depthwise_filter"]),
            f"{prefix}.pointwise.weight": conv_weight(w[f"{prefix.replace('.', '/')}/pointwise_filter"]),
            f"{prefix}.pointwise.bias": w[f"{prefix.replace('.', '/')}/bias"]}


def _tensors(arrays: dict[str, np.ndarray], module: nn.Module, what: str) -> dict[str, torch.Tensor]:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in arrays.items()}
    if got != expected:
        bad = sorted(set(expected) ^ set(got)) or sorted(k for k in expected if expected[k] != got[k])
        raise ExportError(f"the {what} weights do not fit face-api's architecture (first differences: {bad[:4]}); "
                          "use the model folder of @vladmandic/face-api 1.x")
    return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in arrays.items()}


def expression_state_dict(w: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``FaceExpressionNet`` weights from face-api's ``face_expression_model`` (names ``denseN/convM/...``)."""
    try:
        out = {"blocks.0.conv0.weight": conv_weight(w["dense0/conv0/filters"]),
               "blocks.0.conv0.bias": w["dense0/conv0/bias"],
               "fc.weight": dense_weight(w["fc/weights"]), "fc.bias": w["fc/bias"]}
        for b in range(4):
            for c in range(4):
                if (b, c) == (0, 0):
                    continue
                out.update({k.replace(f"dense{b}.", f"blocks.{b}."): v
                            for k, v in _separable(f"dense{b}.conv{c}", w).items()})
    except KeyError as e:
        raise ExportError(f"face expression weights lack {e}; use face-api's face_expression_model") from None
    return _tensors(out, FaceExpressionNet(), "face expression")


def detector_state_dict(w: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``TinyFaceDetector`` weights from face-api's ``tiny_face_detector_model`` (names ``convN/...``)."""
    try:
        out = {"conv0.weight": conv_weight(w["conv0/filters"]), "conv0.bias": w["conv0/bias"],
               "conv8.weight": conv_weight(w["conv8/filters"]), "conv8.bias": w["conv8/bias"]}
        for i in range(5):
            out.update({k.replace(f"conv{i + 1}.", f"convs.{i}."): v for k, v in _separable(f"conv{i + 1}", w).items()})
    except KeyError as e:
        raise ExportError(f"tiny face detector weights lack {e}; use face-api's tiny_face_detector_model") from None
    return _tensors(out, TinyFaceDetector(), "tiny face detector")
