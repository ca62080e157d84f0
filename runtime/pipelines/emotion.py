"""Multimodal emotion recognition: late fusion of a face-expression package and a speech-emotion
(audio-classification) package, either of which may be missing.

Common label set: face-api's seven expressions (``EMOTIONS``: neutral, happy, sad, angry, fearful, disgusted,
surprised), Ekman's six basic emotions plus neutral, which the usual speech-emotion corpora also use or subset
(IEMOCAP/SUPERB: neu, hap, ang, sad; RAVDESS, CREMA-D, TESS: full names). Each model's labels are mapped onto it
by ``SYNONYMS`` (case-insensitive: "hap", "happiness", "joy", "excited" → happy; "calm" → neutral...);
probabilities of labels that map to the same emotion are added. A label with no mapping is a ``UsageError`` that
names it, unless ``label_map`` maps it (to an emotion, or to None to drop it and renormalise the rest).

Fusion rule (a linear opinion pool): ``p(e) = Σ_m w_m · p_m(e) / Σ_m w_m`` over the modalities m that are present,
where ``p_m(e)`` is 0 for an emotion m cannot express (a 4-class speech model says nothing about "fearful"), so
the result is a distribution again. Default weights are equal (``DEFAULT_WEIGHTS``): nothing tells in general
which of two models is better on a user's data; pass your own (e.g. from a validation set). With one modality
present its mapped probabilities are the result. The face is the image's most confident detection; with no
face found (a normal result, see ``FaceExpressionResult``) the image counts as absent and the speech decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from mmedge.errors import InputError, UsageError

EMOTIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
SYNONYMS: dict[str, str] = {
    **{k: "neutral" for k in ("neutral", "neu", "calm", "none")},
    **{k: "happy" for k in ("happy", "hap", "happiness", "joy", "excited", "exc")},
    **{k: "sad" for k in ("sad", "sadness")},
    **{k: "angry" for k in ("angry", "ang", "anger")},
    **{k: "fearful" for k in ("fearful", "fea", "fear")},
    **{k: "disgusted" for k in ("disgusted", "dis", "disgust")},
    **{k: "surprised" for k in ("surprised", "sur", "surprise", "ps")},  # ps: TESS's "pleasant surprise"
}
DEFAULT_WEIGHTS = {"face": 0.5, "speech": 0.5}


def to_emotions(probs: Mapping[str, float], label_map: Mapping[str, str | None] | None = None) -> dict[str, float]:
    """A model's probabilities on the common set (``EMOTIONS``); see the module docstring for the mapping."""
    extra = {str(k).lower(): v for k, v in (label_map or {}).items()}
    bad = [v for v in extra.values() if v is not None and v not in EMOTIONS]
    if bad:
        raise UsageError(f"label_map maps to {bad}, which are not emotions; use one of {', '.join(EMOTIONS)} or None")
    out = dict.fromkeys(EMOTIONS, 0.0)
    unknown = []
    for label, p in probs.items():
        key = str(label).strip().lower()
        target = extra[key] if key in extra else SYNONYMS.get(key, "?")
        if target == "?":
            unknown.append(label)
        elif target is not None:
            out[target] += float(p)
    if unknown:
        raise UsageError(f"labels {unknown} have no emotion to map to; pass label_map, e.g. "
                         f"{{{unknown[0]!r}: 'neutral'}} (or None to drop it)")
    total = sum(out.values())
    if total <= 0:
        raise UsageError("every label was dropped by label_map; keep at least one")
    return {k: v / total for k, v in out.items()}


def fuse(face: Mapping[str, float] | None, speech: Mapping[str, float] | None,
         weights: Mapping[str, float] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Fused probabilities on ``EMOTIONS`` from the modalities present (each already on the common set), and the
    normalised weights actually used; both empty when neither is present."""
    weights = {**DEFAULT_WEIGHTS, **(weights or {})}
    if any(w < 0 for w in weights.values()) or set(weights) - set(DEFAULT_WEIGHTS):
        raise UsageError(f"weights must be non-negative and named face/speech, got {dict(weights)}")
    present = {m: p for m, p in (("face", face), ("speech", speech)) if p is not None}
    total = sum(weights[m] for m in present)
    if present and total <= 0:
        raise UsageError(f"the weights of the present modalities ({', '.join(present)}) are all 0")
    used = {m: weights[m] / total for m in present}
    fused = {e: sum(used[m] * present[m][e] for m in present) for e in EMOTIONS} if present else {}
    return fused, used


@dataclass
class EmotionResult:
    probs: dict[str, float]  # on EMOTIONS; empty when neither a face nor speech was available
    weights: dict[str, float]  # the weights used, normalised over the modalities present
    face: dict | None = None  # the face-expression result (to_dict), when an image was given
    speech: dict | None = None  # the audio-classification result (to_dict), when audio was given
    sources: dict[str, dict[str, float]] = field(default_factory=dict)  # each modality on EMOTIONS

    @property
    def label(self) -> str | None:
        return max(self.probs, key=self.probs.__getitem__) if self.probs else None

    def to_dict(self) -> dict:
        return {"task": "emotion-recognition", "label": self.label,
                "probs": dict(sorted(self.probs.items(), key=lambda kv: -kv[1])), "weights": self.weights,
                "sources": self.sources, "face": self.face, "speech": self.speech}


class EmotionRecognizer:
    """Face and/or speech emotion from two packages. ``EmotionRecognizer.load(face_package=..., speech_package=...)``
    opens them with ``mmedge.runtime.load`` (same engine/device options for both); either may be None."""

    def __init__(self, face: Any = None, speech: Any = None, *, weights: Mapping[str, float] | None = None,
                 label_map: Mapping[str, str | None] | None = None):
        for pipe, family, role in ((face, "face-expression", "face"), (speech, "audio-classification", "speech")):
            if pipe is not None and getattr(pipe, "family", None) != family:
                raise UsageError(f"the {role} package must be a '{family}' package, got '{pipe.family}'")
        if face is None and speech is None:
            raise UsageError("give a face-expression package, a speech-emotion package, or both")
        self.face, self.speech, self.label_map = face, speech, label_map
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        fuse(None, None, self.weights)  # validate the weights now, not at the first call

    @classmethod
    def load(cls, face_package: str | None = None, speech_package: str | None = None, *,
             weights: Mapping[str, float] | None = None, label_map: Mapping[str, str | None] | None = None,
             **load_options: Any) -> EmotionRecognizer:
        from mmedge import runtime

        face = runtime.load(face_package, **load_options) if face_package else None
        speech = runtime.load(speech_package, **load_options) if speech_package else None
        return cls(face, speech, weights=weights, label_map=label_map)

    def recognize(self, image: Any = None, audio: Any = None) -> EmotionResult:
        """Fused emotion of a face image and/or a speech recording (see the module docstring)."""
        if image is None and audio is None:
            raise InputError("give an image, an audio recording, or both")
        for given, pipe, what, kind in ((image, self.face, "an image", "face-expression"),
                                        (audio, self.speech, "audio", "speech-emotion")):
            if given is not None and pipe is None:
                raise UsageError(f"{what} was given but no {kind} package was loaded for it")
        sources: dict[str, dict[str, float]] = {}
        face_dict = speech_dict = None
        if image is not None:
            result = self.face.recognize(image)
            face_dict = result.to_dict()
            if result.found:
                sources["face"] = to_emotions(result.faces[0].probs, self.label_map)
        if audio is not None:
            result = self.speech.classify(audio)
            speech_dict = result.to_dict()
            sources["speech"] = to_emotions(dict(zip(result.labels, result.probs)), self.label_map)
        probs, used = fuse(sources.get("face"), sources.get("speech"), self.weights)
        return EmotionResult(probs=probs, weights=used, face=face_dict, speech=speech_dict, sources=sources)
