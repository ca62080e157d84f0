"""Channel pruning of EfficientNet-Lite: the expanded (hidden) channels of every MBConv block are removed like FFN
neurons — the expand 1x1 conv's output channels and its BatchNorm, the depthwise conv and its BatchNorm, and the
project 1x1 conv's input channels — so every exported graph is physically smaller.

Why these channels: the block's input/output channels are tied across blocks by the residual connections, while the
hidden ones live inside one block. Blocks without an expand conv (expand ratio 1: their hidden channels are the
stem's outputs) are left whole. Lite has no squeeze-excitation, so no SE convs need slicing.

Importance is data-free: the spread of a channel's output (|gamma| of the depthwise conv's BatchNorm, which scales the
normalised pre-activation) times the L2 norm of the project conv's input column that carries it on. The removed
channel's *mean* output (E[relu6(z)] for z ~ N(beta, gamma^2), what the BatchNorm statistics say) is not lost: it is
folded into the running mean of the project conv's BatchNorm, so what goes is only each channel's variation.

The pruned widths are recorded per block in ``config.json`` (``block_channels``); ``families.efficientnet_lite``
shrinks a freshly built architecture to them before loading the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from mmedge.errors import ExportError, UsageError
from mmedge.quantize.prune.spec import PruneSpec
from mmedge.quantize.prune.surgery import removal_count

if TYPE_CHECKING:
    from mmedge.quantize.prune.model_dir import PruneReport

BLOCK_CHANNELS = "block_channels"  # config.json field: the hidden width of every MBConv block


def hidden_width(block: torch.nn.Module) -> int:
    return int(block._depthwise_conv.out_channels)


def _slice(module: torch.nn.Module, keep: torch.Tensor, dim: int, names: Sequence[str]) -> None:
    for name in names:
        tensor = getattr(module, name)
        sliced = tensor.detach().index_select(dim, keep).clone()
        setattr(module, name, torch.nn.Parameter(sliced) if isinstance(tensor, torch.nn.Parameter) else sliced)


def shrink_block(block: torch.nn.Module, keep: torch.Tensor) -> None:
    """Keep only the hidden channels ``keep`` (sorted indices) of an MBConv block with an expand conv."""
    if getattr(block, "has_se", False):
        raise UsageError("channel pruning handles EfficientNet-Lite blocks (no squeeze-excitation); this block has "
                         "SE convs: prune an EfficientNet-Lite model")
    width = len(keep)
    _slice(block._expand_conv, keep, 0, ("weight",))
    block._expand_conv.out_channels = width
    for bn in (block._bn0, block._bn1):
        _slice(bn, keep, 0, ("weight", "bias", "running_mean", "running_var"))
        bn.num_features = width
    dw = block._depthwise_conv
    _slice(dw, keep, 0, ("weight",))
    dw.in_channels = dw.out_channels = dw.groups = width
    _slice(block._project_conv, keep, 1, ("weight",))
    block._project_conv.in_channels = width


def _fits(width: object, block: torch.nn.Module) -> bool:
    """A recorded width is possible: at most the built one, and exactly it for blocks without an expand conv."""
    full = hidden_width(block)
    return isinstance(width, int) and (0 < width <= full if block._block_args.expand_ratio != 1 else width == full)


def resize_blocks(model: torch.nn.Module, widths: Sequence[int]) -> None:
    """Shrink a freshly built EfficientNet-Lite to the ``block_channels`` of a pruned folder (the first channels of
    each block are kept; the weights loaded next fill them)."""
    blocks = model._blocks
    if not isinstance(widths, list) or len(widths) != len(blocks) or not all(map(_fits, widths, blocks)):
        raise ExportError(f"config.json {BLOCK_CHANNELS}={widths!r} does not fit this architecture "
                          f"({len(blocks)} blocks of widths {[hidden_width(b) for b in blocks]}); re-run the prune")
    for block, width in zip(blocks, widths):
        if width != hidden_width(block):
            shrink_block(block, torch.arange(width))


def _relu6_mean(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[clamp(z, 0, 6)] for z ~ N(mean, std^2): E[max(z, 0)] - E[max(z - 6, 0)], in closed form."""
    normal = torch.distributions.Normal(0.0, 1.0)
    std = std.clamp_min(1e-6)

    def ramp(shift: float) -> torch.Tensor:
        u = (mean - shift) / std
        return (mean - shift) * normal.cdf(u) + std * normal.log_prob(u).exp()
    return ramp(0.0) - ramp(6.0)


def magnitude(block: torch.nn.Module) -> torch.Tensor:
    """Per hidden channel: |BN1 gamma| (the spread of its pre-activation) times its project-column L2 norm."""
    return block._bn1.weight.detach().abs() * block._project_conv.weight.detach().flatten(1).norm(dim=0)


#: kept widths are multiples of this: CPU conv kernels work on blocks of 8 (AVX2) or 16 (AVX-512) channels
#: (ONNX Runtime's NCHWc layout); Lite0 at 30 % with unaligned widths ran 2x *slower* than unpruned (bench/pruning.py)
CHANNEL_ALIGN = 16


def kept_width(fraction: float, width: int) -> int:
    """How many hidden channels stay: ``fraction`` removed, rounded down to ``CHANNEL_ALIGN`` (never below it)."""
    keep = width - removal_count(fraction, width)
    return width if keep == width else max(CHANNEL_ALIGN, keep // CHANNEL_ALIGN * CHANNEL_ALIGN)


@torch.no_grad()
def prune_block(block: torch.nn.Module, fraction: float) -> list[int]:
    """Remove at least the ``fraction`` least important hidden channels of ``block`` (so that the kept width is
    aligned), folding their mean output into the project BatchNorm; returns the removed channel indices."""
    width = hidden_width(block)
    count = width - min(width, kept_width(fraction, width))
    removed = sorted(int(i) for i in torch.argsort(magnitude(block), stable=True)[:count])
    if not removed:
        return removed
    gone = torch.tensor(removed)
    bn1 = block._bn1
    mean = _relu6_mean(bn1.bias.index_select(0, gone), bn1.weight.index_select(0, gone).abs())
    column = block._project_conv.weight.flatten(1).index_select(1, gone)  # [out, removed]
    block._bn2.running_mean -= column @ mean  # the project conv has no bias: its BatchNorm absorbs the constant
    gone_set = set(removed)
    shrink_block(block, torch.tensor([c for c in range(width) if c not in gone_set]))
    return removed


def prune_efficientnet_lite(directory: Path, out: Path, spec: PruneSpec, importance: str,
                            log: Callable[[str], None]) -> PruneReport:
    """``prune_model_dir`` for an EfficientNet-Lite folder: a pruned folder with ``block_channels`` in its config,
    and the ``PruneReport`` (one ``channels`` entry per pruned block)."""
    import json

    from mmedge.exporter.families.efficientnet_lite import load_folder, write_folder
    from mmedge.exporter.importers.atomic import atomic_folder
    from mmedge.quantize.prune.model_dir import REPORT_NAME, LayerChange, PruneReport, _size

    if spec.ffn or spec.heads:
        raise UsageError("EfficientNet-Lite has no FFN neurons or attention heads; prune its conv channels only "
                         "(e.g. --prune channels=0.2)")
    if importance != "magnitude":
        raise UsageError(f"channel pruning scores channels by magnitude only; drop importance='{importance}'")
    model, labels, _ = load_folder(directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    params_before, bytes_before = _size(model, torch.float32)
    report = PruneReport(config["model_type"], type(model).__name__, spec, importance, params_before, 0,
                         bytes_before, 0)
    log(f"scoring conv channels of {config['model_name']} ({params_before / 1e6:.2f}M parameters)")
    before = [hidden_width(block) for block in model._blocks]
    for i, block in enumerate(model._blocks):
        if block._block_args.expand_ratio != 1:
            removed = prune_block(block, spec.channels)
            report.layers.append(LayerChange("blocks", f"_blocks.{i}", "channels", before[i], hidden_width(block),
                                             removed))
    widths = [hidden_width(block) for block in model._blocks]
    report.config_changes[BLOCK_CHANNELS] = [before, widths]
    report.params_after, report.bytes_after = _size(model, torch.float32)
    log(f"pruned to {report.params_after / 1e6:.2f}M parameters ({report.param_ratio:.1%}); saving to {out}")
    with atomic_folder(out) as stage:
        write_folder(stage, model.state_dict(), config["model_name"], labels, block_channels=widths)
        (stage / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
        load_folder(stage)  # the folder reloads as export will load it
    return report
