"""mmedge: export, compress, package and run multimodal generative models on edge devices.

The rooms live in top-level folders of the repository and are installed as sub-packages of this
namespace: ``mmedge.devices``, ``mmedge.runtime``, ``mmedge.exporter``, ``mmedge.quantize`` and
``mmedge.cli``. This package itself holds only what every room shares (the error types, the engines' telemetry
opt-out below).
"""

import os
import sys

__version__ = "0.1.0"

# ONNX Runtime's official builds collect telemetry on Linux and macOS too (1DS; seen with 1.32): a persistent device
# id and an event store under ~/.cache/Microsoft/DeveloperTools, uploaded to Microsoft. mmedge promises no network
# use and no writes outside the caller's paths, so it opts out unless the caller chose otherwise. ORT reads this once,
# when it first initialises, so it is set here, before any room imports an engine (tests/test_honesty.py checks it).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# OpenVINO's model converter starts openvino-telemetry on `import openvino` (a client id and counters under ~/intel, a
# Google Analytics event from a child process), and NNCF sends its own through the same package. Both fall back to
# no-op stubs when that package cannot be imported, so it is made unimportable for this process: export, quantize and
# the runtime alike. A caller who imported openvino_telemetry before mmedge keeps it (their choice).
if "openvino_telemetry" not in sys.modules:
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # its import is then an ImportError
