"""What a family spec declares: its components, how to build them from the loaded model, their I/O
contracts with named dynamic dimensions, sample inputs at several shapes, tolerances, and the
pre/post-processing parameters the runtime pipeline needs. Converters and parity checks are generic
and only read these declarations (the optimum-onnx model-config idea, kept small)."""

from __future__ import annotations

import inspect
import keyword
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mmedge.errors import ExportError


@dataclass(frozen=True)
class TensorDecl:
    """A tensor of a component: ``dims`` are ints (fixed by the model) or names of dynamic dimensions."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else sizes[d] for d in self.dims)


@dataclass
class ComponentSpec:
    """One exported component. ``module`` has a forward with *named* parameters (dynamo/litert-torch need
    them) that returns a dict of the declared outputs. ``sample(sizes, seed)`` builds matching inputs.
    Dynamic graphs are checked at ``export_sizes`` and ``second_sizes``; static variants have one entry
    point per ``static_signatures`` item (a decoder: ``decode`` plus one ``prefill_N`` per bucket)."""

    name: str
    description: str
    module: torch.nn.Module
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    sample: Callable[[dict[str, int], int], dict[str, torch.Tensor]]
    export_sizes: dict[str, int]
    second_sizes: dict[str, int]
    static_signatures: dict[str, dict[str, int]]
    atol: float = 1e-4
    more_sizes: tuple[dict[str, int], ...] = ()  # further dynamic shapes to check (e.g. an empty past)
    needs_dynamo: bool = False            # the TorchScript exporter cannot trace it (transformers decoders)
    derived_dims: tuple[str, ...] = ()    # dynamic dims torch.export derives from others (past + sequence)

    def __post_init__(self) -> None:
        params = inspect.signature(self.module.forward).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
            self.module = named_inputs(self.module, [t.name for t in self.inputs])


def named_inputs(module: torch.nn.Module, names: list[str]) -> torch.nn.Module:
    """``module`` (whose forward takes a variable number of inputs, e.g. per-layer cross-attention keys as
    ``*cross``) behind a forward with exactly ``names`` as parameters. The exporters bind inputs by parameter
    name: torch.export's dynamic shapes, litert-torch's signature input names (``sample_args`` would name them
    ``args_0``...), the parity check's call. Python can only make a function with a given parameter list by
    compiling it, so the forward is generated from the (checked) names."""
    bad = [n for n in names if not n.isidentifier() or keyword.iskeyword(n)]
    if bad:
        raise ExportError(f"input names {bad} are not Python identifiers; rename them in the family spec")
    params = ", ".join(names)
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {params}):\n    return self.inner({params})\n", namespace)  # noqa: S102
    wrapper = type(f"Named{type(module).__name__}", (torch.nn.Module,), {"forward": namespace["forward"]})()
    wrapper.inner = module
    return wrapper.train(module.training)


def right_padded_ids(vocab: int) -> Callable[[dict[str, int], int], dict[str, torch.Tensor]]:
    """An encoder ``sample``: random ``input_ids`` [batch, encoder_sequence] below ``vocab`` with an attention mask
    whose first row is right-padded by a third, as a static length bucket pads a short text."""
    def sample(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        batch, length = sizes["batch"], sizes["encoder_sequence"]
        mask = torch.ones(batch, length, dtype=torch.int64)
        mask[0, max(1, length - length // 3):] = 0
        return {"input_ids": torch.randint(0, vocab, (batch, length), generator=g), "attention_mask": mask}
    return sample


@dataclass
class LoadedFamily:
    """A family spec applied to one model: components plus everything the runtime reads from the manifest."""

    family: str
    task: str
    components: list[ComponentSpec]
    preprocessing: dict[str, Any]
    postprocessing: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)  # package-relative name -> content (tokenizer...)
    generation: dict[str, Any] = field(default_factory=dict)


class FamilySpec:
    """Base of every family spec: detection from a HF config, loading, and a tiny offline model."""

    name: str = ""
    task: str = ""
    model_types: tuple[str, ...] = ()

    def matches(self, config: dict) -> bool:
        return config.get("model_type") in self.model_types

    def load(self, model_dir: Path) -> LoadedFamily:
        raise NotImplementedError

    def write_tiny(self, out_dir: Path) -> Path:
        raise NotImplementedError


def tokenizer_json(tokenizer: Any, model_dir: Path) -> bytes:
    """The fast tokenizer's ``tokenizer.json``, which is all the slim runtime reads (``tokenizers``, no
    transformers); a model with only a slow tokenizer is an ``ExportError``."""
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{model_dir} has no fast tokenizer (tokenizer.json); the slim runtime needs one")
    return tokenizer.backend_tokenizer.to_str().encode("utf-8")


def model_generation_config(model: torch.nn.Module, model_dir: Path, *, only_changed: bool = True) -> dict:
    """The model's ``generation_config.json`` as a dict (the model's built-in config when the file is
    missing); ``only_changed`` keeps just the values that differ from transformers' defaults."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        config = model.generation_config
    return config.to_diff_dict() if only_changed else config.to_dict()
