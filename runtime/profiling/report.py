"""``mmedge report``: any number of profile JSONs (devices, variants, engines) in one self-contained HTML page:
a summary table, latency distributions, the size-latency-accuracy Pareto plot, the top operators and every
fallback. Plots are inline SVG (``svg.py``), so the page opens offline, on the device or in CI, with nothing
installed beside mmedge."""

from __future__ import annotations

from html import escape
from pathlib import Path

from mmedge.runtime.profiling import svg

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
.plot text{font-size:11px}h2{margin-top:1.6em}.note{color:#666}"""
TOP_OPS = 6


def _label(profile: dict, result: dict) -> str:
    return f"{profile['host'].get('machine', '?')}:{result['device']} · {result['engine']} · {result['variant']}"


def _num(v, fmt: str = "{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def _accuracy_value(acc: dict) -> float | None:
    """Higher is better on the plot's colour scale: WER is turned into 1 - WER."""
    if not acc.get("available"):
        return None
    return 1 - acc["value"] if acc["metric"] == "wer" else acc["value"]


def _row(label: str, r: dict) -> str:
    lat, gen, acc = r["latency_ms"], r.get("generation") or {}, r["accuracy"]
    acc_text = f"{acc['metric']} {acc['value']:.6f}" if acc.get("available") else "n/a: " + acc.get("reason", "")
    cells = [label, _num(r["load_ms"], "{:.1f}"), _num(r["cold_ms"]), _num(lat["p50"]), _num(lat["p90"]),
             _num(lat["p99"]), _num(lat["mean"]), _num(r["throughput_per_s"], "{:.1f}"),
             _num(r["memory"]["peak_rss_bytes"] and r["memory"]["peak_rss_bytes"] / 2**20, "{:.1f}"),
             _num(r["files"]["bytes"] / 2**20, "{:.2f}"), _num(gen.get("time_to_first_token_ms")),
             _num(gen.get("tokens_per_s"), "{:.1f}"), acc_text, str(len(r["fallbacks"]))]
    return "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"


def _operators(label: str, ops: dict) -> str:
    if not ops.get("available"):
        return f"<p><b>{escape(label)}</b>: no per-operator timings ({escape(ops.get('reason', ''))})</p>"
    rows = "".join(f"<tr><td>{escape(o['op_type'])}</td><td>{o['ms_per_call']:.3f}</td><td>{o['share']:.1%}</td>"
                   f"<td>{o['kernel_calls']}</td></tr>" for o in ops["by_op_type"][:TOP_OPS])
    placement = ", ".join(f"{escape(k)}: {v}" for k, v in ops["placement"].items())
    return (f"<p><b>{escape(label)}</b>: {ops['total_op_ms_per_call']:.3f} ms in kernels of "
            f"{ops['wall_ms_per_call']:.3f} ms per profiled call ({escape(ops['source'])})</p><table><tr><th>op type</th>"
            f"<th>ms/call</th><th>share</th><th>kernel calls</th></tr>{rows}</table>"
            f"<p class=note>placement (kernel calls): {placement}</p>")


def render(profiles: list[dict]) -> str:
    """The HTML page for ``profiles`` (dicts as ``profile()`` returns or ``load_profile`` reads)."""
    runs = [(_label(p, r), p, r) for p in profiles for r in p["results"]]
    head = ("<tr><th>run</th><th>load ms</th><th>cold ms</th><th>p50</th><th>p90</th><th>p99</th><th>mean</th>"
            "<th>calls/s</th><th>peak RSS MB</th><th>size MB</th><th>TTFT ms</th><th>tokens/s</th><th>accuracy</th>"
            "<th>fallbacks</th></tr>")
    packages = sorted({f"{p['package']['family']} ({p['package']['path']})" for p in profiles})
    fallbacks = "".join(f"<li>{escape(label)}: {escape(f.get('component', '') + ' ' if f.get('component') else '')}"
                        f"{escape(f['what'])}: {escape(f['why'])}</li>" for label, _, r in runs for f in r["fallbacks"])
    body = [f"<h1>mmedge profile report</h1><p class=note>{escape(', '.join(packages))}; "
            f"{len(runs)} runs from {len(profiles)} profiles</p>",
            f"<h2>Summary</h2><table>{head}{''.join(_row(label, r) for label, _, r in runs)}</table>",
            "<h2>Latency distributions</h2>", svg.latency_boxes([(label, r["latency_ms"]["samples"]) for label, _, r in runs]),
            "<h2>Size, latency and accuracy</h2><p class=note>colour: accuracy against onnxruntime/fp32 (green = "
            "identical, grey = not measured); * and the dashed line: the Pareto front</p>",
            svg.size_latency_scatter([(label, r["files"]["bytes"] / 2**20, r["latency_ms"]["p50"],
                                       _accuracy_value(r["accuracy"])) for label, _, r in runs]),
            "<h2>Operators</h2>", *(_operators(label, r["operators"]) for label, _, r in runs),
            "<h2>What ran</h2><ul>" + "".join(
                f"<li>{escape(label)}: {escape(r['ran']['engine'])} {escape(r['ran']['format'])}/"
                f"{escape(r['ran']['variant'])}, workload: {escape(r['workload'])}</li>" for label, _, r in runs) + "</ul>",
            "<h2>Fallbacks</h2>" + (f"<ul>{fallbacks}</ul>" if fallbacks else "<p>none</p>")]
    return (f"<!doctype html><html><head><meta charset=utf-8><title>mmedge profile report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def write_report(profiles: list[dict], out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(profiles))
    return path
