"""``describe()``: everything ``mmedge devices`` shows, as one JSON-able dict (detection, engines, profiles, and
the routes of the device in question with the options each would run with)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .detect import available_engines, detect
from .planner import precision_order, route_options
from .profiles import EXTRA_OF_ENGINE, DeviceProfile, list_profiles, profile


def routes(prof: DeviceProfile, cores: int | None, engines: Mapping[str, bool]) -> list[dict[str, Any]]:
    """The profile's routes in try order, each with the precision order the planner uses on that CPU, the engine
    options it would pass (thread counts = ``cores``; None leaves them to the engine: all cores) and, where the
    engine is missing here, the extra that installs it."""
    out = []
    for rank, route in enumerate(prof.preferred, 1):
        installed = bool(engines.get(route.engine))
        out.append({"rank": rank, "engine": route.engine, "format": route.format, "target": route.target,
                    "accelerator": route.accelerator, "static_only": route.static_only,
                    "precisions": precision_order(route, prof), "options": route_options(route, cores),
                    "installed": installed,
                    "fix": None if installed else f"pip install 'mmedge[{EXTRA_OF_ENGINE[route.engine]}]'"})
    return out


def describe(root: str | Path = "/", *, profile_name: str | None = None) -> dict[str, Any]:
    """The detected device with its evidence, the installed engines, every profile, and the routes of the detected
    device (or of ``profile_name``, e.g. to see what a Jetson would run) for the CLI to print."""
    detected = detect(root)
    engines = available_engines()
    here = profile_name in (None, detected.profile)
    shown = detected.device_profile() if here else profile(profile_name)
    cores = detected.cores if here else None
    return {"root": str(root), "detected": detected.to_dict(), "profile": shown.to_dict(), "engines": engines,
            "routes": routes(shown, cores, engines), "profiles": [p.to_dict() for p in list_profiles()]}
