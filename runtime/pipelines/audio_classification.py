"""Audio classification (speech emotion...) with wav2vec2-style models on the slim runtime: audio → class logits →
probabilities over the package's labels.

Pre-processing is ``Wav2Vec2FeatureExtractor``'s (``AudioNormalizer``, shared with CTC speech recognition), so a
clip that fits one window gets the logits transformers gives: a dynamic artifact runs the whole clip as it is
(``model(processor(clip))``); a static artifact pads it to its fixed window as
``processor(clip, padding="max_length", max_length=window)`` does, with the attention mask when the model takes
one (the padding is then left out of the pooled mean; models without a mask see the padding, as in transformers).

Longer clips (static artifacts, dynamic ones beyond ``MAX_WHOLE_CLIP_S`` = 30 s, or any artifact with
``window_s``) are cut into consecutive windows, each classified on its own; the clip's probabilities are the mean
of the windows' probabilities weighted by their real length, and ``chunks`` holds every window's own. A trailing
piece shorter than the conv encoder's receptive field (25 ms for wav2vec2) yields no frame and is skipped; a whole
clip that short is an ``InputError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmedge.errors import InputError, PackageError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.probabilities import softmax
from mmedge.runtime.preprocess.audio import AudioInput, load_audio
from mmedge.runtime.preprocess.ctc import AudioNormalizer, frames_for, window_size
from mmedge.runtime.runner import ComponentRunner


@dataclass
class AudioClassificationResult:
    labels: list[str]
    probs: list[float]
    chunks: list[dict]  # per window: start_s, end_s, probs
    ran: RunInfo

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.probs))]

    def to_dict(self) -> dict:
        ranked = sorted(zip(self.labels, self.probs), key=lambda p: -p[1])
        return {"task": "audio-classification", "label": self.label,
                "results": [{"label": lab, "prob": p} for lab, p in ranked], "chunks": self.chunks,
                "ran": self.ran.to_dict()}


class AudioClassificationPipeline:
    """Runs an ``audio-classification`` package. Build it with ``mmedge.runtime.load(path)``."""

    family = "audio-classification"
    task = "audio-classification"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        pre, post = package.manifest.preprocessing, package.manifest.postprocessing
        try:
            self.classifier = runners["classifier"]
            self.normalizer = AudioNormalizer.from_config(pre["audio"])
            self.layers = [(int(k), int(s)) for k, s in pre["frames"]["layers"]]
            self.labels = [str(label) for label in post["labels"]]
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"this audio-classification package lacks {e} in its manifest; re-export it") from None
        self.package, self.ran = package, ran
        self.sampling_rate = self.normalizer.sampling_rate
        self.with_mask = any(t.name == "attention_mask" for t in self.classifier.artifact.inputs)
        #: The static window in samples, or None for a dynamic artifact.
        self.window: int | None = self.classifier.fixed_dim("input_values", 1)

    def logits(self, piece: np.ndarray) -> np.ndarray:
        """Class logits of one piece of 16 kHz audio (at most one window long), as transformers computes them."""
        values = self.normalizer(piece, pad_to=self.window)[None]
        feeds = {"input_values": values}
        if self.with_mask:
            mask = np.zeros(values.shape, np.int64)
            mask[0, :len(piece)] = 1
            feeds["attention_mask"] = mask
        return self.classifier(**feeds)["logits"][0]

    def classify(self, audio: AudioInput, *, window_s: float | None = None,
                 sampling_rate: int | None = None) -> AudioClassificationResult:
        """Class probabilities of a recording (a path or samples at ``sampling_rate``, default the model's)."""
        samples = load_audio(audio, sampling_rate=sampling_rate or self.sampling_rate, target_rate=self.sampling_rate)
        if frames_for(len(samples), self.layers) == 0:
            raise InputError(f"the audio is {1000 * len(samples) / self.sampling_rate:.1f} ms long, shorter than the "
                             f"model's receptive field; give at least {self._receptive_field()} samples")
        size = window_size(window_s, len(samples), self.sampling_rate, self.window)
        chunks, probs, weights = [], [], []
        rate = self.sampling_rate
        for start in range(0, len(samples), size):
            piece = samples[start:start + size]
            if frames_for(len(piece), self.layers) == 0:
                continue
            p = softmax(self.logits(piece))
            chunks.append({"start_s": start / rate, "end_s": (start + len(piece)) / rate,
                           "probs": dict(zip(self.labels, map(float, p)))})
            probs.append(p)
            weights.append(len(piece))
        mean = np.average(np.stack(probs), axis=0, weights=np.asarray(weights, np.float64))
        return AudioClassificationResult(labels=self.labels, probs=[float(p) for p in mean], chunks=chunks,
                                         ran=self.ran)

    def _receptive_field(self) -> int:
        """Fewest samples that give one frame: kernel of the last layer, widened back through the strides."""
        n = 1
        for kernel, stride in reversed(self.layers):
            n = (n - 1) * stride + kernel
        return n
