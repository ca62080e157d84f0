"""Structured pruning at the torch level, before export: heads, FFN neurons, and the hidden conv
channels of EfficientNet-Lite blocks (``conv_channels``).

``parse_prune_spec("ffn=0.3,heads=0.25")`` reads the ``--prune`` text; ``prune_model_dir(src, out, spec)`` writes a
smaller Hugging Face directory that ``mmedge export`` takes unchanged and returns a ``PruneReport``."""

from mmedge.quantize.prune.model_dir import PruneReport, prune_model_dir
from mmedge.quantize.prune.spec import PruneSpec, parse_prune_spec

__all__ = ["PruneReport", "PruneSpec", "parse_prune_spec", "prune_model_dir"]
