"""mmedge: export, compress, package and run multimodal generative models on edge devices.

The rooms live in top-level folders of the repository and are installed as sub-packages of this
namespace: ``mmedge.devices``, ``mmedge.runtime``, ``mmedge.exporter``, ``mmedge.quantize`` and
``mmedge.cli``. This package itself holds only what every room shares (the error types).
"""

__version__ = "0.1.0"
