"""Image classification on the slim runtime: pre-processing (the model's own recipe, see
``preprocess.classification``) → ``classifier`` logits → softmax (or sigmoid for multi-label heads) → top-k
labels.

A batch of images runs in chunks of ``batch_size`` (a static artifact has batch 1; the runner feeds it image by
image). Probabilities are computed in float64 from the float32 logits, so they are the same on every engine up
to the logits' own differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mmedge.errors import InputError, PackageError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.probabilities import probabilities
from mmedge.runtime.preprocess.classification import classification_preprocessor
from mmedge.runtime.preprocess.image import ImageInput
from mmedge.runtime.runner import ComponentRunner


@dataclass
class Prediction:
    label: str
    id: int
    prob: float


@dataclass
class ClassificationResult:
    """The ``top_k`` most probable classes of one image, most probable first."""

    predictions: list[Prediction]
    ran: RunInfo
    image: str | None = None  # the path, when the image was given as one

    @property
    def top1(self) -> Prediction:
        return self.predictions[0]

    def to_dict(self) -> dict:
        return {"task": "image-classification", "image": self.image,
                "results": [{"label": p.label, "id": p.id, "prob": p.prob} for p in self.predictions],
                "ran": self.ran.to_dict()}


class ImageClassificationPipeline:
    """Runs an ``image-classification`` package. Build it with ``mmedge.runtime.load(path)``.

    Thread-safe: it holds no per-call state, and the engine sessions may be called from several threads."""

    family = "image-classification"
    task = "image-classification"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        m = package.manifest
        try:
            self.preprocessor = classification_preprocessor(m.preprocessing["image"])
            self.labels: list[str] = [str(label) for label in m.postprocessing["labels"]]
            self.activation: str = m.postprocessing.get("activation", "softmax")
            self.classifier = runners["classifier"]
        except (KeyError, TypeError) as e:
            raise PackageError(f"this image-classification package lacks {e} in its manifest; re-export it") from None
        self.package, self.ran = package, ran

    def logits(self, images: Sequence[ImageInput], *, batch_size: int = 8) -> np.ndarray:
        """Raw logits [len(images), num_labels], images pre-processed and run ``batch_size`` at a time."""
        images = list(images)
        if not images:
            raise InputError("no images given; pass at least one image path, PIL image or uint8 array")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        return np.concatenate([self.classifier(pixel_values=self.preprocessor(images[i:i + batch_size]))["logits"]
                               for i in range(0, len(images), batch_size)])

    def classify(self, image: ImageInput, *, top_k: int = 5) -> ClassificationResult:
        """The ``top_k`` most probable labels of one image."""
        return self.classify_many([image], top_k=top_k)[0]

    def classify_many(self, images: Sequence[ImageInput], *, top_k: int = 5,
                      batch_size: int = 8) -> list[ClassificationResult]:
        """One ``ClassificationResult`` per image, in order."""
        if top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        probs = probabilities(self.logits(images, batch_size=batch_size), self.activation)
        k = min(top_k, probs.shape[1])
        results = []
        for image, row in zip(images, probs):
            order = np.argsort(-row, kind="stable")[:k]
            results.append(ClassificationResult(
                [Prediction(self.labels[i], int(i), float(row[i])) for i in order], self.ran,
                str(image) if isinstance(image, (str, Path)) else None))
        return results
