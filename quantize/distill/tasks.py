"""Per family: how unlabelled inputs become training examples, and the distillation loss on a batch.

The loss is ``output * (output matching) + hidden * (hidden-state matching)``:
- output matching: KL divergence between the teacher's and the student's softened distributions (temperature T,
  scaled by T² as Hinton et al.) over the vocabulary (Whisper, causal LM) or over the batch's image-text
  similarities (CLIP, plus 1 - cosine between their image and text embeddings);
- hidden-state matching: mean squared error between each student layer's output and the output of the teacher
  layer it was initialised from (the embeddings with the embeddings, the last with the last), divided by the
  variance of the teacher's states so that models whose residual streams have different scales weigh the same.

Whisper follows distil-whisper: only the decoder is shrunk and trained; the encoder is copied and frozen, so its
output is computed once per clip and shared by teacher and student. The decoder inputs are the teacher's own
greedy transcripts (pseudo-labels), teacher-forced into both decoders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

Example = dict[str, torch.Tensor]


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """T² · KL(teacher ‖ student) of the softened distributions over the last axis, averaged over the positions
    where ``mask`` is true (all when None)."""
    s = F.log_softmax(student / temperature, dim=-1)
    t = F.log_softmax(teacher / temperature, dim=-1)
    kl = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    kl = kl[mask] if mask is not None else kl
    return kl.mean() * temperature ** 2


def hidden_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], kept: Sequence[int],
                mask: torch.Tensor | None) -> torch.Tensor:
    """Variance-normalised MSE between mapped hidden states; ``student``/``teacher`` are the models' hidden-state
    tuples (embeddings first), ``kept`` the teacher layer each student layer came from."""
    last_s, last_t = len(student) - 1, len(teacher) - 1
    pairs = [(0, 0)] + [(j + 1, kept[j] + 1) for j in range(last_s - 1)] + [(last_s, last_t)]
    losses = []
    for j, i in pairs:
        s, t = (student[j][mask], teacher[i][mask]) if mask is not None else (student[j], teacher[i])
        losses.append(F.mse_loss(s, t) / t.var().clamp_min(1e-6))
    return torch.stack(losses).mean()


def pad(sequences: Sequence[torch.Tensor], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[batch, longest]`` ids and the boolean mask of real positions."""
    ids = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=value)
    lengths = torch.tensor([len(s) for s in sequences])
    return ids, torch.arange(ids.shape[1])[None, :] < lengths[:, None]


class DistillTask:
    """A family's examples and loss. ``kept`` maps each shrunk stack's prefix to the teacher layers it kept."""

    def __init__(self, teacher_dir: Path, teacher: torch.nn.Module, kept: dict[str, list[int]], *,
                 temperature: float, output: float, hidden: float, max_len: int):
        self.teacher_dir, self.teacher, self.kept = Path(teacher_dir), teacher, kept
        self.temperature, self.weights, self.max_len = temperature, (output, hidden), max_len

    def prepare(self, loaded: dict[str, list], progress: bool) -> list[Example]:
        raise NotImplementedError

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def terms(self, student: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(output-matching term, hidden-state term) of the batch."""
        raise NotImplementedError

    def freeze(self, student: torch.nn.Module) -> None:
        """Mark the parameters that distillation keeps fixed (default: none)."""

    def loss(self, student: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out, hid = self.terms(student, batch)
        total = self.weights[0] * out + self.weights[1] * hid
        return total, {"output": out.item(), "hidden": hid.item()}


class CausalLmTask(DistillTask):
    """Sentences tokenised with the model's tokenizer (truncated to ``max_len``), next-token logits matched."""

    def prepare(self, loaded: dict[str, list], progress: bool) -> list[Example]:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.teacher_dir)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad_id or 0
        ids = tokenizer(loaded["text"], truncation=True, max_length=self.max_len).input_ids
        return [{"input_ids": torch.tensor(i)} for i in ids if i]

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        ids, mask = pad([e["input_ids"] for e in examples], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}

    def terms(self, student, batch):
        feeds = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].long(),
                 "output_hidden_states": True}
        with torch.no_grad():
            t = self.teacher(**feeds)
        s = student(**feeds)
        mask = batch["attention_mask"]
        (kept,) = self.kept.values()
        return (kl_loss(s.logits, t.logits, mask, self.temperature),
                hidden_loss(s.hidden_states, t.hidden_states, kept, mask))


class WhisperTask(DistillTask):
    """Log-mel features of each clip (the teacher's ``WhisperFeatureExtractor``), the frozen encoder's output
    (computed once) and the teacher's greedy transcript as decoder input ids (prompt and end token included)."""

    def prepare(self, loaded: dict[str, list], progress: bool) -> list[Example]:
        from tqdm.auto import tqdm
        from transformers import WhisperFeatureExtractor

        extractor = WhisperFeatureExtractor.from_pretrained(self.teacher_dir)
        config = self.teacher.config
        self.pad_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        max_new = max(1, min(self.max_len, config.max_target_positions - 8))
        examples = []
        for samples in tqdm(loaded["audio"], desc="teacher transcripts", disable=not progress, unit="clip"):
            features = extractor(samples, sampling_rate=extractor.sampling_rate, return_tensors="pt").input_features
            with torch.no_grad():
                encoded = self.teacher.model.encoder(features).last_hidden_state
                ids = self.teacher.generate(features, max_new_tokens=max_new, return_dict_in_generate=True).sequences
            examples.append({"encoder": encoded[0], "input_ids": ids[0]})
        return examples

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        ids, mask = pad([e["input_ids"] for e in examples], self.pad_id)
        return {"encoder": torch.stack([e["encoder"] for e in examples]), "input_ids": ids, "mask": mask}

    def freeze(self, student: torch.nn.Module) -> None:
        student.model.encoder.requires_grad_(False)

    def terms(self, student, batch):
        feeds = {"encoder_outputs": (batch["encoder"],), "decoder_input_ids": batch["input_ids"],
                 "output_hidden_states": True}
        with torch.no_grad():
            t = self.teacher(**feeds)
        s = student(**feeds)
        (kept,) = self.kept.values()
        return (kl_loss(s.logits, t.logits, batch["mask"], self.temperature),
                hidden_loss(s.decoder_hidden_states, t.decoder_hidden_states, kept, batch["mask"]))


class ClipTask(DistillTask):
    """Images (the teacher's image processor) and sentences (its tokenizer) paired by position, cycling the
    shorter list, so every batch trains both towers and the similarity matrix between them."""

    def prepare(self, loaded: dict[str, list], progress: bool) -> list[Example]:
        from transformers import CLIPProcessor

        processor = CLIPProcessor.from_pretrained(self.teacher_dir)
        self.pad_id = processor.tokenizer.pad_token_id or 0
        limit = min(self.max_len, self.teacher.config.text_config.max_position_embeddings)
        pixels = processor(images=loaded["image"], return_tensors="pt").pixel_values
        ids = processor.tokenizer(loaded["text"], truncation=True, max_length=limit).input_ids
        count = max(len(pixels), len(ids))
        return [{"pixel_values": pixels[i % len(pixels)], "input_ids": torch.tensor(ids[i % len(ids)])}
                for i in range(count)]

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        ids, mask = pad([e["input_ids"] for e in examples], self.pad_id)
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]), "input_ids": ids,
                "attention_mask": mask}

    def terms(self, student, batch):
        feeds = {"pixel_values": batch["pixel_values"], "input_ids": batch["input_ids"],
                 "attention_mask": batch["attention_mask"].long(), "output_hidden_states": True}
        with torch.no_grad():
            t = self.teacher(**feeds)
        s = student(**feeds)
        output = (kl_loss(s.logits_per_image, t.logits_per_image, None, self.temperature)
                  + kl_loss(s.logits_per_text, t.logits_per_text, None, self.temperature)) / 2
        output = output + sum((1 - F.cosine_similarity(getattr(s, k), getattr(t, k), dim=-1)).mean()
                              for k in ("image_embeds", "text_embeds"))
        text = hidden_loss(s.text_model_output.hidden_states, t.text_model_output.hidden_states,
                           self.kept["text_model.encoder.layers"], batch["attention_mask"])
        vision = hidden_loss(s.vision_model_output.hidden_states, t.vision_model_output.hidden_states,
                             self.kept["vision_model.encoder.layers"], None)
        return output, (text + vision) / 2


TASKS: dict[str, type[DistillTask]] = {"causal-lm": CausalLmTask, "whisper": WhisperTask, "clip": ClipTask}


def make_task(family: str, teacher_dir: Path, teacher: torch.nn.Module, kept: dict[str, list[int]],
              spec: Any) -> DistillTask:
    return TASKS[family](teacher_dir, teacher, kept, temperature=spec.temperature, output=spec.output,
                         hidden=spec.hidden, max_len=spec.max_len)
