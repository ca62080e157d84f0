"""Tiny random-weight encoder-decoder models in Hugging Face format, written offline: a T5 (relative position
bias, no position embeddings, Unigram/SentencePiece-style tokenizer with ``</s>`` appended and sentinel tokens)
and a Marian MT model (sinusoidal positions, ``decoder_start_token_id = pad``, final logits bias) — the two
position schemes the seq2seq decoder graph must get right.

Why these shapes: T5's decoder self-attention bias depends on the distance between query and key *positions*,
which the static cache layout breaks unless the graph computes it from explicit positions; a small
``relative_attention_num_buckets`` with a short ``relative_attention_max_distance`` puts the logarithmic
buckets within the few tokens a test generates. The tokenizers are trained here on the embedded corpus, with
the post-processor appending ``</s>`` as the real tokenizers do, so transformers and the slim runtime (which
reads only ``tokenizer.json``) encode identically.

Initialisation: random models at transformers' default init tend to repeat one token forever (T5 with a tied head,
Marian with tied embeddings), which would hide exactly the position bugs these models are here to catch. The
T5 is therefore a v1.1/Flan-style one (untied head, gated-GELU), the Marian has an untied head, ``init_std=0.1``
and a non-zero ``final_logits_bias``: greedy and beam outputs then change from token to token.

``mmedge_max_source_len`` / ``mmedge_max_cache_len`` in ``config.json`` ask the exporter for small static
buckets (see ``seq2seq.static_limits``) so static export stays quick and tests can exceed them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmedge.errors import UsageError
from mmedge.exporter.families.tiny_corpus import CORPUS

VARIANTS = ("t5", "marian")
#: Static contract the tiny models ask for (real models get the family defaults).
TINY_MAX_SOURCE_LEN = 48
TINY_MAX_CACHE_LEN = 32
T5_EXTRA_IDS = 4


def _unigram(specials: list[str], unk: str, vocab_size: int):
    """A SentencePiece-like Unigram tokenizer (metaspace ``▁`` word boundaries), trained on the corpus, that
    appends ``</s>`` to every sequence as T5's and Marian's tokenizers do."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=unk,
                                      show_progress=False)
    tok.train_from_iterator(CORPUS.strip().splitlines(), trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    return tok


def _t5_tokenizer():
    from transformers import T5TokenizerFast

    # T5's ids: pad 0, eos 1, unk 2; the sentinels <extra_id_N> are added after the trained pieces.
    tok = _unigram(["<pad>", "</s>", "<unk>"], "<unk>", 300)
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=T5_EXTRA_IDS)


def _marian_tokenizer():
    from transformers import PreTrainedTokenizerFast

    # Marian's ids: eos 0, unk 1; pad (also the decoder start) is another special token.
    tok = _unigram(["</s>", "<unk>", "<pad>"], "<unk>", 300)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                   model_input_names=["input_ids", "attention_mask"])


def write_tiny_seq2seq(out_dir: str | Path, variant: str = "t5", seed: int = 0) -> Path:
    """Write the tiny ``variant`` ("t5" or "marian") with its tokenizer and generation config to ``out_dir``."""
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, T5Config, T5ForConditionalGeneration

    if variant not in VARIANTS:
        raise UsageError(f"unknown tiny seq2seq model '{variant}'; choose one of {', '.join(VARIANTS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limits = {"mmedge_max_source_len": TINY_MAX_SOURCE_LEN, "mmedge_max_cache_len": TINY_MAX_CACHE_LEN}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if variant == "t5":
            tokenizer = _t5_tokenizer()
            pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
            config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                              num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                              relative_attention_max_distance=16, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                              pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad,
                              tie_word_embeddings=False, **limits)
            model = T5ForConditionalGeneration(config)
            start = pad
        else:
            tokenizer = _marian_tokenizer()
            pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
            config = MarianConfig(vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=32,
                                  encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                  decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                  max_position_embeddings=64, pad_token_id=pad, eos_token_id=eos,
                                  decoder_start_token_id=pad, forced_eos_token_id=None, scale_embedding=True,
                                  dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, init_std=0.1,
                                  tie_word_embeddings=False, **limits)
            model = MarianMTModel(config)
            # A non-zero final logits bias (zeros after init): the decoder graph must keep it.
            model.final_logits_bias.normal_(0.0, 0.1)
            start = pad
    model.generation_config = GenerationConfig(decoder_start_token_id=start, eos_token_id=eos, pad_token_id=pad,
                                               max_new_tokens=20, do_sample=False)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
