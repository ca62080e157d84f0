"""A tiny random-weight CLIP in Hugging Face format, written fully offline.

Why: tests and examples need a real ``CLIPModel`` + ``CLIPProcessor`` directory (config, safetensors weights,
slow and fast tokenizer files, ``preprocessor_config.json``) without touching a model hub. The weights are
random (seeded), but every file has the same layout and conventions as ``openai/clip-vit-base-patch32``, so the
exporter, the package writer and the slim runtime pre-processing can be checked against transformers on it.

The tokenizer is a CLIP-style byte-level BPE trained here on a small embedded corpus (words cut by the
``tokenizers`` library's CLIP normaliser and pre-tokeniser; merges learnt deterministically, see
``_train_merges``). The vocabulary is laid out like CLIP's (256 byte symbols, the same 256 with ``</w>``, one
entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>``), so no byte sequence is ever unknown; the
fast tokenizer is converted from the slow one by transformers itself, and the two are checked to agree.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from mmedge.errors import ExportError
from mmedge.exporter.families.tiny_corpus import CORPUS as _CORPUS

#: CLIP's pre-tokenisation pattern (as in transformers' ``CLIPConverter``).
CLIP_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

#: Tiny sizes: big enough to exercise every code path (resize + crop, 2 layers, multi-head), small enough that
#: writing and exporting take well under a second.
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "projection_dim": 32,
    "max_position_embeddings": 77,
    "image_size": 32,
    "patch_size": 8,
    "target_merges": 420,
}



def _corpus_words() -> Counter[str]:
    """Normalise and pre-tokenise the corpus exactly as CLIP's fast tokenizer does; count the words."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    words: Counter[str] = Counter()
    for line in _CORPUS.strip().splitlines():
        words.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    return words


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def _train_merges(target_merges: int) -> list[tuple[str, str]]:
    """Learn CLIP-style BPE merges (``</w>`` on each word's last symbol) on the embedded corpus.

    Words come from the ``tokenizers`` library's own CLIP normaliser and byte-level pre-tokeniser; the merge loop
    is ours because ``tokenizers.trainers.BpeTrainer`` breaks count ties in hash-map order, so two runs gave
    different vocabularies. Here ties go to the lexicographically smallest pair: same corpus, same merges.
    """
    seqs = {tuple(w[:-1]) + (w[-1] + "</w>",): n for w, n in _corpus_words().items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < target_merges:
        stats: Counter[tuple[str, str]] = Counter()
        for symbols, n in seqs.items():
            for pair in zip(symbols, symbols[1:]):
                stats[pair] += n
        if not stats:
            break
        best = min(stats, key=lambda p: (-stats[p], p))
        merges.append(best)
        seqs = {_merge_pair(symbols, best): n for symbols, n in seqs.items()}
    return merges


def _clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Lay the vocabulary out as openai/clip does: bytes, bytes + ``</w>``, merges, then the two specials."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    seen = set(tokens)
    for a, b in merges:
        merged = a + b
        if merged not in seen:
            tokens.append(merged)
            seen.add(merged)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {t: i for i, t in enumerate(tokens)}


def _write_tokenizer_files(work: Path, target_merges: int) -> tuple[Path, Path]:
    merges = _train_merges(target_merges)
    vocab = _clip_vocab(merges)
    vocab_file, merges_file = work / "vocab.json", work / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # The slow CLIPTokenizer skips the first line of merges.txt (the "#version" header).
    merges_file.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


_CHECK_SENTENCES = [
    "a photo of a cat",
    "An ASTRONAUT, riding   a horse!!",
    "café 42 — ok? 🚀",
    "",
]


def _check_slow_fast_agree(slow: object, fast: object) -> None:
    for text in _CHECK_SENTENCES:
        a, b = slow(text)["input_ids"], fast(text)["input_ids"]  # type: ignore[operator]
        if a != b:
            raise ExportError(f"tiny CLIP tokenizer: slow and fast disagree on {text!r}: {a} vs {b}")


def write_tiny_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight CLIP (model, processor, slow + fast tokenizer) to ``out_dir``; return the path.

    Deterministic for a given ``seed`` (weights) — the tokenizer depends only on the embedded corpus.
    Loads with ``CLIPModel``, ``CLIPProcessor``, ``CLIPTokenizer`` and ``CLIPTokenizerFast.from_pretrained``.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
        CLIPTokenizerFast,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = TINY
    with tempfile.TemporaryDirectory(prefix="mmedge-tinyclip-") as tmp:
        vocab_file, merges_file = _write_tokenizer_files(Path(tmp), t["target_merges"])
        common = dict(model_max_length=t["max_position_embeddings"])
        slow = CLIPTokenizer(str(vocab_file), str(merges_file), **common)
        # Built from the slow files through transformers' own converter: tokenizer.json is exactly what HF makes.
        fast = CLIPTokenizerFast(str(vocab_file), str(merges_file), from_slow=True, **common)
    _check_slow_fast_agree(slow, fast)
    slow.save_pretrained(out)

    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": t["image_size"]},
        resample=3,  # PIL bicubic, as openai/clip
        do_center_crop=True,
        crop_size={"height": t["image_size"], "width": t["image_size"]},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True,
    )
    # Saves tokenizer.json (+ vocab/merges/config) and preprocessor_config.json.
    CLIPProcessor(image_processor=image_processor, tokenizer=fast).save_pretrained(out)

    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(fast),
            hidden_size=t["hidden_size"],
            intermediate_size=t["intermediate_size"],
            num_hidden_layers=t["num_hidden_layers"],
            num_attention_heads=t["num_attention_heads"],
            max_position_embeddings=t["max_position_embeddings"],
            projection_dim=t["projection_dim"],
            bos_token_id=fast.bos_token_id,
            eos_token_id=fast.eos_token_id,  # != 2, so CLIP pools at the first eos position
            pad_token_id=fast.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=t["hidden_size"],
            intermediate_size=t["intermediate_size"],
            num_hidden_layers=t["num_hidden_layers"],
            num_attention_heads=t["num_attention_heads"],
            image_size=t["image_size"],
            patch_size=t["patch_size"],
            projection_dim=t["projection_dim"],
        ),
        projection_dim=t["projection_dim"],
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    return out
