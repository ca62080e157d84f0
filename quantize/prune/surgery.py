"""Which units go (the same count in every layer of a stack, the least important ones of each layer) and the
weight surgery that removes them, with transformers' own ``prune_layer``/``prune_heads`` where they exist."""

from __future__ import annotations

import math

import torch

from mmedge.quantize.prune.importance import Site
from mmedge.quantize.prune.layouts import FfnStack, in_dim, out_dim, replace, set_field


def removal_count(fraction: float, units: int) -> int:
    """Units to remove: ``fraction`` of ``units`` rounded half up, never all of them."""
    return min(units - 1, math.floor(fraction * units + 0.5))


def choose(site: Site, scores: torch.Tensor, fraction: float) -> list[int]:
    """The least important units of ``site``. Heads in grouped-query attention are chosen inside each key/value
    group, the same number per group, because every group must keep the same number of queries."""
    group = site.group_size
    count = removal_count(fraction, group)
    if group > 1:
        return sorted(g * group + int(i) for g, chunk in enumerate(scores.view(-1, group))
                      for i in torch.argsort(chunk, stable=True)[:count])
    return sorted(int(i) for i in torch.argsort(scores, stable=True)[:removal_count(fraction, site.size)])


def _features(units: list[int], width: int) -> torch.Tensor:
    """The feature indices of ``units`` blocks of ``width`` features each."""
    return torch.tensor([u * width + j for u in units for j in range(width)], dtype=torch.long)


def _shrink(layer: torch.nn.Module, path: str, keep: torch.Tensor, *, inputs: bool) -> None:
    from transformers.pytorch_utils import prune_layer

    module = layer.get_submodule(path)
    replace(layer, path, prune_layer(module, keep, dim=in_dim(module) if inputs else out_dim(module)))


def remove_ffn(site: Site, removed: list[int]) -> None:
    assert isinstance(site.stack, FfnStack)
    keep = _features([u for u in range(site.size) if u not in set(removed)], 1)
    for path in site.stack.ins:
        _shrink(site.layer, path, keep, inputs=False)
    _shrink(site.layer, site.stack.out, keep, inputs=True)


def remove_heads(site: Site, removed: list[int]) -> None:
    """Slice q/k/v/o of a ``config``-route attention (separate projections, explicit ``head_dim``)."""
    gone = set(removed)
    kept = [h for h in range(site.size) if h not in gone]
    kv_kept = kept if site.group_size == 1 else list(range(site.kv_heads))
    stack = site.stack
    _shrink(site.layer, stack.q[0], _features(kept, site.head_dim), inputs=False)
    for ref in (stack.k, stack.v):
        _shrink(site.layer, ref[0], _features(kv_kept, site.head_dim), inputs=False)
    _shrink(site.layer, stack.o, _features(kept, site.head_dim), inputs=True)


def head_config(config: object, site: Site, removed: int) -> dict[str, int]:
    """The config fields of a ``config``-route model after removing ``removed`` heads per layer."""
    kv = site.kv_heads - removed if site.group_size == 1 else site.kv_heads
    fields = {"num_attention_heads": site.size - removed, "num_key_value_heads": kv, "head_dim": site.head_dim}
    for name, value in fields.items():
        set_field(config, name, value)
    return fields
