"""Tiny random-weight image captioners in Hugging Face format, written fully offline.

Why: the captioning families must be checked against transformers' own ``generate`` on real directories
(config, safetensors weights, ``generation_config.json``, tokenizer files, ``preprocessor_config.json``)
without a model hub. Two layouts, each mirroring a public checkpoint where it matters to the contract:

- ``vit-gpt2`` like ``nlpconnect/vit-gpt2-image-captioning``: ``VisionEncoderDecoderModel`` with a ViT encoder
  and a GPT-2 decoder with cross-attention; decoder start = bos = eos = pad = ``<|endoftext|>``; a
  ``ViTImageProcessor`` (bilinear resize to a fixed size, mean/std 0.5, no crop). The encoder is wider than the
  decoder, so the ``enc_to_dec_proj`` projection is exercised too.
- ``blip`` like ``Salesforce/blip-image-captioning-base``: ``BlipForConditionalGeneration``; a BERT WordPiece
  tokenizer (lower case, ``[CLS] ... [SEP]``) with ``[DEC]`` added as bos and ``[ENC]`` as an extra special
  token; a ``BlipImageProcessor`` (bicubic resize, CLIP mean/std, no crop).

Only the widths are tiny (hidden 32/48, 2 layers, 32x32 images), so export takes seconds. Weights are
initialised with a larger spread than HF's default (``initializer_range``): random logits are then peaked
enough that greedy and beam choices are not decided by float rounding between engines.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mmedge.errors import UsageError
from mmedge.exporter.families.tiny_corpus import CORPUS

VARIANTS = ("vit-gpt2", "blip")
TINY = {"image_size": 32, "patch_size": 8, "encoder_hidden": 48, "decoder_hidden": 32, "layers": 2, "heads": 4,
        "max_positions": 64, "initializer_range": 0.2}
GPT2_EOS = "<|endoftext|>"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BERT_VOCAB_SIZE = 400


def _gpt2_tokenizer():
    """A byte-level BPE (GPT-2's scheme) trained on the embedded corpus; ``<|endoftext|>`` is every special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=[GPT2_EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS.strip().splitlines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=GPT2_EOS, eos_token=GPT2_EOS,
                                   pad_token=GPT2_EOS, unk_token=None)


def _bert_tokenizer():
    """A BERT uncased WordPiece vocabulary from the corpus, then built by transformers from ``vocab.txt`` exactly as
    ``BertTokenizerFast`` builds bert-base-uncased's; ``[DEC]`` (bos) and ``[ENC]`` are added as BLIP does.

    The vocabulary is made here rather than by ``BertWordPieceTokenizer.train``, whose ties come out in a
    different order in every process (356-358 tokens, other ids), so a tiny model and a package exported from it
    in another process would disagree: specials, every character alone and as a ``##`` continuation, then the
    corpus words by frequency (ties alphabetical) up to ``BERT_VOCAB_SIZE``."""
    from collections import Counter

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertTokenizerFast

    normalizer, splitter = BertNormalizer(lowercase=True), BertPreTokenizer()
    words = Counter(w for line in CORPUS.strip().splitlines()
                    for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({c for w in words for c in w})
    vocab = [*BERT_SPECIALS, *chars, *(f"##{c}" for c in chars)]
    known = set(vocab)
    ranked = sorted(words, key=lambda w: (-words[w], w))
    vocab += [w for w in ranked if w not in known][:max(0, BERT_VOCAB_SIZE - len(vocab))]
    with tempfile.TemporaryDirectory(prefix="mmedge-tinybert-") as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
        tokenizer = BertTokenizerFast(str(vocab_file), do_lower_case=True, model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def _write_vit_gpt2(out: Path, seed: int) -> Path:
    import torch
    from transformers import (GenerationConfig, GPT2Config, ViTConfig, ViTImageProcessor,
                              VisionEncoderDecoderConfig, VisionEncoderDecoderModel)

    t = TINY
    tokenizer = _gpt2_tokenizer()
    eos = tokenizer.convert_tokens_to_ids(GPT2_EOS)
    encoder = ViTConfig(hidden_size=t["encoder_hidden"], num_hidden_layers=t["layers"],
                        num_attention_heads=t["heads"], intermediate_size=2 * t["encoder_hidden"],
                        image_size=t["image_size"], patch_size=t["patch_size"],
                        initializer_range=t["initializer_range"])
    decoder = GPT2Config(vocab_size=len(tokenizer), n_embd=t["decoder_hidden"], n_layer=t["layers"],
                         n_head=t["heads"], n_positions=t["max_positions"], bos_token_id=eos, eos_token_id=eos,
                         add_cross_attention=True, is_decoder=True, initializer_range=t["initializer_range"])
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = config.bos_token_id = eos
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionEncoderDecoderModel(config=config).eval()
    model.generation_config = GenerationConfig(decoder_start_token_id=eos, bos_token_id=eos, eos_token_id=eos,
                                               pad_token_id=eos, max_length=16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    ViTImageProcessor(size={"height": t["image_size"], "width": t["image_size"]}).save_pretrained(out)
    return out


def _write_blip(out: Path, seed: int, head: str = "BlipForConditionalGeneration", sizes: dict | None = None,
                **extra_config) -> Path:
    """A tiny BLIP with the ``head`` class of transformers (captioning; ``BlipForQuestionAnswering`` for the
    blip-vqa family, which shares this layout); ``sizes`` override ``TINY``, ``extra_config`` lands in
    config.json (mmedge_* limits)."""
    import torch
    import transformers
    from transformers import BlipConfig, BlipImageProcessor, BlipProcessor

    t = {**TINY, **(sizes or {})}
    tokenizer = _bert_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=t["decoder_hidden"], encoder_hidden_size=t["encoder_hidden"],
                intermediate_size=2 * t["decoder_hidden"], num_hidden_layers=t["layers"],
                num_attention_heads=t["heads"], max_position_embeddings=t["max_positions"],
                bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                # As in Salesforce/blip-*: eos_token_id is not [SEP]; BLIP's generate stops on sep_token_id.
                sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.cls_token_id,
                initializer_range=t["initializer_range"])
    vision = dict(hidden_size=t["encoder_hidden"], intermediate_size=2 * t["encoder_hidden"],
                  num_hidden_layers=t["layers"], num_attention_heads=t["heads"], image_size=t["image_size"],
                  patch_size=t["patch_size"], initializer_range=t["initializer_range"])
    config = BlipConfig(text_config=text, vision_config=vision, initializer_range=t["initializer_range"],
                        **extra_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, head)(config).eval()
    model.save_pretrained(out)
    image_processor = BlipImageProcessor(size={"height": t["image_size"], "width": t["image_size"]})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def write_tiny_captioner(out_dir: str | Path, variant: str = "vit-gpt2", seed: int = 0) -> Path:
    """Write the tiny captioner ``variant`` (``vit-gpt2`` or ``blip``) to ``out_dir``; return the path.

    Loads with ``VisionEncoderDecoderModel`` + ``ViTImageProcessor`` + ``AutoTokenizer`` (vit-gpt2) or
    ``BlipForConditionalGeneration`` + ``BlipProcessor`` (blip). Weights are deterministic for a ``seed``.
    """
    if variant not in VARIANTS:
        raise UsageError(f"unknown tiny captioner '{variant}'; choose one of {', '.join(VARIANTS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write_vit_gpt2(out, seed) if variant == "vit-gpt2" else _write_blip(out, seed)
