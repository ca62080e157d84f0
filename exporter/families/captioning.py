"""Image captioning, built like Whisper: an ``encoder`` component (pixels -> the cross-attention keys/values of
every decoder layer, computed once per image) and a ``decoder`` component (the shared KV-cache graph of
``decoder_cache`` plus the cross keys/values as inputs), so each decoding step costs only the decoder's
self-attention and projections, on every engine and with dynamic or static caches.

Two families share the wrappers:

- ``vision-encoder-decoder``: transformers' ``VisionEncoderDecoderModel`` (e.g. ViT + GPT-2 with
  ``add_cross_attention``, nlpconnect/vit-gpt2-image-captioning). The encoder output goes through
  ``enc_to_dec_proj`` when the widths differ, as the model does. The prompt is the decoder start token only:
  transformers' image-to-text pipeline refuses text prompts for this model type, and so do we.
- ``blip-captioning``: ``BlipForConditionalGeneration`` (vision model + BERT-style ``BlipTextLMHeadModel`` with
  cross-attention). Its ``generate`` builds the decoder input from the tokenized prompt (``[CLS] text [SEP]``, or
  ``[bos, eos]`` without a prompt) by replacing the first id with ``text_config.bos_token_id`` and dropping the
  last one, then stops on ``sep_token_id`` (not ``eos_token_id``). That recipe is written into the manifest's
  ``generation.prompt`` and replayed by the runtime.

The cross keys/values are projected here with each decoder layer's own cross-attention weights (the few lines
of the attention module that only depend on the image); the decoder graph itself runs transformers' code
unchanged on an ``EncoderDecoderCache`` filled from the explicit inputs, whose cross entries mark the
projection as already done. The image pre-processing (resize to the fixed size, rescale, normalise) runs in
numpy on the device, equal to the HF processor; its parameters are resolved here and stored explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmedge.errors import ExportError, MmedgeError
from mmedge.exporter.families.base import ComponentSpec, FamilySpec, LoadedFamily, TensorDecl, tokenizer_json
from mmedge.exporter.families.decoder_cache import (CrossDecoderWithCache, cache_io, cache_sample, cross_decls,
                                                   cross_outputs, cross_sample, static_signatures)

#: Captions are short: a 64-slot static cache keeps every static decode step small. Prompts are the start
#: token (vision-encoder-decoder) or a short BLIP prefix ("[DEC] a picture of" is 4 tokens): one prefill bucket
#: of 8 serves them in one call (longer prompts run in chunks); each bucket is one more graph to convert.
MAX_CACHE_LEN = 64
PROMPT_BUCKETS = (8,)
#: Generation settings kept from the model's generation config (HF names; the runtime's GenerationConfig
#: reads them), HF defaults included: ``generate`` applies them when the caller sets nothing, and so does the
#: runtime.
GENERATION_KEYS = ("max_length", "max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p",
                   "repetition_penalty", "no_repeat_ngram_size", "num_beams", "length_penalty", "early_stopping",
                   "eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id", "suppress_tokens",
                   "begin_suppress_tokens")
#: BLIP's prompt recipe (``BlipForConditionalGeneration.generate``): tokenize with special tokens, put the
#: start token in place of the first id, drop the last id (the tokenizer's trailing ``[SEP]``).
BLIP_TEXT_PROMPT = {"add_special_tokens": True, "replace_first": True, "drop_last": True}
TOKENIZER_FILE = "tokenizer/tokenizer.json"
HF_DEFAULT_MAX_LENGTH = 20  # transformers.GenerationConfig().max_length


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, H*D] -> [B, H, S, D], the layout every attention cache uses."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def _gpt2_cross(attn: torch.nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``GPT2Attention`` (is_cross_attention): one Conv1D gives keys and values (see its forward)."""
    keys, values = attn.c_attn(hidden).split(attn.split_size, dim=2)
    return _heads(keys, attn.num_heads), _heads(values, attn.num_heads)


def _blip_cross(attn: torch.nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``BlipTextSelfAttention`` (is_cross_attention): separate key and value projections."""
    return _heads(attn.key(hidden), attn.num_attention_heads), _heads(attn.value(hidden), attn.num_attention_heads)


#: decoder model_type -> (the cross-attention module of decoder layer i, its key/value projection).
CROSS_ATTENTION = {
    "gpt2": (lambda decoder, i: decoder.transformer.h[i].crossattention, _gpt2_cross),
    "blip_text_model": (lambda decoder, i: decoder.bert.encoder.layer[i].crossattention.self, _blip_cross),
}
#: Decoders of a VisionEncoderDecoderModel this family exports (each needs its CROSS_ATTENTION entry and a
#: parity run: its attention must reuse an updated cross cache, as GPT-2's does).
VED_DECODERS = ("gpt2",)


class VisionEncoderWithCross(torch.nn.Module):
    """Vision tower (+ the encoder-to-decoder projection, if any) + every decoder layer's cross-attention
    key/value projections: everything that only depends on the image, run once per image."""

    def __init__(self, vision: torch.nn.Module, projection: torch.nn.Module | None, decoder: torch.nn.Module,
                 decoder_type: str, num_layers: int):
        super().__init__()
        layer_of, self._project = CROSS_ATTENTION[decoder_type]
        self.vision, self.projection = vision, projection
        self.cross = torch.nn.ModuleList(layer_of(decoder, i) for i in range(num_layers))

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.vision(pixel_values=pixel_values).last_hidden_state
        if self.projection is not None:
            hidden = self.projection(hidden)
        pairs = [self._project(attn, hidden) for attn in self.cross]
        return cross_outputs([k for k, _ in pairs], [v for _, v in pairs])


def image_preprocessing(model_dir: Path) -> dict[str, Any]:
    """The HF processor config resolved with its class defaults, every key explicit (runtime needs no HF)."""
    from mmedge.runtime.preprocess.image import fixed_size_preprocessor

    path = model_dir / "preprocessor_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        return fixed_size_preprocessor(config).to_config()
    except OSError as e:
        raise ExportError(f"{model_dir} has no readable preprocessor_config.json ({e}); the image processor "
                          "parameters are needed for on-device pre-processing") from None
    except (ValueError, MmedgeError) as e:
        raise ExportError(f"{path}: {e}") from None


def _generation_config(source: Any, position_cap: int | None, **overrides: Any) -> dict[str, Any]:
    """The generation settings ``generate`` would use (HF defaults included), as plain JSON.

    Lengths follow ``GenerationMixin._prepare_generated_length``: a ``max_length`` left at HF's default value (20)
    means "20 new tokens", capped so that prompt + caption stay within the generating model's
    ``max_position_embeddings`` (``position_cap``); any other ``max_length`` counts the prompt.
    """
    full = source.to_dict()
    gen = {k: full[k] for k in GENERATION_KEYS if full.get(k) is not None}
    if gen.get("max_new_tokens") is None and gen.get("max_length") == HF_DEFAULT_MAX_LENGTH:
        gen["max_new_tokens"] = HF_DEFAULT_MAX_LENGTH
        gen.pop("max_length")
        if position_cap is not None:
            gen["max_length"] = int(position_cap)
    gen.update({k: v for k, v in overrides.items() if v is not None})
    return json.loads(json.dumps(gen))


def _components(encoder: torch.nn.Module, decoder: torch.nn.Module, *, layers: int, heads: int, head_dim: int,
                vocab: int, max_positions: int, image: tuple[int, int], encoder_length: int,
                what: str) -> list[ComponentSpec]:
    """The encoder and decoder specs, with sample inputs at two batch sizes (the parity check at the second
    one is what catches a batch the exporter silently fixed) and the static contract."""
    height, width = image
    encoder_spec = ComponentSpec(
        name="encoder", description=f"{what} vision encoder + per-layer cross-attention keys/values",
        module=encoder.eval(),
        inputs=(TensorDecl("pixel_values", "float32", ("batch", 3, height, width)),),
        outputs=cross_decls(layers, heads, head_dim, encoder_length),
        sample=lambda sizes, seed: {"pixel_values": torch.randn(
            sizes["batch"], 3, height, width, generator=torch.Generator().manual_seed(seed))},
        export_sizes={"batch": 2}, second_sizes={"batch": 1}, static_signatures={"default": {"batch": 1}},
        atol=1e-4)
    inputs, outputs = cache_io(layers, heads, head_dim, vocab)
    inputs += cross_decls(layers, heads, head_dim, encoder_length)
    lm_sample = cache_sample(layers, heads, head_dim, vocab, max_positions)

    def decoder_sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed + 1000)
        return {**lm_sample(sizes, seed), **cross_sample(layers, heads, head_dim, sizes["batch"], encoder_length, g)}

    max_cache_len, buckets = _static_contract(max_positions)
    decoder_spec = ComponentSpec(
        name="decoder", description=f"{what} text decoder with explicit self/cross KV caches -> logits, new "
                                    "keys/values",
        module=decoder.eval(), inputs=inputs, outputs=outputs, sample=decoder_sample,
        export_sizes={"batch": 2, "sequence": 3, "past_sequence": 4},
        second_sizes={"batch": 1, "sequence": 1, "past_sequence": 9},
        more_sizes=({"batch": 1, "sequence": 4, "past_sequence": 0},  # prefill on an empty dynamic cache
                    {"batch": 3, "sequence": 1, "past_sequence": 6}),  # a step of 3 beams
        static_signatures=static_signatures(max_cache_len, buckets),
        needs_dynamo=True, derived_dims=("total_sequence",), atol=1e-4)
    return [encoder_spec, decoder_spec]


def _static_contract(max_positions: int) -> tuple[int, tuple[int, ...]]:
    """(max_cache_len, prompt buckets) of the static decoder, within the model's position range."""
    max_cache_len = min(MAX_CACHE_LEN, max_positions)
    return max_cache_len, tuple(b for b in PROMPT_BUCKETS if b < max_cache_len) or (max(1, max_cache_len // 4),)


def _cache_contract(layers: int, heads: int, head_dim: int, max_positions: int) -> dict[str, Any]:
    """The manifest's ``generation.cache``: what ``CachedDecoder`` needs to own the cache."""
    max_cache_len, buckets = _static_contract(max_positions)
    return {"layers": layers, "kv_heads": heads, "head_dim": head_dim, "max_positions": max_positions,
            "max_cache_len": max_cache_len, "prompt_buckets": list(buckets)}


class VisionEncoderDecoderSpec(FamilySpec):
    name = "vision-encoder-decoder"
    task = "image-to-text"
    model_types = ("vision-encoder-decoder",)

    def load(self, model_dir: Path) -> LoadedFamily:
        from transformers import AutoTokenizer, VisionEncoderDecoderModel

        try:
            model = VisionEncoderDecoderModel.from_pretrained(model_dir, dtype=torch.float32).eval()
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot load a VisionEncoderDecoderModel and its tokenizer from {model_dir}: "
                              f"{e}") from None
        dec_cfg = model.config.decoder
        if dec_cfg.model_type not in VED_DECODERS:
            raise ExportError(f"vision-encoder-decoder with a '{dec_cfg.model_type}' decoder is not supported yet "
                              f"(supported decoders: {', '.join(VED_DECODERS)})")
        # What generate reads: generation_config.json if the model has one, else the settings of config.json;
        # the first decoder token is decoder_start_token_id, else bos (GenerationMixin._get_decoder_start_token_id).
        generation = model.generation_config
        start = next((v for v in (generation.decoder_start_token_id, generation.bos_token_id) if v is not None), None)
        if start is None:
            raise ExportError(f"{model_dir}: no decoder_start_token_id in the config or generation config; "
                              "set it (GPT-2 captioners use the <|endoftext|> id)")
        layers, heads = dec_cfg.n_layer, dec_cfg.n_head
        head_dim, vocab = dec_cfg.n_embd // heads, model.decoder.get_output_embeddings().weight.shape[0]
        max_positions = dec_cfg.n_positions
        preprocessing = image_preprocessing(model_dir)
        image = (preprocessing["size"]["height"], preprocessing["size"]["width"])
        projection = getattr(model, "enc_to_dec_proj", None)
        encoder = VisionEncoderWithCross(model.encoder, projection, model.decoder, dec_cfg.model_type, layers)
        with torch.no_grad():  # the encoder's sequence length (patches + class token...) for this image size
            encoder_length = encoder(pixel_values=torch.zeros(1, 3, *image))["cross_values_0"].shape[2]
        components = _components(encoder, CrossDecoderWithCache(model.decoder, layers, dec_cfg.n_embd),
                                 layers=layers, heads=heads, head_dim=head_dim, vocab=vocab,
                                 max_positions=max_positions, image=image, encoder_length=encoder_length,
                                 what=f"{model.config.encoder.model_type}+{dec_cfg.model_type}")
        return LoadedFamily(
            family=self.name, task=self.task, components=components,
            preprocessing={"image": preprocessing, "text": {"tokenizer_file": TOKENIZER_FILE}},
            postprocessing={},
            generation={"config": _generation_config(generation, getattr(model.config, "max_position_embeddings",
                                                                         None), decoder_start_token_id=start),
                        "cache": _cache_contract(layers, heads, head_dim, max_positions),
                        "prompt": {"start_token_id": int(start), "text_prompt": None}},
            files={TOKENIZER_FILE: tokenizer_json(tokenizer, model_dir)})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.captioning_tiny import write_tiny_captioner

        return write_tiny_captioner(out_dir, "vit-gpt2")


@dataclass
class LoadedBlip:
    """A BLIP model with one head (captioning, question answering) and what every BLIP family reads from it: the
    text decoder's geometry and the image pre-processing. Both heads generate with ``text_decoder.generate``."""

    model: Any
    tokenizer: Any
    text: Any  # the model's text_config
    layers: int
    heads: int
    head_dim: int
    vocab: int
    max_positions: int
    preprocessing: dict[str, Any]  # the image pre-processing, resolved
    image: tuple[int, int]  # (height, width) the processor resizes to

    def generation_config(self) -> dict[str, Any]:
        """BLIP's generate runs text_decoder.generate with its own generation config, eos = [SEP], pad = [PAD]."""
        return _generation_config(self.model.text_decoder.generation_config, self.max_positions,
                                  eos_token_id=self.text.sep_token_id, pad_token_id=self.text.pad_token_id)


def load_blip(model_dir: Path, head: str) -> LoadedBlip:
    """Load the transformers BLIP class ``head`` (float32, eval) and its tokenizer from ``model_dir``, checking the
    text config ids BLIP's generate reads."""
    import transformers

    try:
        model = getattr(transformers, head).from_pretrained(model_dir, dtype=torch.float32).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot load a {head} and its tokenizer from {model_dir}: {e}") from None
    text = model.config.text_config
    for key in ("bos_token_id", "sep_token_id", "pad_token_id"):
        if getattr(text, key, None) is None:
            raise ExportError(f"{model_dir}: text_config.{key} is not set; BLIP's generate needs it")
    heads = text.num_attention_heads
    preprocessing = image_preprocessing(model_dir)
    return LoadedBlip(model=model, tokenizer=tokenizer, text=text, layers=text.num_hidden_layers, heads=heads,
                      head_dim=text.hidden_size // heads,
                      vocab=model.text_decoder.get_output_embeddings().weight.shape[0],
                      max_positions=text.max_position_embeddings, preprocessing=preprocessing,
                      image=(preprocessing["size"]["height"], preprocessing["size"]["width"]))


class BlipCaptioningSpec(FamilySpec):
    name = "blip-captioning"
    task = "image-to-text"
    model_types = ("blip",)

    def matches(self, config: dict) -> bool:
        """BLIP checkpoints share ``model_type`` across tasks: only the captioning head is this family."""
        archs = config.get("architectures") or ["BlipForConditionalGeneration"]
        return config.get("model_type") in self.model_types and "BlipForConditionalGeneration" in archs

    def load(self, model_dir: Path) -> LoadedFamily:
        blip = load_blip(model_dir, "BlipForConditionalGeneration")
        model, text, layers = blip.model, blip.text, blip.layers
        encoder = VisionEncoderWithCross(model.vision_model, None, model.text_decoder, text.model_type, layers)
        with torch.no_grad():
            encoder_length = encoder(pixel_values=torch.zeros(1, 3, *blip.image))["cross_values_0"].shape[2]
        components = _components(encoder, CrossDecoderWithCache(model.text_decoder, layers, text.encoder_hidden_size),
                                 layers=layers, heads=blip.heads, head_dim=blip.head_dim, vocab=blip.vocab,
                                 max_positions=blip.max_positions, image=blip.image, encoder_length=encoder_length,
                                 what="BLIP")
        return LoadedFamily(
            family=self.name, task=self.task, components=components,
            preprocessing={"image": blip.preprocessing, "text": {"tokenizer_file": TOKENIZER_FILE}},
            postprocessing={},
            generation={"config": blip.generation_config(),
                        "cache": _cache_contract(layers, blip.heads, blip.head_dim, blip.max_positions),
                        "prompt": {"start_token_id": int(text.bos_token_id), "text_prompt": dict(BLIP_TEXT_PROMPT)}},
            files={TOKENIZER_FILE: tokenizer_json(blip.tokenizer, model_dir)})

    def write_tiny(self, out_dir: Path) -> Path:
        from mmedge.exporter.families.captioning_tiny import write_tiny_captioner

        return write_tiny_captioner(out_dir, "blip")
