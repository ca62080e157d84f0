"""Facial expression recognition on the slim runtime: find faces, crop them, score 7 expressions per face.

Steps as face-api 1.7.15 runs ``detectAllFaces(image, TinyFaceDetectorOptions).withFaceExpressions()`` on an
image tensor (see ``mmedge.runtime.preprocess.face``): the image is padded to a square at the bottom/right and
resized to the detector's input (416 by default); grid cells over the score threshold (0.5) become boxes,
non-maximum suppression (IoU 0.4) keeps the best of overlapping ones; each box, clipped to the image, is cut out,
padded to a centred square, resized to 112×112 and scored; the softmax of the logits gives the probabilities.

Input handling: any image Pillow reads (path, PIL image, uint8 array); grayscale is replicated to RGB, an alpha
channel is dropped. No face found is a normal result: ``faces`` is empty (``found`` is False), never an error;
tiny images are resized up like any other and usually hold no face. ``classify_faces`` scores crops the caller
already has (e.g. from another detector), skipping detection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mmedge.errors import InputError, PackageError, StaticShapeError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.probabilities import softmax
from mmedge.runtime.preprocess.face import (
    Box,
    Detection,
    crop,
    decode_detections,
    detector_input,
    face_input,
    rgb_pixels,
)
from mmedge.runtime.preprocess.image import ImageInput
from mmedge.runtime.runner import ComponentRunner


@dataclass
class FaceExpression:
    """One face: its box in image pixels (x, y, width, height), detection score and expression probabilities."""

    box: Box
    score: float
    probs: dict[str, float]

    @property
    def label(self) -> str:
        return max(self.probs, key=self.probs.__getitem__)

    def to_dict(self) -> dict:
        return {"box": {"x": self.box.x, "y": self.box.y, "width": self.box.width, "height": self.box.height},
                "score": self.score, "label": self.label,
                "probs": dict(sorted(self.probs.items(), key=lambda kv: -kv[1]))}


@dataclass
class FaceExpressionResult:
    """Every face found, best detection first; ``faces`` is empty when there is none."""

    faces: list[FaceExpression]
    image_size: tuple[int, int]  # width, height
    ran: RunInfo

    @property
    def found(self) -> bool:
        return bool(self.faces)

    def to_dict(self) -> dict:
        return {"task": "facial-expression-recognition", "found": self.found,
                "image_size": {"width": self.image_size[0], "height": self.image_size[1]},
                "faces": [f.to_dict() for f in self.faces], "ran": self.ran.to_dict()}


class FaceExpressionPipeline:
    """Runs a ``face-expression`` package. Build it with ``mmedge.runtime.load(path)``."""

    family = "face-expression"
    task = "facial-expression-recognition"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        pre, post = package.manifest.preprocessing, package.manifest.postprocessing
        try:
            self.detector, self.expression = runners["detector"], runners["expression"]
            det, expr, boxes = pre["detector"], pre["expression"], post["detector"]
            self.labels = [str(label) for label in post["labels"]]
            self.input_size, self.stride = int(det["input_size"]), int(det["stride"])
            self.det_mean, self.det_std = [float(v) for v in det["mean_rgb"]], float(det["std"])
            self.face_size = int(expr["input_size"])
            self.face_mean, self.face_std = [float(v) for v in expr["mean_rgb"]], float(expr["std"])
            self.anchors = [(float(w), float(h)) for w, h in boxes["anchors"]]
            self.iou_threshold = float(boxes["iou_threshold"])
            self.score_threshold = float(boxes["score_threshold"])
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"this face-expression package lacks {e} in its manifest; re-export it") from None
        self.package, self.ran = package, ran
        #: The detector's fixed input side (static artifacts), or None when any multiple of ``stride`` works.
        self.fixed_input_size: int | None = self.detector.fixed_dim("image", 2)

    # ------------------------------------------------------------------------------------------- detection

    def _size(self, input_size: int | None) -> int:
        if input_size is None:
            return self.fixed_input_size or self.input_size
        if input_size <= 0 or input_size % self.stride:
            raise InputError(f"input_size must be a positive multiple of {self.stride} (got {input_size}), e.g. 416")
        if self.fixed_input_size is not None and input_size != self.fixed_input_size:
            raise StaticShapeError(f"this static artifact's detector takes {self.fixed_input_size}x"
                                   f"{self.fixed_input_size} only (asked for {input_size}); use a dynamic variant")
        return input_size

    def _threshold(self, score_threshold: float | None) -> float:
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        if not 0.0 < threshold < 1.0:
            raise InputError(f"score_threshold must be between 0 and 1 (got {score_threshold}), e.g. 0.5")
        return threshold

    def _detect(self, pixels: np.ndarray, score_threshold: float | None, input_size: int | None) -> list[Detection]:
        size, threshold = self._size(input_size), self._threshold(score_threshold)
        image = detector_input(pixels, size, self.det_mean, self.det_std)[None]
        grid = self.detector(image=image)["grid"][0]
        height, width = pixels.shape[:2]
        return decode_detections(grid, self.anchors, input_size=size, image_width=width, image_height=height,
                                 score_threshold=threshold, iou_threshold=self.iou_threshold)

    def detect(self, image: ImageInput, *, score_threshold: float | None = None,
               input_size: int | None = None) -> list[Detection]:
        """Faces in ``image``, best first: boxes in image pixels and detection scores."""
        return self._detect(rgb_pixels(image), score_threshold, input_size)

    # ------------------------------------------------------------------------------------------ expression

    def _probs(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        faces = np.stack([face_input(c, self.face_size, self.face_mean, self.face_std) for c in crops])
        return softmax(self.expression(face=faces)["logits"])

    def classify_faces(self, faces: Sequence[ImageInput]) -> list[dict[str, float]]:
        """Expression probabilities of face crops the caller already has (one dict per face)."""
        if not isinstance(faces, (list, tuple)) or not faces:
            raise InputError("give a non-empty list of face images (paths, PIL images or uint8 arrays)")
        return [dict(zip(self.labels, map(float, p))) for p in self._probs([rgb_pixels(f) for f in faces])]

    def recognize(self, image: ImageInput, *, score_threshold: float | None = None,
                  input_size: int | None = None) -> FaceExpressionResult:
        """Detect every face in ``image`` and score its expressions (see the module docstring)."""
        pixels = rgb_pixels(image)
        found = [(d, c) for d in self._detect(pixels, score_threshold, input_size)
                 if (c := crop(pixels, d.box)) is not None]
        probs = self._probs([c for _, c in found]) if found else np.zeros((0, len(self.labels)), np.float32)
        faces = [FaceExpression(d.box, d.score, dict(zip(self.labels, map(float, p))))
                 for (d, _), p in zip(found, probs)]
        return FaceExpressionResult(faces=faces, image_size=(pixels.shape[1], pixels.shape[0]), ran=self.ran)
