"""mmedge.devices: which device is this, and in which order should a package's files be tried on it.

Profiles are data (``profiles/*.json``), detection reads files under an overridable root, and the planner
turns (package artifacts × device routes × installed engines) into ordered choices with reasons. Stdlib only,
so the slim runtime and the CLI can plan without importing any engine.
"""

from .detect import DetectedDevice, available_engines, detect
from .planner import ArtifactRef, Plan, PlanChoice, plan
from .profiles import DeviceProfile, Route, list_profiles, profile
from .summary import describe

__all__ = ["ArtifactRef", "DetectedDevice", "DeviceProfile", "Plan", "PlanChoice", "Route", "available_engines",
           "describe", "detect", "list_profiles", "plan", "profile"]
