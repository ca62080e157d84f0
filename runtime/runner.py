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
        # Inputs a pipeline feeds back from the model itself (KV caches, encoder outputs): their NaN/Inf scan
        # would cost more than a small decoder step (megabytes per token), so ``trust`` exempts them.
        self.trusted: frozenset[str] = frozenset()
        self._outputs = [(t.name, t.bound_name) for t in signature.outputs]
        # A fixed "batch" axis (static signatures) is served in chunks; find it by name in each tensor.
        self._batch_in = {t.name: t.axis("batch") for t in signature.inputs}
        self._batch_out = {t.name: t.axis("batch") for t in signature.outputs}
        fixed_batches = {t.shape[a] for t in signature.inputs if (a := t.axis("batch")) is not None
                         and isinstance(t.shape[a], int)}
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
                if want.__class__ is int and want != got and not (axis == self._batch_in[name] and self.fixed_batch):
                    raise StaticShapeError(
                        f"{self.component}: input '{name}' axis {axis} is fixed at {want} in this "
                        f"{self.artifact.format}/{self.artifact.variant} artifact, got {got}; use a dynamic "
                        "variant or export with shapes that fit")
            if x.dtype.kind == "f" and name not in self.trusted and not np.isfinite(x).all():
                raise InputError(f"{self.component}: input '{name}' contains NaN or Inf; replace or drop the "
                                 "non-finite values (e.g. np.nan_to_num) before calling")
            if x.dtype != target:
                x = self._convert(name, spec, x, target)
            checked[spec.bound_name] = x if x.flags.c_contiguous else np.ascontiguousarray(x)
        return checked

    def _convert(self, name: str, spec: TensorSpec, x: np.ndarray, target: np.dtype) -> np.ndarray:
        """``x`` cast to the artifact's dtype, refusing casts that would change values: non-numbers, fractions
        into an integer input (a float token id would be truncated), integers out of the target's range."""
        if x.dtype.kind not in "biuf":
            raise InputError(f"{self.component}: input '{name}' has dtype {x.dtype}; pass a numeric array "
                             f"({spec.dtype})")
        if target.kind in "iu" and x.size:
            if x.dtype.kind == "f" and (x != np.trunc(x)).any():
                raise InputError(f"{self.component}: input '{name}' has fractional values; pass integer "
                                 f"values ({spec.dtype})")
            if x.min() < np.iinfo(target).min or x.max() > np.iinfo(target).max:
                raise InputError(f"{self.component}: input '{name}' has values outside {spec.dtype}; pass "
                                 f"values that fit {spec.dtype}")
        return x.astype(target)

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
        if batch is None:
            return self._run_once(feeds)
        axes = {self._inputs[n].bound_name: self._batch_in[n] for n in self._inputs}
        n = next(v.shape[axes[k]] for k, v in feeds.items() if axes[k] is not None)
        if n == batch:
            return self._run_once(feeds)
        # Fixed-batch graph: run in chunks, padding the last chunk by repeating its final row.
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, batch):
            real = min(batch, n - start)
            chunk = {}
            for k, v in feeds.items():
                a = axes[k]
                if a is None:
                    chunk[k] = v
                    continue
                part = np.take(v, range(start, start + real), axis=a)
                if real < batch:
                    last = np.take(part, [real - 1], axis=a)
                    part = np.concatenate([part, np.repeat(last, batch - real, axis=a)], axis=a)
                chunk[k] = np.ascontiguousarray(part)
            out = self._run_once(chunk)
            parts.append({k: np.take(v, range(real), axis=self._batch_out[k]) if self._batch_out[k] is not None else v
                          for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts], axis=self._batch_out[k]) if self._batch_out[k] is not None
                else parts[0][k] for k in parts[0]}


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

    def trust(self, names: set[str]) -> None:
        """Skip the NaN/Inf scan of these inputs in every signature (model-produced tensors)."""
        for sig in self.signatures.values():
            sig.trusted = frozenset(names)

    def signature(self, name: str) -> SignatureRunner:
        if name not in self.signatures:
            raise InputError(f"{self.component}: no signature '{name}' in this artifact (has: {', '.join(self.signatures)})")
        return self.signatures[name]

    def input_spec(self, name: str) -> TensorSpec:
        return self.default.input_spec(name)

    def fixed_dim(self, name: str, axis: int) -> int | None:
        return self.default.fixed_dim(name, axis)
