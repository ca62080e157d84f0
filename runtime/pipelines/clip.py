"""CLIP on the slim runtime: text/image embeddings, zero-shot classification, text-to-image retrieval.

Pre-processing reproduces ``CLIPProcessor`` exactly (see ``mmedge.runtime.preprocess``); the logit scale
comes from the manifest, so probabilities equal ``CLIPModel``'s ``logits_per_image.softmax(-1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.probabilities import softmax
from mmedge.runtime.preprocess import ClipImagePreprocessor, ClipTextTokenizer, load_image
from mmedge.runtime.runner import ComponentRunner

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass
class ZeroShotResult:
    labels: list[str]
    probs: list[float]
    ran: RunInfo

    def to_dict(self) -> dict:
        ranked = sorted(zip(self.labels, self.probs), key=lambda p: -p[1])
        return {"task": "zero-shot-image-classification",
                "results": [{"label": lab, "prob": p} for lab, p in ranked], "ran": self.ran.to_dict()}


@dataclass
class SearchResult:
    query: str
    hits: list[tuple[str, float]]
    ran: RunInfo

    def to_dict(self) -> dict:
        return {"task": "text-to-image-retrieval", "query": self.query,
                "results": [{"image": path, "score": s} for path, s in self.hits], "ran": self.ran.to_dict()}


class ClipPipeline:
    """Runs a CLIP package. Build it with ``mmedge.runtime.load(path)``.

    Thread-safe: it holds no per-call state, and the engine sessions may be called from several threads."""

    family = "clip"
    task = "zero-shot-image-classification"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        pre = package.manifest.preprocessing
        self.package, self.ran = package, ran
        self.text, self.vision = runners["text"], runners["vision"]
        self.image_preprocessor = ClipImagePreprocessor.from_config(pre["image"])
        self.tokenizer = ClipTextTokenizer(package.path(pre["text"]["tokenizer_file"]))
        self.max_length = int(pre["text"]["max_length"])
        self.logit_scale = float(package.manifest.postprocessing["logit_scale"])

    def embed_text(self, texts: Sequence[str], *, truncate: bool = False) -> np.ndarray:
        """Projected text embeddings (not normalised), one row per text."""
        if isinstance(texts, str):
            texts = [texts]
        tokens = self.tokenizer(list(texts), pad_to=self.text.fixed_dim("input_ids", 1),
                                max_length=self.max_length, truncate=truncate)
        return self.text(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])["text_embeds"]

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """Projected image embeddings (not normalised); images are paths, PIL images or HxWxC uint8 arrays."""
        if not len(images):
            raise InputError("no images given; pass at least one image path, PIL image or array")
        pixels = self.image_preprocessor([load_image(im) for im in images])
        return self.vision(pixel_values=pixels)["image_embeds"]

    def zero_shot(self, image: Any, labels: Sequence[str], *, template: str = "{}") -> ZeroShotResult:
        """Probabilities of ``labels`` for one image, as CLIPModel's softmax over logits_per_image."""
        labels = [lab.strip() for lab in labels if lab.strip()]
        if not labels:
            raise InputError("zero-shot classification needs at least one non-empty label, e.g. --labels 'a cat,a dog'")
        if "{}" not in template:
            raise InputError("the label template must contain '{}' where the label goes, e.g. 'a photo of {}'")
        text = _normalize(self.embed_text([template.format(lab) for lab in labels]))
        img = _normalize(self.embed_images([image]))
        probs = softmax(self.logit_scale * img @ text.T)[0]
        return ZeroShotResult(labels=labels, probs=[float(p) for p in probs], ran=self.ran)

    def search(self, images: str | Path | Sequence[Any], query: str, *, k: int = 5,
               batch_size: int = 16) -> SearchResult:
        """Rank images (a folder, or a list of paths) by cosine similarity to a text query."""
        paths = list_images(images) if isinstance(images, (str, Path)) else list(images)
        if not paths:
            raise InputError(f"no images found in {images} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        index = np.concatenate([_normalize(self.embed_images(paths[i:i + batch_size]))
                                for i in range(0, len(paths), batch_size)])
        scores = index @ _normalize(self.embed_text([query]))[0]
        order = np.argsort(-scores)[: max(1, k)]
        return SearchResult(query=query, hits=[(str(paths[i]), float(scores[i])) for i in order], ran=self.ran)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of images")
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
