"""The registry of family specs. Adding a family = one module here + one runtime pipeline."""

from __future__ import annotations

from mmedge.errors import UnknownFamilyError
from mmedge.exporter.families.base import FamilySpec
from mmedge.exporter.families.clip import ClipSpec

FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (ClipSpec(),)}


def get_family(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise UnknownFamilyError(f"unknown family '{name}'; known families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def detect_family(config: dict) -> FamilySpec:
    """The spec whose model types include the config's ``model_type``."""
    for spec in FAMILIES.values():
        if spec.matches(config):
            return spec
    raise UnknownFamilyError(f"cannot tell the family of model_type '{config.get('model_type')}'; pass --family "
                             f"(one of: {', '.join(sorted(FAMILIES))}) or use a supported model")
