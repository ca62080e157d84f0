"""The arguments every graph backend checks the same way: the scheme's options and the ``exclude`` list.

``exclude`` entries are layer names exactly as the backend's ``layers(src, scheme)`` lists them, or regular
expressions searched in those names (``re.search``, the convention of ai-edge-quantizer's recipes), e.g.
``"Block_0/"`` for one block. The same list goes to every graph file of a package (a decoder's ``decode`` and
``prefill`` files, an encoder and its decoder), so an entry that names no layer of this file is not an error: it
is returned as unmatched, and the backend records it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mmedge.errors import UsageError
from mmedge.quantize.scheme import MODES, Scheme


def options(scheme: Scheme, fmt: str, defaults: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The scheme's options over ``defaults[mode]``; UsageError for another format, an unknown mode or option key."""
    if scheme.format != fmt or scheme.mode not in MODES[fmt]:
        raise UsageError(f"the {fmt} backend cannot apply {scheme.format} {scheme.mode}; "
                         f"{fmt} modes: {', '.join(MODES[fmt])}")
    known = defaults[scheme.mode]
    unknown = sorted(set(scheme.options) - set(known))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} for {fmt} {scheme.mode}; "
                         f"valid: {', '.join(known) or 'none'}")
    return {**known, **scheme.options}


def select(exclude: Sequence[str], candidates: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the candidate layers ``exclude`` names, in graph order; the entries that named none of them)."""
    if isinstance(exclude, str):
        raise UsageError(f"exclude must be a list of layer names, not the string {exclude!r}")
    chosen: set[str] = set()
    unmatched: list[str] = []
    for entry in exclude:
        if entry in candidates:
            chosen.add(entry)
            continue
        try:
            pattern = re.compile(entry)
        except re.error as e:
            raise UsageError(f"exclude entry {entry!r} is neither a layer name nor a valid regular expression ({e}); "
                             "list the layer names with the backend's layers()") from None
        hits = [name for name in candidates if pattern.search(name)]
        chosen.update(hits)
        if not hits:
            unmatched.append(entry)
    return [name for name in candidates if name in chosen], unmatched
