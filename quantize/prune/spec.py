"""What to prune: a ``PruneSpec`` (fraction of FFN neurons, attention heads and conv channels to remove), parsed
from the ``--prune`` text form ``ffn=0.3,heads=0.25,channels=0.2``."""

from __future__ import annotations

from dataclasses import dataclass, fields

from mmedge.errors import UsageError
from mmedge.quantize.spec_text import key_values

FORM = "KEY=FRACTION[,KEY=FRACTION...] with KEY one of ffn, heads, channels and 0 <= FRACTION < 1, " \
       "e.g. ffn=0.3,heads=0.25"


@dataclass(frozen=True)
class PruneSpec:
    """Fractions of the units to remove in every layer: FFN intermediate neurons, attention heads, conv channels.

    A fraction is rounded to the nearest whole unit per layer (half up) and never removes every unit of a layer;
    the ``PruneReport`` says what was really removed."""

    ffn: float = 0.0
    heads: float = 0.0
    channels: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise UsageError(f"prune fraction {f.name}={value!r} is outside [0, 1); give {FORM}")

    @property
    def empty(self) -> bool:
        return not (self.ffn or self.heads or self.channels)

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self) if getattr(self, f.name))

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def parse_prune_spec(text: str) -> PruneSpec:
    """``"ffn=0.3,heads=0.25"`` -> ``PruneSpec(ffn=0.3, heads=0.25)``; a ``UsageError`` naming the form otherwise."""
    if not (text or "").strip():
        raise UsageError(f"the prune spec is empty: expected {FORM}")
    values: dict[str, float] = {}
    for key, raw in key_values(text, "prune", {f.name for f in fields(PruneSpec)}, FORM).items():
        try:
            values[key] = float(raw)
        except ValueError:
            raise UsageError(f"prune fraction '{raw}' for '{key}' is not a number: expected {FORM}") from None
    return PruneSpec(**values)
