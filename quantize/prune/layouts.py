"""Where the prunable units of each supported transformers architecture live, and which config field records
their count, so that a pruned model saved with ``save_pretrained`` reloads with the smaller shapes.

Why a table per ``model_type`` rather than a search over module names: each architecture stores its FFN and
attention differently (GPT-2's fused ``Conv1D`` q/k/v, Llama's gated MLP, CLIP's two towers with two configs), and
a pruned model is only useful if the config can express the new sizes. HF configs hold one intermediate size and
one head count for all layers of a stack, so every layer of a stack loses the same number of units.

Head pruning takes one of two reload-safe routes:

* ``config``: models with an explicit ``head_dim`` config field (Llama, Qwen2, Mistral): q/k/v/o are sliced
  here and ``num_attention_heads``/``num_key_value_heads``/``head_dim`` rewritten. With grouped-query attention
  the same number of *query* heads is removed inside every key/value group (the k/v projections and the KV cache
  keep their size); without it (one query per group) whole heads go, k/v included.
* ``transformers``: models whose ``prune_heads`` is honoured on reload through ``config.pruned_heads`` (GPT-2,
  ViT): transformers' own ``prune_heads`` slices the weights.

Models that derive ``head_dim = hidden / heads`` and have neither (Whisper, CLIP) can only lose FFN neurons.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmedge.errors import UsageError


@dataclass(frozen=True)
class FfnStack:
    """The FFN blocks of one stack of layers that share one config field.

    ``ins`` are the per-layer paths of the projections whose *output* features are the neurons (``fc1``, or
    ``gate_proj`` and ``up_proj``); ``out`` the projection whose *input* features they are (``fc2``/``down_proj``).
    """

    name: str
    layers: str
    ins: tuple[str, ...]
    out: str
    config_field: str


@dataclass(frozen=True)
class HeadStack:
    """The self-attention of one stack: q/k/v projections as ``(path, segment)`` (GPT-2 fuses q, k and v into
    one ``Conv1D``: segments 0, 1, 2 of its output features) and the output projection ``o``."""

    name: str
    layers: str
    q: tuple[str, int]
    k: tuple[str, int]
    v: tuple[str, int]
    o: str
    route: str  # "config" or "transformers" (see the module doc)


@dataclass(frozen=True)
class Layout:
    ffn: tuple[FfnStack, ...]
    heads: tuple[HeadStack, ...] = ()
    no_heads: str = ""  # why heads cannot be pruned (models without a reload-safe route)


#: Llama-style decoders: gated MLP, separate q/k/v/o projections, an explicit ``head_dim`` config field.
_GATED = Layout(ffn=(FfnStack("decoder", "layers", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj",
                              "intermediate_size"),),
                heads=(HeadStack("decoder", "layers", ("self_attn.q_proj", 0), ("self_attn.k_proj", 0),
                                 ("self_attn.v_proj", 0), "self_attn.o_proj", "config"),))


_DERIVED = "{model} computes head_dim = hidden size / heads and transformers has no prune_heads for it, so a " \
           "head-pruned model would not reload; prune ffn only"

#: model_type -> layout; module paths are relative to ``model.base_model``.
LAYOUTS: dict[str, Layout] = {
    "gpt2": Layout(ffn=(FfnStack("decoder", "h", ("mlp.c_fc",), "mlp.c_proj", "n_inner"),),
                   heads=(HeadStack("decoder", "h", ("attn.c_attn", 0), ("attn.c_attn", 1), ("attn.c_attn", 2),
                                    "attn.c_proj", "transformers"),)),
    "llama": _GATED,
    "qwen2": _GATED,
    "mistral": _GATED,
    "whisper": Layout(ffn=(FfnStack("encoder", "encoder.layers", ("fc1",), "fc2", "encoder_ffn_dim"),
                           FfnStack("decoder", "decoder.layers", ("fc1",), "fc2", "decoder_ffn_dim")),
                      no_heads=_DERIVED.format(model="Whisper")),
    "clip": Layout(ffn=(FfnStack("text", "text_model.encoder.layers", ("mlp.fc1",), "mlp.fc2",
                                 "text_config.intermediate_size"),
                        FfnStack("vision", "vision_model.encoder.layers", ("mlp.fc1",), "mlp.fc2",
                                 "vision_config.intermediate_size")),
                   no_heads=_DERIVED.format(model="CLIP")),
    "vit": Layout(ffn=(FfnStack("encoder", "encoder.layer", ("intermediate.dense",), "output.dense",
                                "intermediate_size"),),
                  heads=(HeadStack("encoder", "encoder.layer", ("attention.attention.query", 0),
                                   ("attention.attention.key", 0), ("attention.attention.value", 0),
                                   "attention.output.dense", "transformers"),)),
}


def layout_for(model_type: str) -> Layout:
    if model_type not in LAYOUTS:
        raise UsageError(f"structured pruning does not know model_type '{model_type}'; supported: "
                         f"{', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[model_type]


def head_models() -> list[str]:
    return sorted(name for name, layout in LAYOUTS.items() if layout.heads)


# ----------------------------------------------------------------------------------- config and module access


def get_field(config: object, dotted: str) -> object:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def set_field(config: object, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        config = getattr(config, part)
    setattr(config, last, value)


def stack_layers(model: torch.nn.Module, stack: FfnStack | HeadStack) -> list[tuple[str, torch.nn.Module]]:
    """(full module path, layer) of every layer of ``stack``."""
    base = model.base_model
    prefix = next(name for name, module in model.named_modules() if module is base)
    layers = base.get_submodule(stack.layers)
    root = f"{prefix}.{stack.layers}" if prefix else stack.layers
    return [(f"{root}.{i}", layer) for i, layer in enumerate(layers)]


def replace(layer: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, name, module)


def is_conv1d(module: torch.nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2) stores its weight as [in, out], the transpose of ``nn.Linear``."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def rows(module: torch.nn.Module) -> torch.Tensor:
    """The weight as [out features, in features] whatever the layer type."""
    return module.weight.T if is_conv1d(module) else module.weight


def out_dim(module: torch.nn.Module) -> int:
    """The weight axis of the output features (what ``transformers.pytorch_utils.prune_layer`` calls ``dim``)."""
    return 1 if is_conv1d(module) else 0


def in_dim(module: torch.nn.Module) -> int:
    return 0 if is_conv1d(module) else 1
