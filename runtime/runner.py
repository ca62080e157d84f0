"""Binds an engine session to its manifest artifact: names, dtypes and the static-shape contract.

Pipelines speak in logical tensor names and int64/float32 numpy arrays; the artifact may want other
engine names (TFLite signature outputs are ``output_0``...), other dtypes (TFLite token ids are int32)
and fixed shapes. This layer checks inputs against the contract *before* any engine runs (a static limit
exceeded is a typed error, never truncation) and runs a fixed-batch graph chunk by chunk.
"""

from __future__ import annotations

import numpy as np

from mmedge.errors import InputError, PackageError, StaticShapeError
from mmedge.runtime.engines.base import EngineSession
from mmedge.runtime.manifest import Artifact, Signature, TensorSpec


class SignatureRunner:
    """One entry point of a component. Call with logical input names; returns logical output names."""

    def __init__(self, component: str, artifact: Artifact, signature: Signature, session: EngineSession):
        self.component, self.artifact, self.signature, self.session = component, artifact, signature, session
        self._key = signature.engine_key
        self._inputs = {t.name: t for t in signature.inputs}
        # Per-call work is kept to the minimum (see bench/runtime_overhead.py): specs and dtypes resolved once.
        self._checks = [(t.name, t, np.dtype(t.dtype)) for t in signature.inputs]
        self._outputs = [(t.name, t.bound_name) for t in signature.outputs]
        fixed_batches = {t.shape[0] for t in signature.inputs if t.shape and isinstance(t.shape[0], int)}
        self.fixed_batch: int | None = fixed_batches.pop() if len(fixed_batches) == 1 else None

    def input_spec(self, name: str) -> TensorSpec:
        return self._inputs[name]

    def fixed_dim(self, name: str, axis: int) -> int | None:
        """The fixed size of an input axis, or None when that axis is dynamic."""
        dim = self._inputs[name].shape[axis]
        return dim if isinstance(dim, int) else None

    def _check(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if feeds.keys() != self._inputs.keys():
            missing, unknown = set(self._inputs) - set(feeds), set(feeds) - set(self._inputs)
            raise InputError(f"{self.component}: missing inputs {sorted(missing)}, unknown inputs {sorted(unknown)} "
                             f"(expects {sorted(self._inputs)})")
        checked = {}
        for name, spec, target in self._checks:
            x = feeds[name]
            if not isinstance(x, np.ndarray):
                x = np.asarray(x)
            if x.ndim != len(spec.shape):
                raise InputError(f"{self.component}: input '{name}' must have {len(spec.shape)} dimensions "
                                 f"{list(spec.shape)}, got shape {list(x.shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, x.shape)):
                if want.__class__ is int and want != got and not (axis == 0 and self.fixed_batch):
                    raise StaticShapeError(
                        f"{self.component}: input '{name}' axis {axis} is fixed at {want} in this "
                        f"{self.artifact.format}/{self.artifact.variant} artifact, got {got}; use a dynamic "
                        "variant or export with shapes that fit")
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                raise InputError(f"{self.component}: input '{name}' contains NaN or Inf")
            if x.dtype != target:
                if target.kind in "iu" and x.size and (x.min() < np.iinfo(target).min or x.max() > np.iinfo(target).max):
                    raise InputError(f"{self.component}: input '{name}' has values outside {spec.dtype}")
                x = x.astype(target)
            checked[spec.bound_name] = x if x.flags.c_contiguous else np.ascontiguousarray(x)
        return checked

    def _run_once(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``feeds`` use engine names (as ``_check`` returns them); the result uses logical names."""
        raw = self.session.run(feeds, self._key)
        try:
            return {name: raw[bound] for name, bound in self._outputs}
        except KeyError as e:
            raise PackageError(f"{self.component}: the engine returned no output {e}; the manifest does not match "
                               "the file: re-export the package") from None

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        feeds = self._check(feeds)
        batch = self.fixed_batch
        n = next(iter(feeds.values())).shape[0]
        if batch is None or n == batch:
            return self._run_once(feeds)
        # Fixed-batch graph: run in chunks, padding the last chunk by repeating its final row.
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, batch):
            chunk = {k: v[start:start + batch] for k, v in feeds.items()}
            real = next(iter(chunk.values())).shape[0]
            if real < batch:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch - real, axis=0)]) for k, v in chunk.items()}
            parts.append({k: v[:real] for k, v in self._run_once(chunk).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class ComponentRunner:
    """All entry points of one component's artifact; calling it runs the default (first) signature."""

    def __init__(self, component: str, artifact: Artifact, sessions: dict[str, EngineSession]):
        self.component, self.artifact = component, artifact
        self.signatures = {name: SignatureRunner(component, artifact, sig, sessions[sig.file])
                           for name, sig in artifact.signatures.items()}
        self.default = next(iter(self.signatures.values()))
        self.session = self.default.session
        self.fixed_batch = self.default.fixed_batch

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        return self.default(**feeds)

    def signature(self, name: str) -> SignatureRunner:
        if name not in self.signatures:
            raise InputError(f"{self.component}: no signature '{name}' in this artifact (has: {', '.join(self.signatures)})")
        return self.signatures[name]

    def input_spec(self, name: str) -> TensorSpec:
        return self.default.input_spec(name)

    def fixed_dim(self, name: str, axis: int) -> int | None:
        return self.default.fixed_dim(name, axis)
