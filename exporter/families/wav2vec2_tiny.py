"""A tiny random-weight wav2vec2 CTC model in Hugging Face format, written fully offline.

Why: the exporter, the package writer and the slim runtime's numpy pre/post-processing must be checked against
transformers on a real ``Wav2Vec2ForCTC`` + ``Wav2Vec2Processor`` directory without touching a model hub. The
layout mirrors ``facebook/wav2vec2-base-960h`` where it matters to the contract: the standard 7-layer conv
feature encoder (kernel 10,3,3,3,3,2,2 / stride 5,2,2,2,2,2,2: 320 samples per frame, 400-sample receptive
field, so frame arithmetic is realistic), group-norm feature extractor (``return_attention_mask=False``),
``do_normalize=True`` at 16 kHz, a character vocabulary with ``<pad>`` as the CTC blank (id 0) and ``|`` as the
word delimiter. Only the widths are tiny (hidden 32, 2 transformer layers), so export takes seconds.

``mmedge_static_window_s`` in ``config.json`` asks the exporter for a short static window (see
``wav2vec2_ctc.window_samples``): the LibriVox test clips (3–7 s) then span several windows, which exercises the
window loop of the runtime pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Character vocabulary, ids in this order (as facebook/wav2vec2-base-960h, but lower case).
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
WORD_DELIMITER = "|"
CHARACTERS = tuple("abcdefghijklmnopqrstuvwxyz") + ("'",)
VOCAB = SPECIALS + (WORD_DELIMITER,) + CHARACTERS

#: Added to the blank's output bias so that, like a trained CTC model, most frames are blank and characters come
#: in short runs between them (random weights alone give ~15% blanks): decoding paths are then exercised as on
#: real transcripts.
BLANK_BIAS = 0.15

#: Static window the tiny model asks for (seconds); real models get the family default (10 s).
TINY_STATIC_WINDOW_S = 2.0

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "conv_dim": (32,) * 7,
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}


def write_tiny_wav2vec2(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``Wav2Vec2ForCTC`` with its processor to ``out_dir``; return the path.

    Deterministic for a given ``seed``. Loads with ``Wav2Vec2ForCTC``/``AutoModelForCTC`` and
    ``Wav2Vec2Processor.from_pretrained``.
    """
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.json"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(VOCAB)}, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>", word_delimiter_token=WORD_DELIMITER)
    feature_extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                                 do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)

    t = TINY
    config = Wav2Vec2Config(
        vocab_size=len(VOCAB), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"], num_attention_heads=t["num_attention_heads"],
        conv_dim=t["conv_dim"], conv_kernel=t["conv_kernel"], conv_stride=t["conv_stride"],
        num_conv_pos_embeddings=t["num_conv_pos_embeddings"],
        num_conv_pos_embedding_groups=t["num_conv_pos_embedding_groups"],
        feat_extract_norm="group", do_stable_layer_norm=False, ctc_loss_reduction="mean",
        mmedge_static_window_s=TINY_STATIC_WINDOW_S)
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = Wav2Vec2ForCTC(config).eval()
        with torch.no_grad():  # favour the blank, as a trained CTC head does: ~60% blank frames on speech
            model.lm_head.bias[tokenizer.pad_token_id] += BLANK_BIAS
    model.save_pretrained(out, safe_serialization=True)
    return out
