"""Runtime profiling: how fast, how big, how accurate, and what really ran, for each variant of a package.

``profile(path, engines=[...], variants=[...], runs=N, warmup=N)`` measures each (engine, variant) in a fresh
process (honest peak RSS and a really cold first call): load/compile time, cold first inference, warm latency
percentiles and throughput, peak RSS, file size, per-operator time and placement from the engine's own
profiler, generation time to first token and tokens/s, and the task metric against ONNX Runtime fp32. The
result is one JSON schema for every engine (``schema.py``, ``schema_version``); ``report.render`` turns any
number of them into one self-contained HTML page.

This is a runtime room: numpy, the standard library and the engine only, so it runs on the device itself.
"""

from mmedge.runtime.profiling.profiler import profile
from mmedge.runtime.profiling.schema import SCHEMA_VERSION, load_profile, write_profile

__all__ = ["profile", "load_profile", "write_profile", "SCHEMA_VERSION"]
