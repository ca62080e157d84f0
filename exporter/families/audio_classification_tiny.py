"""A tiny random-weight wav2vec2 speech-emotion classifier in Hugging Face format, written fully offline.

Why: no real speech-emotion weights install from a registry here, and the exporter, the package and the slim
runtime must still be checked against transformers on a real ``Wav2Vec2ForSequenceClassification`` +
``Wav2Vec2FeatureExtractor`` directory. The layout follows the common emotion checkpoints where it matters to the
contract: the standard 7-layer conv feature encoder (``wav2vec2_tiny.TINY``), layer-norm features with an
attention mask from the feature extractor (as wav2vec2-large / HuBERT-large emotion models), a weighted sum of
the hidden layers and a projector before the head (as SUPERB's emotion recognition heads), and the four
IEMOCAP classes with SUPERB's label names. Only the widths are tiny; the predictions are random.
"""

from __future__ import annotations

from pathlib import Path

from mmedge.exporter.families.wav2vec2_tiny import TINY, TINY_STATIC_WINDOW_S

#: SUPERB emotion recognition (IEMOCAP, 4 classes): neutral, happy, angry, sad.
LABELS = ("neu", "hap", "ang", "sad")
#: Weight scale of the projector and classifier: the default init (0.02) gives logits ~1e-3, against which any
#: parity tolerance passes trivially; at 0.5 they are O(1) and the probabilities are far from uniform.
HEAD_STD = 0.5


def write_tiny_speech_emotion(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``Wav2Vec2ForSequenceClassification`` and its feature extractor to ``out_dir``.

    Deterministic for a given ``seed``; loads with ``AutoModelForAudioClassification`` and
    ``AutoFeatureExtractor.from_pretrained``.
    """
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(out)
    t = TINY
    config = Wav2Vec2Config(
        hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"], num_attention_heads=t["num_attention_heads"],
        conv_dim=t["conv_dim"], conv_kernel=t["conv_kernel"], conv_stride=t["conv_stride"],
        num_conv_pos_embeddings=t["num_conv_pos_embeddings"],
        num_conv_pos_embedding_groups=t["num_conv_pos_embedding_groups"],
        feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, use_weighted_layer_sum=True,
        classifier_proj_size=16, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)}, mmedge_static_window_s=TINY_STATIC_WINDOW_S)
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = Wav2Vec2ForSequenceClassification(config).eval()
        for layer in (model.projector, model.classifier):  # logits of O(1), as a trained head gives
            torch.nn.init.normal_(layer.weight, std=HEAD_STD)
    model.save_pretrained(out, safe_serialization=True)
    return out
