"""Calibration feeds recorded from the real pipeline: the source variant is loaded on its own engine, every
session's ``run`` is observed while the family's task runs on real samples, and each graph file gets the list of
feeds it really received, keyed by its own input names.

So an encoder is calibrated on the features of real photos or speech, and a decoder on the encoder outputs and
the token prefixes it sees while decoding them (teacher forcing by its own fp32 outputs), with no per-family code
beyond the task call (``quantize.tasks``). A decoder called once per token would flood the set with
near-identical steps, so each file keeps at most ``per_file`` feeds, spread evenly over its calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Callable

import numpy as np

from mmedge.quantize.samples import Sample
from mmedge.quantize.tasks import task_for
from mmedge.runtime.engines.base import FORMAT_OF_ENGINE

Feeds = dict[str, np.ndarray]
ENGINE_OF_FORMAT = {fmt: engine for engine, fmt in FORMAT_OF_ENGINE.items()}
#: Engine options for measuring: plain fp32 maths around the quantized ops (OpenVINO's CPU plugin would otherwise
#: pick bf16 on AMX hosts and blur what quantization itself changed).
EXACT_OPTIONS = {"openvino": {"INFERENCE_PRECISION_HINT": "f32"}}


def load_pipeline(package, fmt: str, variant: str):
    """(pipeline, runners) of ``variant`` on the engine of ``fmt`` with ``EXACT_OPTIONS``."""
    from mmedge.runtime.loader import load_runners
    from mmedge.runtime.pipelines import pipeline_class

    engine = ENGINE_OF_FORMAT[fmt]
    runners, ran = load_runners(package, engine=engine, variant=variant, options=EXACT_OPTIONS.get(engine))
    return pipeline_class(package.manifest.family)(package, runners, ran), runners


def _thin(feeds: list, keep: int) -> list:
    if len(feeds) <= keep:
        return feeds
    picks = np.linspace(0, len(feeds) - 1, keep).round().astype(int)
    return [feeds[i] for i in dict.fromkeys(picks.tolist())]


Call = tuple[str, Feeds]  # (engine entry point key, "" for a file's only one; feeds by the graph's input names)


def feeds_of(calls: list[Call]) -> list[Feeds]:
    return [feeds for _key, feeds in calls]


def record(package, fmt: str, variant: str, samples: Sequence[Sample], *, per_file: int = 64,
           log: Callable[[str], None] | None = None) -> tuple[dict[str, list[Call]], list[dict]]:
    """({graph file (package-relative): calls} for every signature file of ``variant`` in format ``fmt``, the task
    outputs per sample), from running the family's task on ``samples``."""
    pipe, runners = load_pipeline(package, fmt, variant)
    seen: dict[str, list[Call]] = defaultdict(list)
    wrapped: set[int] = set()
    for runner in runners.values():  # the trick of runtime.profiling.hooks, recording the feeds
        for sig in runner.signatures.values():
            session, file = sig.session, sig.signature.file
            if id(session) in wrapped:
                continue
            wrapped.add(id(session))
            inner = session.run

            def run(feeds, key="", _inner=inner, _file=file):
                seen[_file].append((key, {k: np.array(v, copy=True) for k, v in feeds.items()}))
                return _inner(feeds, key)
            session.run = run
    task = task_for(package.manifest.family, package.manifest.task)
    outputs = []
    for i, sample in enumerate(samples, 1):
        if log:
            log(f"{fmt}/{variant} on {sample.name} ({i}/{len(samples)})")
        outputs.append(task.outputs(pipe, task.call(pipe, sample)))
    return {file: _thin(calls, per_file) for file, calls in seen.items()}, outputs
