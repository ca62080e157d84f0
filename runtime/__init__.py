"""The slim runtime: opens a model package and runs it with numpy, small helpers and ONE engine.

It never imports torch, transformers, optimum or diffusers (a test enforces it), never unpickles and
never touches the network. Typical use::

    from mmedge import runtime
    clip = runtime.load("pkg/", engine="onnxruntime")
    print(clip.zero_shot("cat.jpg", ["a cat", "a dog"]).to_dict())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmedge.errors import PackageError
from mmedge.runtime.loader import RunInfo, load_runners
from mmedge.runtime.manifest import SCHEMA_VERSION, Manifest
from mmedge.runtime.package import Package, open_package, sha256_file
from mmedge.runtime.pipelines import pipeline_class


def load(path: str | Path, *, engine: str | None = None, device: str | None = None, variant: str | None = None,
         verify: bool = True, options: dict | None = None) -> Any:
    """Open a package and build its family's pipeline on the best engine the device plan allows.

    ``engine`` forces one engine, ``device`` one device profile (default: detected), ``variant`` one
    variant (e.g. ``fp32-static``); ``options`` override engine options (``num_threads``,
    ``INFERENCE_PRECISION_HINT``...). ``verify`` checks the sha256 of the files this load uses. The pipeline's ``ran`` says what was chosen and every fallback.
    """
    package = open_package(path, verify=False)
    if verify:  # the variant's own files are checked by the loader once it has chosen one
        package.check(package.shared_files())
    cls = pipeline_class(package.manifest.family)
    runners, ran = load_runners(package, engine=engine, device=device, variant=variant, options=options,
                                verify=verify)
    try:
        return cls(package, runners, ran)
    except (KeyError, IndexError, TypeError, ValueError) as e:  # a constructor only reads the manifest and runners
        raise PackageError(f"this package does not fit the '{package.manifest.family}' pipeline "
                           f"({type(e).__name__} {e}): its manifest's family or components were changed, or another "
                           "tool wrote it; re-export the package") from None


__all__ = ["load", "open_package", "Package", "Manifest", "RunInfo", "SCHEMA_VERSION", "sha256_file"]
