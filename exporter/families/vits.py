"""VITS text-to-speech (MMS-TTS and other ``VitsModel`` checkpoints), split where the output length is decided.

VITS turns characters into a waveform whose length follows the *predicted* duration of every token, a
data-dependent size that fixed-shape graphs (TFLite, NPUs) cannot express. So the model is cut there:

- ``encoder``: ``input_ids`` + ``attention_mask`` [B, T] (+ ``duration_noise`` [B, 2, T] for the stochastic
  duration predictor, + ``speaker_id`` [B] for several speakers) → ``log_duration`` [B, 1, T] and the prior
  ``prior_means`` / ``prior_log_variances`` [B, T, C]: text encoder + duration predictor.
- numpy (``runtime.pipelines.vits_tts``): durations ``ceil(exp(log_duration) · mask · length_scale)``, the frame
  count, each token's prior repeated over its frames (transformers' 0/1 alignment matmul, exactly), and the prior
  sample ``means + noise · exp(log_variances) · noise_scale``.
- ``decoder``: ``prior_latents`` [B, C, F] + ``frame_mask`` [B, 1, F] (+ ``speaker_id``) → ``waveform``
  [B, F·hop]: the inverted flow and the HiFi-GAN vocoder.

Static variants fix T to ``max_text_len`` (token ids, blanks included) and F to ``max_frames``; the runtime pads
both and masks the padding, and a text or a predicted length beyond them is a ``StaticShapeError``. Padding must
not change the speech, and the exported graphs must not specialise a length, so these things differ from running
``VitsModel`` as it is (each installed only while our wrappers run; ``VitsModel`` itself is untouched):

- The noise. transformers draws it with ``torch.randn`` inside the model; here it is an input (``duration_noise``,
  ``prior_latents``) drawn by the runtime in numpy, so runs are seeded and the deterministic case (noise scales 0,
  transformers' ``noise_scale=0, noise_scale_duration=0``) gives transformers' waveform exactly.
  ``reverse_duration_flows`` is therefore the reverse branch of ``VitsStochasticDurationPredictor.forward`` with
  the noise as an argument.
- The duration flows' rational-quadratic spline. transformers indexes with boolean masks (data-dependent shapes)
  and raises on data-dependent checks, which no fixed-shape exporter can trace; ``rational_quadratic_inverse``
  computes the same numbers over the whole tensor and selects with ``where``.
- The attention's relative embeddings. transformers pads them by ``max(length - window - 1, 0)``, a Python branch
  on the length that a tracer bakes in; ``_relative_embeddings`` always pads by ``length`` and slices the same
  rows, identical values for every length.
- HiFi-GAN over padded frames (static ``decoder``): the flow already masks its padding, but the vocoder's
  convolutions would let padded frames leak into the last real samples; ``hifigan.FrameMasks`` zeroes the
  padding before each of them, which gives the unpadded result for the real samples.

Tokenization (``VitsTokenizer``: lower-casing, characters outside the vocabulary dropped, blanks interspersed) is
re-done in numpy from the vocabulary in the manifest; phonemizing tokenizers (``phonemize=True``) are refused at
export, and voices that read romanized text (``is_uroman``) ask for it at run time (uroman is not in the runtime).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from mmedge.errors import ExportError
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl
from mmedge.exporter.families.hifigan import FrameMasks

#: Static limits of real models: 256 token ids (~127 characters with blanks) and 1024 frames (16 s at MMS-TTS's
#: 16 kHz with a hop of 256); configs may ask for others (``mmedge_max_text_len`` / ``mmedge_max_frames``).
DEFAULT_MAX_TEXT_LEN = 256
DEFAULT_MAX_FRAMES = 1024


# ------------------------------------------------------------------------------------------ export-friendly parts

def rational_quadratic_inverse(inputs: torch.Tensor, unnormalized_widths: torch.Tensor,
                               unnormalized_heights: torch.Tensor, unnormalized_derivatives: torch.Tensor,
                               reverse: bool = False, tail_bound: float = 5.0, min_bin_width: float = 1e-3,
                               min_bin_height: float = 1e-3, min_derivative: float = 1e-3
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' ``_unconstrained_rational_quadratic_spline`` in reverse (the only direction inference uses),
    over the whole tensor: values outside ``tail_bound`` are computed on a clamped copy and replaced by the input
    (the identity tails), the same arithmetic in the same order for the rest. The log-determinant is not computed
    (``VitsConvFlow`` drops it in reverse): zeros."""
    if not reverse:
        raise ExportError("the VITS export only runs the duration flows in reverse (inference)")
    lower, upper = -tail_bound, tail_bound
    inside = (inputs >= lower) & (inputs <= upper)
    x = inputs.clamp(lower, upper)
    edge = torch.full_like(unnormalized_derivatives[..., :1], math.log(math.exp(1 - min_derivative) - 1))
    derivatives = min_derivative + nn.functional.softplus(torch.cat([edge, unnormalized_derivatives, edge], dim=-1))
    bins = unnormalized_widths.shape[-1]

    def knots(unnormalized: torch.Tensor, minimum: float) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = minimum + (1 - minimum * bins) * nn.functional.softmax(unnormalized, dim=-1)
        cumulative = nn.functional.pad(torch.cumsum(sizes, dim=-1), pad=(1, 0), mode="constant", value=0.0)
        cumulative = (upper - lower) * cumulative + lower
        cumulative = torch.cat([torch.full_like(cumulative[..., :1], lower), cumulative[..., 1:-1],
                                torch.full_like(cumulative[..., :1], upper)], dim=-1)
        return cumulative, cumulative[..., 1:] - cumulative[..., :-1]

    cumwidths, widths = knots(unnormalized_widths, min_bin_width)
    cumheights, heights = knots(unnormalized_heights, min_bin_height)
    locations = torch.cat([cumheights[..., :-1], cumheights[..., -1:] + 1e-6], dim=-1)
    index = (torch.sum(x[..., None] >= locations, dim=-1) - 1)[..., None]

    def pick(table: torch.Tensor) -> torch.Tensor:
        return table.gather(-1, index)[..., 0]

    delta = heights / widths
    input_delta, input_heights, input_derivatives = pick(delta), pick(heights), pick(derivatives)
    intermediate1 = input_derivatives + pick(derivatives[..., 1:]) - 2 * input_delta
    intermediate2 = x - pick(cumheights)
    intermediate3 = intermediate2 * intermediate1
    a = input_heights * (input_delta - input_derivatives) + intermediate3
    b = input_heights * input_derivatives - intermediate3
    c = -input_delta * intermediate2
    root = (2 * c) / (-b - torch.sqrt(b.pow(2) - 4 * a * c))
    outputs = root * pick(widths) + pick(cumwidths)
    return torch.where(inside, outputs, inputs), torch.zeros_like(inputs)


def _relative_embeddings(self: nn.Module, relative_embeddings: torch.Tensor, length: int) -> torch.Tensor:
    """``VitsAttention._get_relative_embeddings`` without a branch on ``length`` (see the module doc)."""
    padded = nn.functional.pad(relative_embeddings, [0, 0, length, length, 0, 0])
    return padded[:, self.window_size + 1: self.window_size + 2 * length]


@contextlib.contextmanager
def export_friendly() -> Iterator[None]:
    """Swap in the branch-free spline and relative embeddings while a wrapper runs (and is traced)."""
    from transformers.models.vits import modeling_vits

    spline, embeddings = modeling_vits._unconstrained_rational_quadratic_spline, \
        modeling_vits.VitsAttention._get_relative_embeddings
    modeling_vits._unconstrained_rational_quadratic_spline = rational_quadratic_inverse
    modeling_vits.VitsAttention._get_relative_embeddings = _relative_embeddings
    try:
        yield
    finally:
        modeling_vits._unconstrained_rational_quadratic_spline = spline
        modeling_vits.VitsAttention._get_relative_embeddings = embeddings


def reverse_duration_flows(predictor: nn.Module, hidden: torch.Tensor, padding_mask: torch.Tensor,
                           speaker: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
    """``VitsStochasticDurationPredictor.forward(reverse=True)`` with its noise given (already scaled by
    ``noise_scale_duration``) instead of drawn: log durations [B, 1, T]."""
    inputs = predictor.conv_pre(hidden)
    if speaker is not None:
        inputs = inputs + predictor.cond(speaker)
    inputs = predictor.conv_dds(inputs, padding_mask)
    inputs = predictor.conv_proj(inputs) * padding_mask
    flows = list(reversed(predictor.flows))
    flows = flows[:-2] + [flows[-1]]  # transformers drops the same unused flow
    latents = noise
    for flow in flows:
        latents = torch.flip(latents, [1])
        latents, _ = flow(latents, padding_mask, global_conditioning=inputs, reverse=True)
    return latents[:, :1]


# ----------------------------------------------------------------------------------------------------- wrappers

class VitsEncoder(nn.Module):
    """Text encoder + duration predictor; inputs by name (``names``), see the module doc."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names
        self.stochastic = bool(model.config.use_stochastic_duration_prediction)

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feeds = dict(zip(self.names, inputs))
        attention_mask = feeds["attention_mask"].long()
        padding_mask = attention_mask.unsqueeze(-1).to(torch.float32)
        speaker = (self.model.embed_speaker(feeds["speaker_id"].long()).unsqueeze(-1)
                   if "speaker_id" in feeds else None)
        with export_friendly():
            out = self.model.text_encoder(input_ids=feeds["input_ids"].long(), padding_mask=padding_mask,
                                          attention_mask=attention_mask)
            hidden, mask = out.last_hidden_state.transpose(1, 2), padding_mask.transpose(1, 2)
            if self.stochastic:
                log_duration = reverse_duration_flows(self.model.duration_predictor, hidden, mask, speaker,
                                                      feeds["duration_noise"])
            else:
                log_duration = self.model.duration_predictor(hidden, mask, speaker)
        return {"log_duration": log_duration, "prior_means": out.prior_means,
                "prior_log_variances": out.prior_log_variances}


class VitsDecoder(nn.Module):
    """Inverted flow + HiFi-GAN over ``prior_latents`` and its ``frame_mask``; inputs by name (``names``)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names
        self.frame_masks = FrameMasks(model.config.upsample_rates).add_hifigan(model.decoder)

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feeds = dict(zip(self.names, inputs))
        frame_mask = feeds["frame_mask"]
        speaker = (self.model.embed_speaker(feeds["speaker_id"].long()).unsqueeze(-1)
                   if "speaker_id" in feeds else None)
        with export_friendly(), self.frame_masks.masking(frame_mask):
            latents = self.model.flow(feeds["prior_latents"], frame_mask, speaker, reverse=True)
            waveform = self.model.decoder(latents * frame_mask, speaker)
        return {"waveform": waveform.squeeze(1)}


# --------------------------------------------------------------------------------------------------------- spec

def static_limits(config: Any) -> tuple[int, int]:
    """(max_text_len, max_frames) of the static variants: the family defaults or the config's request."""
    return (int(getattr(config, "mmedge_max_text_len", None) or DEFAULT_MAX_TEXT_LEN),
            int(getattr(config, "mmedge_max_frames", None) or DEFAULT_MAX_FRAMES))


def _tokenizer_config(tokenizer: Any, model_dir: Path) -> dict[str, Any]:
    """What the runtime needs to redo ``VitsTokenizer`` (character vocabulary and its switches)."""
    if getattr(tokenizer, "phonemize", False):
        raise ExportError(f"{model_dir}'s tokenizer phonemizes with the `phonemizer` package (phonemize=True); only "
                          "character tokenizers (MMS-TTS, phonemize=False) are supported")
    if not hasattr(tokenizer, "encoder") or not hasattr(tokenizer, "add_blank"):
        raise ExportError(f"{type(tokenizer).__name__} is not a VitsTokenizer; re-save the model with its tokenizer")
    return {"vocab": dict(tokenizer.encoder), "added_tokens": list(tokenizer.added_tokens_encoder),
            "add_blank": bool(tokenizer.add_blank), "normalize": bool(tokenizer.normalize),
            "language": tokenizer.language, "is_uroman": bool(tokenizer.is_uroman),
            "unk_token": tokenizer.unk_token, "pad_token_id": int(tokenizer.pad_token_id or 0)}


class VitsSpec(FamilySpec):
    name = "vits-tts"
    task = "text-to-speech"
    model_types = ("vits",)

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import AutoTokenizer, VitsModel

        try:
            model = VitsModel.from_pretrained(model_dir, dtype=torch.float32).eval()
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot load a VitsModel and its tokenizer from {model_dir}: {e}") from None
        cfg = model.config
        text = _tokenizer_config(tokenizer, model_dir)
        vocab, channels = int(cfg.vocab_size), int(cfg.flow_size)
        hop = math.prod(int(r) for r in cfg.upsample_rates)
        speakers = int(cfg.num_speakers) > 1
        max_text_len, max_frames = static_limits(cfg)

        encoder_inputs = [TensorDecl("input_ids", "int64", ("batch", "sequence")),
                          TensorDecl("attention_mask", "int64", ("batch", "sequence"))]
        if cfg.use_stochastic_duration_prediction:
            encoder_inputs.append(TensorDecl("duration_noise", "float32", ("batch", 2, "sequence")))
        decoder_inputs = [TensorDecl("prior_latents", "float32", ("batch", channels, "frames")),
                          TensorDecl("frame_mask", "float32", ("batch", 1, "frames"))]
        if speakers:
            encoder_inputs.append(TensorDecl("speaker_id", "int64", ("batch",)))
            decoder_inputs.append(TensorDecl("speaker_id", "int64", ("batch",)))

        def speaker_ids(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
            return {"speaker_id": torch.randint(0, int(cfg.num_speakers), (batch,), generator=g)} if speakers else {}

        def encoder_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(seed)
            batch, length = sizes["batch"], sizes["sequence"]
            mask = torch.ones(batch, length, dtype=torch.int64)
            mask[0, max(1, length - length // 3):] = 0  # right padding, as a static bucket has
            sample = {"input_ids": torch.randint(0, vocab, (batch, length), generator=g), "attention_mask": mask}
            if cfg.use_stochastic_duration_prediction:
                sample["duration_noise"] = torch.randn(batch, 2, length, generator=g) * 0.8
            return {**sample, **speaker_ids(batch, g)}

        def decoder_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(seed + 1000)
            batch, frames = sizes["batch"], sizes["frames"]
            mask = torch.ones(batch, 1, frames)
            mask[..., max(1, frames - frames // 4):] = 0  # padded frames, as a static buffer has
            return {"prior_latents": torch.randn(batch, channels, frames, generator=g) * mask, "frame_mask": mask,
                    **speaker_ids(batch, g)}

        names = [t.name for t in encoder_inputs]
        encoder = ComponentSpec(
            name="encoder", description="VITS text encoder + duration predictor -> log durations and the prior",
            module=VitsEncoder(model, names).eval(), inputs=tuple(encoder_inputs),
            outputs=(TensorDecl("log_duration", "float32", ("batch", 1, "sequence")),
                     TensorDecl("prior_means", "float32", ("batch", "sequence", channels)),
                     TensorDecl("prior_log_variances", "float32", ("batch", "sequence", channels))),
            sample=encoder_sample, export_sizes={"batch": 1, "sequence": 13}, second_sizes={"batch": 2, "sequence": 21},
            static_signatures={"default": {"batch": 1, "sequence": max_text_len}}, atol=1e-4)
        decoder = ComponentSpec(
            name="decoder", description="VITS inverted flow + HiFi-GAN: prior latents over frames -> waveform",
            module=VitsDecoder(model, [t.name for t in decoder_inputs]).eval(), inputs=tuple(decoder_inputs),
            outputs=(TensorDecl("waveform", "float32", ("batch", "samples")),),
            sample=decoder_sample, export_sizes={"batch": 1, "frames": 24, "samples": 24 * hop},
            second_sizes={"batch": 2, "frames": 37, "samples": 37 * hop},
            static_signatures={"default": {"batch": 1, "frames": max_frames, "samples": max_frames * hop}}, atol=1e-4)
        return LoadedFamily(
            family=self.name, task=self.task, components=[encoder, decoder],
            preprocessing={"text": {**text, "max_text_len": max_text_len}},
            postprocessing={"audio": {"sampling_rate": int(cfg.sampling_rate), "hop_length": hop,
                                      "max_frames": max_frames}},
            generation={"noise_scale": float(cfg.noise_scale), "noise_scale_duration": float(cfg.noise_scale_duration),
                        "speaking_rate": float(cfg.speaking_rate),
                        "stochastic_duration": bool(cfg.use_stochastic_duration_prediction),
                        "num_speakers": int(cfg.num_speakers), "flow_size": channels})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.vits_tiny import write_tiny_vits

        return write_tiny_vits(out_dir)
