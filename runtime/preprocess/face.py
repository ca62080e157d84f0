"""face-api's image handling in numpy: square padding, TensorFlow's bilinear resize, the TinyFaceDetector's box
decoding and non-maximum suppression, and face crops for the expression net.

Why written out here: the nets were run by face-api with ``tf.image.resizeBilinear`` (``align_corners`` and
``half_pixel_centers`` off), which samples the source at ``dst * in / out`` without an antialiasing filter;
Pillow's bilinear filter widens its support when it shrinks an image, so its pixels (and the scores) differ.
Each step repeats face-api 1.7.15 (``NetInput.toBatchTensor``, ``padToSquare``, ``TinyYolov2Base.extractBoxes``,
``nonMaxSuppression``, ``extractFaceTensors``), so a package gives the boxes and probabilities face-api gives
for the same pixels (tests/test_face_expression.py compares them with face-api's own output in Node.js).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mmedge.runtime.preprocess.image import ImageInput, load_image, to_rgb


def rgb_pixels(image: ImageInput) -> np.ndarray:
    """HxWx3 uint8 RGB from a path, PIL image or array: grayscale is replicated to three channels, an alpha
    channel is dropped (the colour values are kept, as face-api reads a canvas), 16-bit grayscale is scaled to
    8 bits (Pillow's own conversion clips it to white), other modes are converted by Pillow (``image.to_rgb``)."""
    return np.asarray(to_rgb(load_image(image)), dtype=np.uint8)


def pad_to_square(pixels: np.ndarray, *, centered: bool) -> np.ndarray:
    """Zero-pad the shorter side (face-api's ``padToSquare``): at the end, or split with ``round(diff / 2)``
    after and the rest before when ``centered``."""
    h, w = pixels.shape[:2]
    if h == w:
        return pixels
    diff = abs(h - w)
    after = int(np.floor(diff * 0.5 + 0.5)) if centered else diff  # JavaScript's Math.round
    before = diff - after
    pad = ((before, after), (0, 0)) if h < w else ((0, 0), (before, after))
    return np.pad(pixels, pad + ((0, 0),) * (pixels.ndim - 2))


def resize_bilinear(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``tf.image.resizeBilinear(x, [height, width], alignCorners=false, halfPixelCenters=false)`` on HxWxC,
    as float32 (the arithmetic is done in float64, as the JavaScript kernel does, then stored as float32)."""
    in_h, in_w = pixels.shape[:2]
    x = pixels.astype(np.float64)

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (n_in / n_out) * np.arange(n_out, dtype=np.float64)
        lo = np.maximum(0, np.floor(src)).astype(np.int64)
        return lo, np.minimum(n_in - 1, np.ceil(src)).astype(np.int64), src - lo

    r0, r1, rf = taps(in_h, height)
    c0, c1, cf = taps(in_w, width)
    cf = cf[None, :, None]
    top = x[r0][:, c0] + (x[r0][:, c1] - x[r0][:, c0]) * cf
    bottom = x[r1][:, c0] + (x[r1][:, c1] - x[r1][:, c0]) * cf
    return (top + (bottom - top) * rf[:, None, None]).astype(np.float32)


def to_input(square: np.ndarray, mean_rgb: Sequence[float], std: float) -> np.ndarray:
    """HxWx3 → [3, H, W] float32 ``(x - mean) / std`` (face-api's ``normalize(x, mean).div(255)``)."""
    out = (square.astype(np.float32) - np.asarray(mean_rgb, np.float32)) / np.float32(std)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


@dataclass(frozen=True)
class Box:
    """A box in pixels of the original image: left, top, width, height (floats, may reach past the borders)."""

    x: float
    y: float
    width: float
    height: float

    def clipped(self, image_width: int, image_height: int) -> tuple[int, int, int, int]:
        """face-api's ``clipAtImageBorders``: clip left/top at 0 and right/bottom at the image, then floor."""
        x, y = max(self.x, 0.0), max(self.y, 0.0)
        w = min(self.x + self.width - x, image_width - x)
        h = min(self.y + self.height - y, image_height - y)
        return int(np.floor(x)), int(np.floor(y)), int(np.floor(w)), int(np.floor(h))


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode_detections(grid: np.ndarray, anchors: Sequence[Sequence[float]], *, input_size: int, image_width: int,
                      image_height: int, score_threshold: float, iou_threshold: float) -> list[Detection]:
    """Faces from one raw detector grid [anchors * 5, cells, cells] (``TinyYolov2Base.detect``): cells over the
    score threshold become boxes relative to the unpadded part of the input square, then non-maximum suppression
    keeps the best of overlapping boxes; boxes are returned in the original image's pixels, best first."""
    n = len(anchors)
    cells = grid.shape[-1]
    t = grid.astype(np.float64).reshape(n, 5, cells, cells)
    scale = input_size / max(image_width, image_height)
    reshaped_w, reshaped_h = int(np.floor(image_width * scale + 0.5)), int(np.floor(image_height * scale + 0.5))
    corr_x, corr_y = input_size / reshaped_w, input_size / reshaped_h
    scores = _sigmoid(t[:, 4])
    rel: list[tuple[float, float, float, float]] = []
    kept: list[float] = []
    for row in range(cells):  # face-api's order: row, column, anchor (it decides which of two equal scores wins)
        for col in range(cells):
            for a in range(n):
                score = scores[a, row, col]
                if score <= score_threshold:
                    continue
                tx, ty, tw, th = t[a, :4, row, col]
                cx = (col + _sigmoid(tx)) / cells * corr_x
                cy = (row + _sigmoid(ty)) / cells * corr_y
                w = np.exp(tw) * anchors[a][0] / cells * corr_x
                h = np.exp(th) * anchors[a][1] / cells * corr_y
                rel.append((cx - w / 2, cy - h / 2, w, h))
                kept.append(float(score))
    picks = non_max_suppression([tuple(v * input_size for v in r) for r in rel], kept, iou_threshold)
    return [Detection(Box(float(rel[i][0] * image_width), float(rel[i][1] * image_height),
                          float(rel[i][2] * image_width), float(rel[i][3] * image_height)), kept[i]) for i in picks]


def non_max_suppression(boxes: Sequence[tuple[float, float, float, float]], scores: Sequence[float],
                        iou_threshold: float) -> list[int]:
    """face-api's ``nonMaxSuppression`` on (x, y, w, h) boxes: repeatedly take the best remaining box (of equal
    scores, the later one) and drop the boxes whose IoU with it is above ``iou_threshold``."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])  # stable ascending, popped from the end
    picks: list[int] = []
    while order:
        best = order.pop()
        picks.append(best)
        order = [i for i in order if _iou(boxes[best], boxes[i]) <= iou_threshold]
    return picks


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def detector_input(pixels: np.ndarray, size: int, mean_rgb: Sequence[float], std: float) -> np.ndarray:
    """The detector's [3, size, size] input: pad to a square at the bottom/right, resize, normalise."""
    return to_input(resize_bilinear(pad_to_square(pixels, centered=False), size, size), mean_rgb, std)


def face_input(face: np.ndarray, size: int, mean_rgb: Sequence[float], std: float) -> np.ndarray:
    """The expression net's [3, size, size] input from a face crop: centred square padding, resize, normalise."""
    square = pad_to_square(face, centered=True)
    if square.shape[0] != size:
        square = resize_bilinear(square, size, size)
    return to_input(square, mean_rgb, std)


def crop(pixels: np.ndarray, box: Box) -> np.ndarray | None:
    """The pixels of ``box`` clipped to the image (face-api's ``extractFaceTensors``); None when nothing is left."""
    x, y, w, h = box.clipped(pixels.shape[1], pixels.shape[0])
    return pixels[y:y + h, x:x + w] if w > 0 and h > 0 else None

