"""Overlapping tiles, so that a fixed-shape (or memory-bounded) image-to-image model covers an image of any size
and the stitched result equals the whole-image result.

Each tile is a ``tile`` x ``tile`` window of the input; only its *core* (the window minus ``overlap`` pixels on
every side that is not an image border) is kept, so every kept output pixel saw at least ``overlap`` pixels of
real context in each direction. When ``overlap`` covers the model's receptive field (one pixel per 3x3 conv for a
CNN such as SRVGGNetCompact), a kept pixel is exactly what the whole image gives; for attention models (Swin2SR)
windows start at multiples of ``align`` (the attention window), so the tiles partition into the same attention
windows as the whole image and only context farther than ``overlap`` is lost.

Cores are laid edge to edge from the top-left with a step of ``tile - 2 * overlap``; a window that would cross the
far border is moved back inside the image, which only adds context to its core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from mmedge.errors import InputError


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the window ``[start, start + size)`` and the kept core ``[keep_start, keep_end)``."""

    start: int
    size: int
    keep_start: int
    keep_end: int


def check_tiling(tile: int, overlap: int, align: int = 1) -> None:
    """``InputError`` unless ``tile`` and ``overlap`` are multiples of ``align`` and leave a core of >= ``align``."""
    if overlap < 0 or tile <= 0:
        raise InputError(f"tile ({tile}) must be > 0 and overlap ({overlap}) >= 0")
    if tile % align or overlap % align:
        raise InputError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {align} (the model's window)")
    if tile - 2 * overlap < align:
        raise InputError(f"a {tile}-pixel tile with {overlap} pixels of overlap on each side keeps nothing; use a "
                         f"tile of at least {2 * overlap + align} pixels or a smaller overlap")


def spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Windows of ``tile`` covering ``[0, length)`` (one window of ``length`` when it fits in a tile)."""
    if length <= tile:
        return [Span(0, length, 0, length)]
    step = tile - 2 * overlap
    out = []
    for keep_start in range(0, length, step):
        keep_end = min(keep_start + step, length)
        start = min(max(keep_start - overlap, 0), length - tile)
        out.append(Span(start, tile, keep_start, keep_end))
    return out


def tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[Span, Span]]:
    """(row span, column span) of every tile, row by row."""
    columns = spans(width, tile, overlap)
    for row in spans(height, tile, overlap):
        for column in columns:
            yield row, column
