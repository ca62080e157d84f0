"""GGUF file (llama.cpp) → Hugging Face causal-LM folder (config, float32 safetensors, fast tokenizer, chat
template, generation config).

Why: small LLMs often reach users only as GGUF (quantized, one file), while mmedge exports from transformers
modules. transformers already reads GGUF (with the ``gguf`` package): it maps the llama.cpp tensor names,
undoes llama.cpp's q/k permutation, dequantizes every tensor to float and rebuilds the tokenizer from the
vocabulary and merges, so this importer uses ``from_pretrained(folder, gguf_file=...)`` and adds only checks
with typed errors and an atomic write. The exported model is the *dequantized* one: its outputs are compared
with transformers on the same dequantized weights, not with llama.cpp's quantized kernels.

Checks before the (slow) load, each naming the fix: the ``gguf``/``accelerate`` packages are installed, the file
starts with the GGUF magic, every tensor lies inside the file (a truncated download or a missing part is caught
here), and the architecture is one transformers reads *and* mmedge's causal-LM family exports.
"""

from __future__ import annotations

from pathlib import Path

from mmedge.errors import ExportError
from mmedge.exporter.importers.atomic import atomic_folder

GGUF_MAGIC = b"GGUF"
GGUF_REQUIREMENT = "gguf==0.19.0"  # the version in constraints.txt (transformers needs >= 0.10)


def is_gguf(path: str | Path) -> bool:
    """True for a file that starts with the GGUF magic (reads 4 bytes; for ``mmedge export``'s source detection)."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) == GGUF_MAGIC


def _require_packages() -> None:
    import importlib.util

    missing = [p for p in ("gguf", "accelerate") if importlib.util.find_spec(p) is None]
    if missing:
        pins = {"gguf": GGUF_REQUIREMENT, "accelerate": "accelerate"}
        raise ExportError(f"reading GGUF needs {' and '.join(missing)}: pip install -c constraints.txt "
                          f"{' '.join(pins[m] for m in missing)} (both are in mmedge's export extra)")


def supported_architectures() -> list[str]:
    """GGUF architectures that transformers loads and mmedge's causal-LM family exports."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    from mmedge.exporter.families.causal_lm import CausalLmSpec

    return sorted(set(GGUF_SUPPORTED_ARCHITECTURES) & set(CausalLmSpec.model_types))


def check_gguf(path: str | Path) -> str:
    """Validate a GGUF file without loading its weights; returns its architecture (``general.architecture``).

    Raises ``ExportError`` for a file that is missing, not GGUF, truncated or damaged, or of an architecture
    mmedge cannot import.
    """
    path = Path(path)
    _require_packages()
    if not path.is_file():
        raise ExportError(f"{path} does not exist or is not a file; give a .gguf file")
    if not is_gguf(path):
        raise ExportError(f"{path} is not a GGUF file (no 'GGUF' magic at its start); give a llama.cpp .gguf file")
    from gguf import GGUFReader

    size = path.stat().st_size
    try:
        reader = GGUFReader(path)
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
        field = reader.get_field("general.architecture")
        architecture = field.contents() if field is not None else None
    except Exception as e:  # the reader fails on short tensor data with reshape/dtype errors
        raise ExportError(f"{path} is truncated or damaged ({size} bytes; {type(e).__name__}: {str(e)[:120]}); "
                          "re-download it, or join all of its parts in order") from None
    if end > size:
        raise ExportError(f"{path} is truncated: its tensors end at byte {end}, the file has {size}; "
                          "re-download it, or join all of its parts in order")
    supported = supported_architectures()
    if architecture not in supported:
        raise ExportError(f"{path} holds a GGUF architecture {architecture!r}; mmedge imports {', '.join(supported)} "
                          "from GGUF. Export the original Hugging Face folder instead")
    return architecture


def import_gguf(gguf_file: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Convert a GGUF causal LM into a transformers folder at ``out_dir`` (returned), weights in float32.

    Written to a temporary sibling folder and renamed at the end, so an interrupted import leaves nothing that
    looks complete. Takes about a minute for a 0.5B model (tokenizer rebuild and dequantization).
    """
    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    check_gguf(gguf_file)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{str(out_dir)!r} already exists and is not empty; remove it or pass overwrite=True")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, kwargs = gguf_file.parent, {"gguf_file": gguf_file.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs).eval()
    except (OSError, ValueError, KeyError, NotImplementedError) as e:
        raise ExportError(f"transformers cannot load {gguf_file} ({type(e).__name__}: {str(e)[:200]}); "
                          "export the original Hugging Face folder instead") from None
    if not tokenizer.is_fast:
        raise ExportError(f"transformers built no fast tokenizer from {gguf_file}; the runtime needs tokenizer.json")
    _align_special_tokens(tokenizer, model.generation_config)
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(tmp)  # config, generation_config, model.safetensors (sharded when large)
        tokenizer.save_pretrained(tmp)  # tokenizer.json + tokenizer_config (chat template from the GGUF)
    return out_dir


def _align_special_tokens(tokenizer, generation_config) -> None:
    """Name the GGUF's own eos/pad tokens in the tokenizer.

    Why: some of transformers' GGUF tokenizer converters hard-code special tokens (Qwen2: eos ``<|endoftext|>``)
    while the file states its ids (Qwen2.5-Instruct: eos ``<|im_end|>``), which the model config already follows;
    the tokenizer would then disagree with the config and the exported package would carry both.
    """
    for role in ("eos", "pad"):
        token_id = getattr(generation_config, f"{role}_token_id", None)
        if isinstance(token_id, int) and 0 <= token_id < len(tokenizer):
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
