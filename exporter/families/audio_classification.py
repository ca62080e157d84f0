"""Audio classification with wav2vec2 / HuBERT / WavLM (``AutoModelForAudioClassification``): speech emotion,
keyword spotting, speaker traits. One component, ``classifier``: normalised audio ``input_values`` [batch, samples]
(+ ``attention_mask`` when the feature extractor returns one, as layer-norm models' do) → ``logits``
[batch, labels]; the label names (``config.id2label``) go to the manifest.

Static variant: batch 1 and a fixed window (``DEFAULT_WINDOW_S``, or ``mmedge_static_window_s`` from the model's
``config.json``, as for ``wav2vec2-ctc``). A shorter clip is padded as ``processor(clip, padding="max_length")``
pads it, with its attention mask when the model takes one, so the padding is masked out of the pooled mean.
The pre-processing is ``Wav2Vec2FeatureExtractor``'s (the runtime reuses ``AudioNormalizer``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from mmedge.errors import ExportError
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl
from mmedge.exporter.families.wav2vec2_ctc import (
    EXPORT_SECONDS,
    SECOND_SECONDS,
    _audio_config,
    length_layers,
    window_samples,
)


class Classifier(torch.nn.Module):
    """``input_values`` → ``logits`` (models whose feature extractor returns no attention mask)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model(input_values=input_values).logits}


class MaskedFill(TorchFunctionMode):
    """Runs ``x[mask] = v`` (a boolean mask of ``x``'s own shape) as ``x.masked_fill_(mask, v)``: the same values,
    but a traceable op. transformers zeroes padded frames that way (encoder input, pooled head); litert-torch
    cannot lower boolean-mask indexing, whose result shape depends on the data, while ``masked_fill`` is a select."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__setitem__:
            x, index, value = args
            if isinstance(index, torch.Tensor) and index.dtype == torch.bool and index.shape == x.shape:
                return x.masked_fill_(index, value)
        return func(*args, **(kwargs or {}))


class MaskedClassifier(Classifier):
    """``input_values``, ``attention_mask`` → ``logits``. The mask marks real samples; it keeps its dtype (int64, or
    int32 on TFLite): cast to int64, the frame mask transformers scatters into mixes both types on LiteRT."""

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        with MaskedFill():
            return {"logits": self.model(input_values=input_values, attention_mask=attention_mask).logits}


def _sample(with_mask: bool):
    """Unit-variance noise (what normalised audio looks like); with a mask, later rows are shorter and padded."""
    def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        batch, samples = sizes["batch"], sizes["samples"]
        values = torch.randn(batch, samples, generator=g)
        if not with_mask:
            return {"input_values": values}
        mask = torch.ones(batch, samples, dtype=torch.int64)
        for row in range(1, batch):
            length = int(torch.randint(samples // 2, samples, (1,), generator=g))
            values[row, length:], mask[row, length:] = 0.0, 0
        return {"input_values": values, "attention_mask": mask}
    return sample


def labels_of(config: Any) -> list[str]:
    """The class names in id order (``id2label``); the ids must be 0 .. n-1."""
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    if not id2label or sorted(id2label) != list(range(len(id2label))):
        raise ExportError(f"config.id2label must name the classes 0..n-1, got ids {sorted(id2label)}; "
                          "fix the model's config.json")
    return [id2label[i] for i in range(int(config.num_labels))]


class AudioClassificationSpec(FamilySpec):
    """wav2vec2 / HuBERT / WavLM with a sequence-classification head. ``window_s`` overrides the static window."""

    name = "audio-classification"
    task = "audio-classification"
    model_types = ("wav2vec2", "hubert", "wavlm")

    def __init__(self, window_s: float | None = None):
        self.window_s = window_s

    def matches(self, config: dict) -> bool:
        archs = config.get("architectures") or []
        return super().matches(config) and any(a.endswith("ForSequenceClassification") for a in archs)

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        try:
            model, info = AutoModelForAudioClassification.from_pretrained(model_dir, output_loading_info=True)
            feature_extractor = AutoFeatureExtractor.from_pretrained(model_dir)
        except (OSError, ValueError, KeyError) as e:
            raise ExportError(f"cannot load an audio-classification model and feature extractor from {model_dir}: "
                              f"{str(e).splitlines()[0][:300]}") from None
        if any(k.startswith("classifier") for k in info.get("missing_keys", [])):
            raise ExportError(f"{model_dir} has no trained classification head (classifier weights missing): export "
                              "a fine-tuned checkpoint, e.g. superb/wav2vec2-base-superb-er")
        model = model.eval()
        config = model.config
        rate = int(feature_extractor.sampling_rate)
        audio = _audio_config(feature_extractor, window_samples(config, rate, self.window_s))
        with_mask = audio["return_attention_mask"]
        labels = labels_of(config)
        inputs = (TensorDecl("input_values", "float32", ("batch", "samples")),)
        if with_mask:
            inputs += (TensorDecl("attention_mask", "int64", ("batch", "samples")),)
        classifier = ComponentSpec(
            name="classifier", description=f"{type(model).__name__}: input_values -> class logits",
            module=(MaskedClassifier if with_mask else Classifier)(model).eval(),
            inputs=inputs, outputs=(TensorDecl("logits", "float32", ("batch", len(labels))),),
            sample=_sample(with_mask),
            export_sizes={"batch": 1, "samples": int(EXPORT_SECONDS * rate)},
            second_sizes={"batch": 2, "samples": int(SECOND_SECONDS * rate)},
            static_signatures={"default": {"batch": 1, "samples": audio["static_window_samples"]}})
        return LoadedFamily(
            family=self.name, task=self.task, components=[classifier],
            preprocessing={"audio": audio, "frames": {"layers": length_layers(config)}},
            postprocessing={"labels": labels, "activation": "softmax"})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.audio_classification_tiny import write_tiny_speech_emotion

        return write_tiny_speech_emotion(out_dir)
