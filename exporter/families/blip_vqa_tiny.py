"""A tiny random-weight BLIP VQA model (``BlipForQuestionAnswering``) in Hugging Face format, written offline.

Why: the ``blip-vqa`` family is checked against transformers' own ``generate`` on a real directory (config with
``architectures``, safetensors weights, tokenizer files, ``preprocessor_config.json``) without a model hub. The
layout is the tiny BLIP captioner's (``captioning_tiny``: BERT WordPiece with ``[DEC]`` as bos, eos = ``[SEP]``
for generation, a ``BlipImageProcessor``), with the question-answering head, like ``Salesforce/blip-vqa-base``.

``mmedge_max_question_len`` (16) in config.json sets the static question length: the test questions of 5-14
tokens exercise the padding, a longer one the ``StaticShapeError``.
"""

from __future__ import annotations

from pathlib import Path

from mmedge.exporter.families.captioning_tiny import TINY, _write_blip

TINY_MAX_QUESTION_LEN = 16


def write_tiny_blip_vqa(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny BLIP VQA model to ``out_dir`` (deterministic for a ``seed``); return the path. Loads with
    ``BlipForQuestionAnswering`` + ``BlipProcessor``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # One width for vision and text: the answer decoder cross-attends to the question encoder's states through
    # the same ``encoder_hidden_size`` that the question encoder uses for the image (as in blip-vqa-base: 768).
    return _write_blip(out, seed, head="BlipForQuestionAnswering", sizes={"encoder_hidden": TINY["decoder_hidden"]},
                       mmedge_max_question_len=TINY_MAX_QUESTION_LEN)
