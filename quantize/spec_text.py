"""The ``key=value,key=value`` text of ``--prune`` and ``--distill``, split with one set of error messages."""

from __future__ import annotations

from collections.abc import Collection

from mmedge.errors import UsageError


def key_values(text: str, what: str, keys: Collection[str], form: str) -> dict[str, str]:
    """``"ffn=0.3,heads=0.25"`` -> ``{"ffn": "0.3", "heads": "0.25"}``; empty items are skipped. A part that is not
    key=value, an unknown key or a repeated one is a ``UsageError`` quoting ``form``, the valid form."""
    values: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        key, sep, raw = (s.strip() for s in part.partition("="))
        if not sep or not key or not raw:
            raise UsageError(f"bad {what} spec {text!r}: {part!r} is not key=value; expected {form}")
        if key not in keys:
            raise UsageError(f"bad {what} spec {text!r}: unknown key {key!r}; expected {form}")
        if key in values:
            raise UsageError(f"bad {what} spec {text!r}: {key}= given twice; expected {form}")
        values[key] = raw
    return values
