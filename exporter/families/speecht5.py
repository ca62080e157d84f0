"""SpeechT5 text-to-speech (``SpeechT5ForTextToSpeech`` + a ``SpeechT5HifiGan`` vocoder in ``vocoder/``).

transformers' ``generate_speech`` is a loop: the text is encoded once; then, step by step, the last mel frame goes
through the speech prenet (with dropout, *also at inference*: SpeechT5 was trained that way), the decoder (self-
and cross-attention) and the postnet's linear heads, which give ``reduction_factor`` new mel frames and a stop
probability per frame; the loop stops when the probabilities sum to ``threshold`` (after ``minlenratio``, at the
latest at ``maxlenratio`` × text length / reduction factor), and the postnet's convolutions and the vocoder turn
the whole spectrogram into a waveform. The split follows it:

- ``encoder``: ``input_ids`` + ``attention_mask`` [B, S] → each decoder layer's cross-attention keys/values
  (``decoder_cache.cross_decls``), computed once per text. Static: S = ``max_text_len``, padding masked.
- ``decoder`` (one step): ``mel`` [B, 1, mel_bins] (zeros at the first step), ``position_ids`` [B, 1],
  ``speaker_embeddings`` [B, E], ``prenet_masks`` [prenet_layers, B, units] (the dropout masks, 0/1), the
  self-attention cache (``past_keys``/``past_values`` stacked as in ``decoder_cache``, ``past_mask`` [B, P]: 1 =
  a valid slot; the new frame's own slot is appended inside the graph), the encoder's ``encoder_attention_mask``
  and cross keys/values → ``spectrum`` [B, r, mel_bins], ``stop_logits``
  [B, r], ``new_keys``/``new_values``. Static: a ``decode`` signature over ``max_steps`` cache slots.
- ``vocoder``: ``spectrogram`` [B, F, mel_bins] (the decoder's frames) + ``frame_mask`` [B, 1, F] → the postnet's
  ``postnet_spectrogram`` and the ``waveform`` [B, F·hop]. Static: F = ``max_steps`` × r; the padding is masked
  before every convolution (``hifigan.FrameMasks``), so the real samples are the unpadded ones.

The runtime (``runtime.pipelines.speecht5_tts``) runs the loop in numpy with transformers' stopping rule. These
things differ from calling transformers' modules as they are, both so the runtime controls them:

- The prenet runs on the newest frame only, at its position (transformers re-runs it over every frame and keeps
  the last; the prenet works frame by frame, so the last row is the same), and its dropout masks are inputs drawn
  by the runtime with numpy (``seed``), in place of ``torch.bernoulli``: applied as transformers applies them
  (``where(mask == 1, x, 0) * 1 / (1 - p)``).
- The positional encoding of that frame is the table row at ``position_ids`` (transformers adds the first T rows
  to T frames).
- The text encoder's relative positions are clamped with ``clamp`` (transformers assigns through boolean masks,
  which fixed-shape exporters cannot trace): the same rows, while our wrapper runs only.

The fast tokenizer the slim runtime reads is built here from the character SentencePiece model (transformers has
no converter for ``SpeechT5Tokenizer``) and checked against it on probe texts at export.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from transformers.cache_utils import EncoderDecoderCache

from mmedge.errors import ExportError
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl, right_padded_ids
from mmedge.exporter.families.decoder_cache import (
    cache_sample,
    cross_cache,
    cross_decls,
    cross_outputs,
    cross_sample,
    fill_cache,
    new_entries,
)
from mmedge.exporter.families.hifigan import FrameMasks

#: Static limits of real models: 200 tokens (~190 characters) and 600 decoder steps (1200 mel frames, 19 s at
#: 16 kHz with a hop of 256); configs may ask for others (``mmedge_max_text_len`` / ``mmedge_max_steps``).
DEFAULT_MAX_TEXT_LEN = 200
DEFAULT_MAX_STEPS = 600
#: Texts the exported fast tokenizer must encode exactly as ``SpeechT5Tokenizer`` does.
PROBE_TEXTS = ("Hello world, how are you?", "  Two   spaces\tand a tab ", "Ünïcödé façade — ok!", "x", "ABC def 123",
               "[a-b] ^c\\ {}")


# ----------------------------------------------------------------------------------------------------- wrappers

def _relative_positions(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """``SpeechT5RelativePositionalEncoding.forward`` with ``clamp`` where transformers assigns through boolean
    masks (which TFLite's exporter cannot trace): the same table rows."""
    positions = torch.arange(0, hidden_states.shape[1], device=hidden_states.device, dtype=torch.long)
    relative = torch.clamp(positions[:, None] - positions[None, :], -self.max_length, self.max_length - 1)
    return self.pe_k(relative + self.max_length)


@contextlib.contextmanager
def export_friendly() -> Iterator[None]:
    """Swap in ``_relative_positions`` while the text encoder runs (and is traced); restored afterwards."""
    from transformers.models.speecht5 import modeling_speecht5

    original = modeling_speecht5.SpeechT5RelativePositionalEncoding.forward
    modeling_speecht5.SpeechT5RelativePositionalEncoding.forward = _relative_positions
    try:
        yield
    finally:
        modeling_speecht5.SpeechT5RelativePositionalEncoding.forward = original


class TextEncoder(nn.Module):
    """SpeechT5 text encoder + every decoder layer's cross-attention key/value projections."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.speecht5.encoder
        layers = model.speecht5.decoder.wrapped_decoder.layers
        self.keys = nn.ModuleList(layer.encoder_attn.k_proj for layer in layers)
        self.values = nn.ModuleList(layer.encoder_attn.v_proj for layer in layers)
        self.heads = layers[0].encoder_attn.num_heads
        self.head_dim = layers[0].encoder_attn.head_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        with export_friendly():
            hidden = self.encoder(input_values=input_ids.long(),
                                  attention_mask=attention_mask.long()).last_hidden_state
        batch, length = hidden.shape[:2]

        def project(proj: nn.Module) -> torch.Tensor:
            return proj(hidden).view(batch, length, self.heads, self.head_dim).transpose(1, 2)

        return cross_outputs([project(k) for k in self.keys], [project(v) for v in self.values])


class DecoderStep(nn.Module):
    """One generation step over explicit caches (see the module doc)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.prenet = model.speecht5.decoder.prenet
        self.decoder = model.speecht5.decoder.wrapped_decoder
        self.postnet = model.speech_decoder_postnet
        self.num_layers, self.hidden = len(self.decoder.layers), model.config.hidden_size
        self.reduction, self.bins = model.config.reduction_factor, model.config.num_mel_bins
        self.dropout = float(model.config.speech_decoder_prenet_dropout)

    def forward(self, mel: torch.Tensor, position_ids: torch.Tensor, speaker_embeddings: torch.Tensor,
                prenet_masks: torch.Tensor, past_mask: torch.Tensor, past_keys: torch.Tensor,
                past_values: torch.Tensor, encoder_attention_mask: torch.Tensor,
                *cross: torch.Tensor) -> dict[str, torch.Tensor]:
        prenet, p = self.prenet, self.dropout
        hidden = mel
        for i, layer in enumerate(prenet.layers):  # SpeechT5SpeechDecoderPrenet, newest frame only
            hidden = nn.functional.relu(layer(hidden))
            hidden = torch.where(prenet_masks[i][:, None, :] == 1, hidden, 0) * 1 / (1 - p)
        hidden = prenet.final_layer(hidden)
        positions = prenet.encode_positions
        hidden = hidden + positions.alpha * positions.pe[0][position_ids.long()]
        speaker = nn.functional.normalize(speaker_embeddings).unsqueeze(1).expand(-1, hidden.size(1), -1)
        hidden = nn.functional.relu(prenet.speaker_embeds_layer(torch.cat([hidden, speaker], dim=-1)))

        cache = EncoderDecoderCache(fill_cache(past_keys, past_values, self.num_layers),
                                    cross_cache(cross, self.num_layers))  # cross entries present: computed
        # A stand-in for the encoder states: it only makes each layer run cross-attention, whose keys and values
        # then come from the cache.
        marker = past_keys.new_zeros(mel.shape[0], 1, self.hidden)
        # The new frame may see the valid cache slots and itself: the graph appends its own slot to the mask.
        attention_mask = torch.cat([past_mask.long(), past_mask.new_ones(past_mask.shape[0], 1).long()], dim=1)
        out = self.decoder(hidden_states=hidden, attention_mask=attention_mask, encoder_hidden_states=marker,
                           encoder_attention_mask=encoder_attention_mask.long(), past_key_values=cache,
                           use_cache=True, return_dict=True)
        last = out.last_hidden_state[:, -1]
        keys, values = new_entries(out.past_key_values.self_attention_cache, self.num_layers, 1)
        return {"spectrum": self.postnet.feat_out(last).view(-1, self.reduction, self.bins),
                "stop_logits": self.postnet.prob_out(last), "new_keys": keys, "new_values": values}


class Vocoder(nn.Module):
    """The postnet's convolutions + HiFi-GAN over ``spectrogram`` and its ``frame_mask``."""

    def __init__(self, postnet: nn.Module, vocoder: nn.Module):
        super().__init__()
        self.postnet, self.vocoder = postnet, vocoder
        self.frame_masks = FrameMasks(vocoder.config.upsample_rates).add_hifigan(vocoder)
        for layer in postnet.layers:
            self.frame_masks.add(layer.conv, 0)

    def forward(self, spectrogram: torch.Tensor, frame_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.frame_masks.masking(frame_mask):
            mel = self.postnet.postnet(spectrogram)
            waveform = self.vocoder(mel)
        return {"postnet_spectrogram": mel, "waveform": waveform}


# --------------------------------------------------------------------------------------------------------- spec

def fast_tokenizer(tokenizer: Any) -> bytes:
    """A ``tokenizers`` JSON equal to a character-level ``SpeechT5Tokenizer`` on ``PROBE_TEXTS`` (checked):
    SentencePiece's NFKC normalisation and whitespace clean-up, "▁" for spaces and in front, one piece per
    character (a run of unknown ones: one ``<unk>``), ``</s>`` appended."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    sp = tokenizer.sp_model
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    if any(len(p) != 1 for p in vocab if not (p.startswith("<") and p.endswith(">"))):
        raise ExportError("the SpeechT5 tokenizer's SentencePiece model is not character-level; only character "
                          "vocabularies (spm_char.model, as microsoft/speecht5_tts) are supported")
    fast = Tokenizer(models.WordLevel(vocab, unk_token=tokenizer.unk_token))
    fast.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "),
                                            normalizers.Strip(), normalizers.Replace(" ", "\u2581"),
                                            normalizers.Prepend("\u2581")])
    # One piece per known character; a run of unknown characters is one <unk>, as SentencePiece groups them.
    known = "".join("\\" + c if c in "\\[]^-" else c for c in vocab if len(c) == 1)
    fast.pre_tokenizer = pre_tokenizers.Split(Regex(f"[{known}]|[^{known}]+"), behavior="isolated")
    eos = tokenizer.eos_token
    fast.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, vocab[eos])])
    for text in PROBE_TEXTS:
        if fast.encode(text).ids != tokenizer(text).input_ids:
            raise ExportError(f"the rebuilt tokenizer differs from SpeechT5Tokenizer on {text!r}; this tokenizer "
                              "is not supported")
    return fast.to_str().encode("utf-8")


def static_limits(config: Any) -> tuple[int, int]:
    """(max_text_len, max_steps) of the static variants: the family defaults or the config's request, never beyond
    the model's position tables."""
    text = int(getattr(config, "mmedge_max_text_len", None) or DEFAULT_MAX_TEXT_LEN)
    steps = int(getattr(config, "mmedge_max_steps", None) or DEFAULT_MAX_STEPS)
    return min(text, int(config.max_text_positions)), min(steps, int(config.max_speech_positions))


class SpeechT5Spec(FamilySpec):
    name = "speecht5-tts"
    task = "text-to-speech"
    model_types = ("speecht5",)

    def matches(self, config: dict) -> bool:
        return super().matches(config) and "SpeechT5ForTextToSpeech" in (config.get("architectures") or [])

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Tokenizer

        try:
            model = SpeechT5ForTextToSpeech.from_pretrained(model_dir, dtype=torch.float32).eval()
            tokenizer = SpeechT5Tokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot load a SpeechT5ForTextToSpeech and its tokenizer from {model_dir}: "
                              f"{e}") from None
        try:
            vocoder = SpeechT5HifiGan.from_pretrained(model_dir / "vocoder", dtype=torch.float32).eval()
        except (OSError, ValueError):
            raise ExportError(f"{model_dir} has no vocoder/ folder: save one next to the model, e.g. SpeechT5HifiGan."
                              f"from_pretrained('microsoft/speecht5_hifigan').save_pretrained('{model_dir}/vocoder')") \
                from None
        cfg = model.config
        if vocoder.config.model_in_dim != cfg.num_mel_bins:
            raise ExportError(f"the vocoder takes {vocoder.config.model_in_dim} mel bins, the model makes "
                              f"{cfg.num_mel_bins}; save the matching vocoder in {model_dir}/vocoder")
        if getattr(tokenizer, "normalize", False):
            raise ExportError("SpeechT5Tokenizer(normalize=True) spells numbers with transformers' English number "
                              "normaliser, which the slim runtime does not have; save the tokenizer with "
                              "normalize=False")
        layers, heads = cfg.decoder_layers, cfg.decoder_attention_heads
        head_dim, bins, r = cfg.hidden_size // heads, cfg.num_mel_bins, cfg.reduction_factor
        units, prenet_layers = cfg.speech_decoder_prenet_units, cfg.speech_decoder_prenet_layers
        speaker_dim, vocab = cfg.speaker_embedding_dim, cfg.vocab_size
        hop = math.prod(int(x) for x in vocoder.config.upsample_rates)
        max_text_len, max_steps = static_limits(cfg)

        encoder_sample = right_padded_ids(vocab)

        encoder = ComponentSpec(
            name="encoder", description="SpeechT5 text encoder + per-layer cross-attention keys/values",
            module=TextEncoder(model).eval(),
            inputs=(TensorDecl("input_ids", "int64", ("batch", "encoder_sequence")),
                    TensorDecl("attention_mask", "int64", ("batch", "encoder_sequence"))),
            outputs=cross_decls(layers, heads, head_dim, "encoder_sequence"), sample=encoder_sample,
            export_sizes={"batch": 2, "encoder_sequence": 9}, second_sizes={"batch": 1, "encoder_sequence": 14},
            static_signatures={"default": {"batch": 1, "encoder_sequence": max_text_len}}, atol=1e-4)

        past = (layers, "batch", heads, "past_sequence", head_dim)
        new = (layers, "batch", heads, 1, head_dim)
        step_sample = cache_sample(layers, heads, head_dim, 2, cfg.max_speech_positions)

        def decoder_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(seed + 1000)
            batch, length = sizes["batch"], sizes["encoder_sequence"]
            cached = step_sample({**sizes, "sequence": 1}, seed)
            mask = torch.ones(batch, length, dtype=torch.int64)
            mask[:, max(1, length - length // 4):] = 0  # a padded static text
            return {"mel": torch.randn(batch, 1, bins, generator=g), "position_ids": cached["position_ids"],
                    "speaker_embeddings": torch.randn(batch, speaker_dim, generator=g),
                    "prenet_masks": torch.bernoulli(torch.full((prenet_layers, batch, units), 0.5), generator=g),
                    "past_mask": cached["attention_mask"][:, :-1], "past_keys": cached["past_keys"],
                    "past_values": cached["past_values"], "encoder_attention_mask": mask,
                    **cross_sample(layers, heads, head_dim, batch, length, g)}

        decoder = ComponentSpec(
            name="decoder", description="SpeechT5 speech prenet + decoder step with explicit self/cross caches -> "
                                        "mel frames, stop logits, new keys/values",
            module=DecoderStep(model).eval(),
            inputs=(TensorDecl("mel", "float32", ("batch", 1, bins)),
                    TensorDecl("position_ids", "int64", ("batch", 1)),
                    TensorDecl("speaker_embeddings", "float32", ("batch", speaker_dim)),
                    TensorDecl("prenet_masks", "float32", (prenet_layers, "batch", units)),
                    TensorDecl("past_mask", "int64", ("batch", "past_sequence")),
                    TensorDecl("past_keys", "float32", past), TensorDecl("past_values", "float32", past),
                    TensorDecl("encoder_attention_mask", "int64", ("batch", "encoder_sequence")),
                    *cross_decls(layers, heads, head_dim, "encoder_sequence")),
            outputs=(TensorDecl("spectrum", "float32", ("batch", r, bins)),
                     TensorDecl("stop_logits", "float32", ("batch", r)),
                     TensorDecl("new_keys", "float32", new), TensorDecl("new_values", "float32", new)),
            sample=decoder_sample,
            export_sizes={"batch": 2, "past_sequence": 4, "encoder_sequence": 7},
            second_sizes={"batch": 1, "past_sequence": 9, "encoder_sequence": 5},
            more_sizes=({"batch": 1, "past_sequence": 0, "encoder_sequence": 6},),
            static_signatures={"decode": {"batch": 1, "past_sequence": max_steps, "encoder_sequence": max_text_len}},
            needs_dynamo=True, atol=1e-4)

        def vocoder_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(seed + 2000)
            batch, frames = sizes["batch"], sizes["frames"]
            mask = torch.ones(batch, 1, frames)
            mask[..., max(1, frames - frames // 4):] = 0  # padded frames, as a static buffer has
            return {"spectrogram": torch.randn(batch, frames, bins, generator=g) * mask.transpose(1, 2),
                    "frame_mask": mask}

        vocoder_spec = ComponentSpec(
            name="vocoder", description="SpeechT5 postnet convolutions + HiFi-GAN: mel frames -> waveform",
            module=Vocoder(model.speech_decoder_postnet, vocoder).eval(),
            inputs=(TensorDecl("spectrogram", "float32", ("batch", "frames", bins)),
                    TensorDecl("frame_mask", "float32", ("batch", 1, "frames"))),
            outputs=(TensorDecl("postnet_spectrogram", "float32", ("batch", "frames", bins)),
                     TensorDecl("waveform", "float32", ("batch", "samples"))),
            sample=vocoder_sample, export_sizes={"batch": 1, "frames": 20, "samples": 20 * hop},
            second_sizes={"batch": 2, "frames": 33, "samples": 33 * hop},
            static_signatures={"default": {"batch": 1, "frames": max_steps * r, "samples": max_steps * r * hop}},
            atol=1e-4)
        return LoadedFamily(
            family=self.name, task=self.task, components=[encoder, decoder, vocoder_spec],
            preprocessing={"text": {"tokenizer_file": "tokenizer/tokenizer.json", "max_text_len": max_text_len,
                                    "pad_token_id": int(tokenizer.pad_token_id),
                                    "unk_token_id": int(tokenizer.unk_token_id)},
                           "speaker_embedding_dim": speaker_dim},
            postprocessing={"audio": {"sampling_rate": int(vocoder.config.sampling_rate), "hop_length": hop}},
            generation={"threshold": 0.5, "minlenratio": 0.0, "maxlenratio": 20.0, "reduction_factor": r,
                        "num_mel_bins": bins, "prenet_dropout": float(cfg.speech_decoder_prenet_dropout),
                        "prenet_layers": prenet_layers, "prenet_units": units,
                        "max_speech_positions": int(cfg.max_speech_positions),
                        "cache": {"layers": layers, "kv_heads": heads, "head_dim": head_dim, "max_steps": max_steps}},
            files={"tokenizer/tokenizer.json": fast_tokenizer(tokenizer)})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.speecht5_tiny import write_tiny_speecht5

        return write_tiny_speecht5(out_dir)
