"""A tiny random-weight SpeechT5 text-to-speech model with its HiFi-GAN vocoder, written fully offline.

Why: the SpeechT5 export (text encoder, autoregressive mel decoder with self- and cross-attention caches, postnet,
vocoder) and the numpy generation loop must be checked against transformers' ``generate_speech(...,
vocoder=...)`` without a model hub. The layout is ``microsoft/speecht5_tts`` + ``microsoft/speecht5_hifigan`` in
small: a character SentencePiece vocabulary trained here on ``tiny_corpus`` (ids as the real ``spm_char.model``:
``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3), two mel frames per decoder step (``reduction_factor``), the
always-on prenet dropout, a speaker-embedding input, and a vocoder that normalises its input (random mean and
scale here) saved in ``vocoder/`` (where the family looks for it).

The stop head's bias is pushed down (``STOP_BIAS``): random weights would otherwise cross the 0.5 stop threshold
on the first step; this way generation ends at ``maxlenratio`` (or at a test's own threshold), which is
deterministic on every engine. ``mmedge_max_text_len`` / ``mmedge_max_steps`` ask for small static limits.
"""

from __future__ import annotations

from pathlib import Path

TINY_MAX_TEXT_LEN = 48  # tokens, "</s>" included
TINY_MAX_STEPS = 320    # decoder steps (x reduction_factor mel frames)
STOP_BIAS = -4.0

TINY = {"hidden_size": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
        "decoder_layers": 2, "decoder_attention_heads": 2, "decoder_ffn_dim": 64, "num_mel_bins": 8,
        "reduction_factor": 2, "speech_decoder_prenet_layers": 2, "speech_decoder_prenet_units": 16,
        "speech_decoder_prenet_dropout": 0.5, "speaker_embedding_dim": 16, "speech_decoder_postnet_layers": 3,
        "speech_decoder_postnet_units": 16, "speech_decoder_postnet_kernel": 5, "max_speech_positions": 700,
        "max_text_positions": 64, "encoder_max_relative_position": 16}
VOCODER = {"model_in_dim": 8, "sampling_rate": 16000, "upsample_initial_channel": 16, "upsample_rates": [4, 4],
           "upsample_kernel_sizes": [8, 8], "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
           "normalize_before": True,
           "initializer_range": 0.15}  # transformers' 0.01 makes a tiny vocoder's output ~1e-5: speech-sized instead


def _spm_model(out: Path) -> Path:
    """A character SentencePiece model of the tiny corpus, with the real SpeechT5 vocabulary's special ids."""
    import io

    import sentencepiece as spm

    from mmedge.exporter.families.tiny_corpus import CORPUS

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS.strip().splitlines()), model_writer=model,
                                   model_type="char", vocab_size=64, character_coverage=1.0, bos_id=0, pad_id=1,
                                   eos_id=2, unk_id=3, minloglevel=2)
    path = out / "spm_char.model"
    path.write_bytes(model.getvalue())
    return path


def write_tiny_speecht5(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``SpeechT5ForTextToSpeech`` (+ processor, + ``vocoder/``) to ``out_dir``."""
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5FeatureExtractor,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        SpeechT5Processor,
        SpeechT5Tokenizer,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = SpeechT5Tokenizer(str(_spm_model(out)))
    feature_extractor = SpeechT5FeatureExtractor(num_mel_bins=TINY["num_mel_bins"])
    SpeechT5Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    config = SpeechT5Config(vocab_size=len(tokenizer), pad_token_id=1, bos_token_id=0, eos_token_id=2,
                            decoder_start_token_id=2, mmedge_max_text_len=TINY_MAX_TEXT_LEN,
                            mmedge_max_steps=TINY_MAX_STEPS, **TINY)
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = SpeechT5ForTextToSpeech(config).eval()
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**VOCODER)).eval()
        with torch.no_grad():
            model.speech_decoder_postnet.prob_out.bias.fill_(STOP_BIAS)
            vocoder.mean.copy_(torch.randn(VOCODER["model_in_dim"]) * 0.5)
            vocoder.scale.copy_(torch.rand(VOCODER["model_in_dim"]) + 0.5)
    model.save_pretrained(out, safe_serialization=True)
    vocoder.save_pretrained(out / "vocoder", safe_serialization=True)
    return out
