"""Reaching the engine sessions under a pipeline, and observing their calls, without touching the engines.

The profiler needs two things the session interface does not offer: every distinct session of a loaded
package (several signatures can share one session: a multi-signature TFLite file) and a callback after
each ``run`` (OpenVINO's performance counters describe only the last inference; the generation clock
needs the decoder's call times). Both are done here by wrapping ``run`` on the instance. A cleaner hook
would be an ``EngineSession.observers`` list called by each engine after ``run``, plus an
``EngineSession.profile()`` method per engine; until the engine modules grow one, this module is the
only place that knows the trick.
"""

from __future__ import annotations

from typing import Callable

from mmedge.runtime.engines.base import EngineSession
from mmedge.runtime.runner import ComponentRunner


def sessions_of(runners: dict[str, ComponentRunner]) -> list[tuple[str, EngineSession]]:
    """(component, session) for every distinct engine session, in component order."""
    seen: dict[int, tuple[str, EngineSession]] = {}
    for name, runner in runners.items():
        for sig in runner.signatures.values():
            seen.setdefault(id(sig.session), (name, sig.session))
    return list(seen.values())


def after_each_run(session: EngineSession, callback: Callable[[EngineSession], None]) -> None:
    """Call ``callback(session)`` after every ``session.run`` from now on (this instance only)."""
    inner = session.run

    def run(feeds, key=""):
        out = inner(feeds, key)
        callback(session)
        return out

    session.run = run
