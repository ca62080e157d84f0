"""The profile JSON: one schema for every engine, written by ``mmedge profile --json`` and read by ``mmedge report``.

Schema version 1 (a change that removes or renames a field bumps ``SCHEMA_VERSION``)::

    schema_version: 1
    tool: "mmedge 0.1.0";  created_utc: ISO time
    host: {machine, system, cores, python}
    package: {path, family, task, source}
    options: {engines, device, variants, runs, warmup, operator_calls, options}
    results: [                                   # one per (engine, variant), each measured in a fresh process
      {engine, variant, format, precision, device, workload (what the inputs were), kind (embeddings|tokens|transcript),
       ran: RunInfo.to_dict(),  fallbacks: [{what, why, component?}],   # what really ran, every fallback
       files: {bytes, count, paths},
       load_ms (open + load/compile + pipeline), cold_ms (first task call),
       latency_ms: {runs, p50, p90, p99, mean, std, min, max, samples}, throughput_per_s (task calls/s),
       memory: {peak_rss_bytes, ru_maxrss_bytes, vm_hwm_bytes, baseline_rss_bytes},
       generation: null | {time_to_first_token_ms, tokens_per_s, new_tokens, source, runs},
       operators: {available: true, source, profiled_calls, wall_ms_per_call, total_op_ms_per_call,
                   by_op_type: [{op_type, ms_per_call, kernel_calls, share}],
                   top_nodes: [{component, node, op_type, placed_on, ms_per_call}], placement: {where: kernel calls}}
                | {available: false, source, reason, op_types?},
       accuracy: {available: true, reference: "onnxruntime/fp32", metric: cosine|token_agreement|wer, value, ...}
               | {available: false, reference, reason},
       heavy_modules: []}                       # torch & co. seen in the measuring process: always empty
    ]

Times are milliseconds, sizes bytes. ``None`` means "not measurable here", never zero.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmedge.errors import InputError

SCHEMA_VERSION = 1


def write_profile(profile: dict, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(profile, indent=2))
    return out


def load_profile(path: str | Path) -> dict:
    """Read a profile JSON, refusing files that are not one (or of another schema version) with the fix."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read profile {p}: {e}; give JSON files written by `mmedge profile --json OUT`") from None
    if not isinstance(data, dict) or "results" not in data or "schema_version" not in data:
        raise InputError(f"{p} is not an mmedge profile; write one with `mmedge profile PACKAGE --json {p.name}`")
    if data["schema_version"] != SCHEMA_VERSION:
        raise InputError(f"{p} has profile schema_version {data['schema_version']}, this mmedge reads "
                         f"{SCHEMA_VERSION}; re-run `mmedge profile` with this mmedge")
    return data
