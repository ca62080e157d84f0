"""The exporter: family specs, converters (ONNX, OpenVINO IR, TFLite), parity checks, package writer.

Importing it quiets two third-party import-time messages that only confuse users: torchao warns that
its CUDA-only kernels cannot load on a CPU build, and torch warns about torchao's pytree registrations.
"""

import logging

for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
