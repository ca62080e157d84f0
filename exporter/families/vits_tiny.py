"""A tiny random-weight VITS (MMS-TTS layout) in Hugging Face format, written fully offline.

Why: the VITS export, its numpy length regulation and the static frame contract must be checked against
transformers' ``VitsModel`` on a real ``VitsModel`` + ``VitsTokenizer`` directory without a model hub. The
layout keeps what the contract depends on from ``facebook/mms-tts-eng``: a character vocabulary with blanks
interspersed (``add_blank``), lower-casing normalisation that drops characters outside the vocabulary, the
stochastic duration predictor (its rational-quadratic spline flows), the residual coupling flow and a HiFi-GAN
decoder with transposed-conv upsampling. It differs where tests gain from it: two speakers (speaker conditioning
in every part, as multi-speaker VITS checkpoints have) and tiny widths, so export takes seconds.

``mmedge_max_text_len`` / ``mmedge_max_frames`` in ``config.json`` ask the exporter for small static limits (see
``vits.static_limits``).
"""

from __future__ import annotations

import json
from pathlib import Path

#: Character vocabulary (id 0 is the blank that ``add_blank`` intersperses, as in MMS-TTS).
VOCAB = ("<pad>", " ", "'", "-") + tuple("abcdefghijklmnopqrstuvwxyz") + ("<unk>",)
TINY_MAX_TEXT_LEN = 64   # token ids (with blanks: 31 characters)
TINY_MAX_FRAMES = 320
#: Subtracted from the log durations (the duration flows' last affine step), as a trained model's are shorter.
DURATION_SHIFT = 2.0

TINY = {
    "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "window_size": 4, "ffn_dim": 32,
    "ffn_kernel_size": 3, "flow_size": 8, "spectrogram_bins": 9, "upsample_initial_channel": 16,
    "upsample_rates": [4, 4], "upsample_kernel_sizes": [8, 8], "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3]], "duration_predictor_filter_channels": 16,
    "duration_predictor_num_flows": 2, "duration_predictor_flow_bins": 10, "prior_encoder_num_flows": 2,
    "prior_encoder_num_wavenet_layers": 2, "posterior_encoder_num_wavenet_layers": 2, "wavenet_kernel_size": 3,
    "num_speakers": 2, "speaker_embedding_size": 8, "sampling_rate": 16000,
}


def write_tiny_vits(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``VitsModel`` and its ``VitsTokenizer`` to ``out_dir``; return the path."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.json"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(VOCAB)}, ensure_ascii=False), encoding="utf-8")
    tokenizer = VitsTokenizer(str(vocab_file), language="eng", add_blank=True, normalize=True, phonemize=False)
    tokenizer.save_pretrained(out)
    config = VitsConfig(vocab_size=len(VOCAB), use_stochastic_duration_prediction=True, **TINY,
                        mmedge_max_text_len=TINY_MAX_TEXT_LEN, mmedge_max_frames=TINY_MAX_FRAMES)
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = VitsModel(config).eval()
        with torch.no_grad():  # ~3 frames per token (random weights give ~12): a sentence fits the static limit
            model.duration_predictor.flows[0].translate[0] += DURATION_SHIFT
    model.save_pretrained(out, safe_serialization=True)
    return out
