"""The prunable units of a loaded model (``Site``: one layer's FFN neurons or attention heads) and their
importance scores.

* ``magnitude``: the L2 norm of all weights that belong to the unit (an FFN neuron's ``fc1`` row and bias,
  ``fc2`` column; a head's q/k/v rows and biases and its output-projection columns). Needs no data.
* ``activation``: on calibration inputs, the unit's mean output magnitude (|a| for a neuron, the L2 norm of a
  head's context vector) times the norm of the weights that carry it on (the neuron's ``fc2`` column, the head's
  output-projection columns) — how much the unit really contributes to the layer's output, as in Wanda
  (Sun et al., 2023). The activation alone would ignore how strongly the next layer amplifies it.

Units are scored before any weight is touched, so every score refers to the original model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch

from mmedge.errors import InputError
from mmedge.quantize.prune.layouts import FfnStack, HeadStack, get_field, rows, stack_layers

METHODS = ("magnitude", "activation")


@dataclass
class Site:
    """One layer's prunable units: ``size`` FFN neurons, or ``size`` attention heads in ``kv_heads`` groups."""

    stack: FfnStack | HeadStack
    path: str
    layer: torch.nn.Module
    size: int
    kv_heads: int = 0
    head_dim: int = 0

    @property
    def kind(self) -> str:
        return "ffn" if isinstance(self.stack, FfnStack) else "heads"

    @property
    def group_size(self) -> int:
        """Query heads per key/value group (1 for FFN neurons and multi-head attention)."""
        return self.size // self.kv_heads if self.kv_heads else 1

    @property
    def sink(self) -> torch.nn.Module:
        """The projection whose input features are the units (``fc2``/``down_proj``, or the attention output)."""
        return self.layer.get_submodule(self.stack.out if isinstance(self.stack, FfnStack) else self.stack.o)


def head_geometry(config: object) -> tuple[int, int, int]:
    """(heads, key/value heads, head dim) of a (text) config."""
    heads = int(get_field(config, "num_attention_heads"))
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or int(get_field(config, "hidden_size")) // heads
    return heads, int(kv_heads), int(head_dim)


def ffn_sites(model: torch.nn.Module, stack: FfnStack) -> list[Site]:
    return [Site(stack, path, layer, rows(layer.get_submodule(stack.out)).shape[1])
            for path, layer in stack_layers(model, stack)]


def head_sites(model: torch.nn.Module, stack: HeadStack) -> list[Site]:
    heads, kv_heads, head_dim = head_geometry(model.config)
    return [Site(stack, path, layer, heads, kv_heads, head_dim) for path, layer in stack_layers(model, stack)]


# -------------------------------------------------------------------------------------------------- magnitude


def _segment(site: Site, ref: tuple[str, int], width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The [width, in] rows (and bias) of segment ``ref[1]`` of a possibly fused q/k/v projection."""
    module = site.layer.get_submodule(ref[0])
    start = ref[1] * width
    bias = module.bias[start:start + width] if module.bias is not None else None
    return rows(module)[start:start + width], bias


def _squares_per_unit(weight_rows: torch.Tensor, bias: torch.Tensor | None, unit: int) -> torch.Tensor:
    """Sum of squares of consecutive blocks of ``unit`` rows (one block per neuron or head)."""
    sq = weight_rows.detach().float().pow(2).sum(1)
    if bias is not None:
        sq = sq + bias.detach().float().pow(2)
    return sq.view(-1, unit).sum(1)


def sink_norms(site: Site) -> torch.Tensor:
    """L2 norm of the sink's input columns, per unit."""
    unit = site.head_dim or 1
    return _squares_per_unit(rows(site.sink).T, None, unit).sqrt()


def magnitude(site: Site) -> torch.Tensor:
    unit = site.head_dim or 1
    sq = sink_norms(site).pow(2)
    if isinstance(site.stack, FfnStack):
        for path in site.stack.ins:
            module = site.layer.get_submodule(path)
            sq = sq + _squares_per_unit(rows(module), module.bias, 1)
        return sq.sqrt()
    sq = sq + _squares_per_unit(*_segment(site, site.stack.q, site.size * unit), unit)
    if site.group_size == 1:  # one query per key/value head: the head's k and v go with it
        for ref in (site.stack.k, site.stack.v):
            sq = sq + _squares_per_unit(*_segment(site, ref, site.kv_heads * unit), unit)
    return sq.sqrt()


# ------------------------------------------------------------------------------------------------- activation


class _MeanMagnitude:
    """Forward pre-hook on a site's sink: the running mean over tokens of |input| per unit (per head: the L2
    norm of the head's slice)."""

    def __init__(self, site: Site):
        self.site, self.total, self.count = site, torch.zeros(site.size, dtype=torch.float64), 0

    def __call__(self, _module: torch.nn.Module, args: tuple) -> None:
        x = args[0].detach().float()
        if self.site.head_dim:
            x = x.reshape(-1, self.site.size, self.site.head_dim).norm(dim=-1)
        else:
            x = x.reshape(-1, self.site.size).abs()
        self.total += x.sum(0, dtype=torch.float64)
        self.count += x.shape[0]


@contextlib.contextmanager
def _recording(sites: Sequence[Site]) -> Iterator[list[_MeanMagnitude]]:
    hooks = [_MeanMagnitude(site) for site in sites]
    handles = [site.sink.register_forward_pre_hook(hook) for site, hook in zip(sites, hooks)]
    try:
        yield hooks
    finally:
        for handle in handles:
            handle.remove()


def _tensors(feed: Mapping[str, object]) -> dict[str, torch.Tensor]:
    return {name: value if isinstance(value, torch.Tensor) else torch.as_tensor(value) for name, value in feed.items()}


def activation(model: torch.nn.Module, sites: Sequence[Site],
               calibration: Sequence[Mapping[str, object]]) -> list[torch.Tensor]:
    """Activation importance of every site's units, from running ``model(**feed)`` on each calibration feed."""
    with _recording(sites) as hooks, torch.inference_mode():
        for i, feed in enumerate(calibration):
            try:
                model(**_tensors(feed))
            except (TypeError, ValueError, RuntimeError, IndexError) as e:
                raise InputError(f"calibration input {i} (keys {sorted(feed)}) does not run through "
                                 f"{type(model).__name__}: {str(e).splitlines()[0][:200]}; give dicts of the model's "
                                 "forward() inputs (e.g. the tokenizer's or processor's return_tensors='pt' output)"
                                 ) from None
    unseen = sorted({hook.site.stack.name for hook in hooks if hook.count == 0})
    if unseen:
        raise InputError(f"the calibration inputs never reached the {', '.join(unseen)} layers; give inputs for "
                         "every part of the model (e.g. both input_ids and pixel_values for CLIP)")
    return [(hook.total / hook.count).float() * sink_norms(hook.site) for hook in hooks]
