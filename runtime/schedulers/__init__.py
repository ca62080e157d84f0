"""Diffusion schedulers in numpy for the slim runtime, each mirroring one diffusers class step for step (see
``base``). Chosen by name (``mmedge run --scheduler``) and configured from the package's ``scheduler_config.json``
exactly as ``DiffusersClass.from_config(config)`` would be."""

from __future__ import annotations

from typing import Any

from mmedge.errors import UsageError
from mmedge.runtime.schedulers.base import Randn, Scheduler
from mmedge.runtime.schedulers.ddim import DDIMScheduler
from mmedge.runtime.schedulers.dpm_solver import DPMSolverScheduler
from mmedge.runtime.schedulers.euler import EulerScheduler
from mmedge.runtime.schedulers.lcm import LCMScheduler

#: name -> (class, config overrides): "dpm++2m" is DPM-Solver++ at order 2 whatever the stored config says.
SCHEDULERS: dict[str, tuple[type[Scheduler], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerScheduler, {}),
    "dpm++2m": (DPMSolverScheduler, {"solver_order": 2, "algorithm_type": "dpmsolver++"}),
    "lcm": (LCMScheduler, {}),
}
#: diffusers class name -> our name (the package's default when its pipeline ships one of these).
SCHEDULER_OF_CLASS = {"DDIMScheduler": "ddim", "EulerDiscreteScheduler": "euler",
                      "DPMSolverMultistepScheduler": "dpm++2m", "LCMScheduler": "lcm"}


def make_scheduler(name: str, config: dict) -> Scheduler:
    """The scheduler ``name`` configured from a diffusers scheduler config (``scheduler_config.json`` as a dict)."""
    if name not in SCHEDULERS:
        raise UsageError(f"unknown scheduler '{name}'; choose one of: {', '.join(SCHEDULERS)}")
    cls, overrides = SCHEDULERS[name]
    return cls(config, **overrides)


__all__ = ["SCHEDULERS", "SCHEDULER_OF_CLASS", "Randn", "Scheduler", "make_scheduler"]
