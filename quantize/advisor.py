"""The int8 advisor: before quantizing for a device, predict whether int8 will be faster there, then confirm by
measuring.

The prediction is Amdahl's law over two facts:
- **op coverage**: the share of the fp32 graph's time (ONNX Runtime's own profiler, per node) spent in the nodes
  the dynamic-int8 recipe quantizes (MatMul with constant weights; ``quantize.onnx_dynamic``). Attention's
  activation×activation MatMuls, LayerNorm, Softmax, reshapes and copies stay float and do not speed up;
- **the CPU's ISA**: how much faster an int8 GEMM is than an fp32 one on the target CPU (AMX, VNNI and Arm dot
  product multiply-accumulate four int8 pairs per lane; AVX2 and plain NEON need widening multiplies and gain
  little). The factors below are rules of thumb for ONNX Runtime's MLAS kernels, which is why the advisor then
  measures: it quantizes a copy of the package and profiles fp32 against int8 on this machine, with the family's
  task metric against fp32.

The measurement is of *this* machine: when the target device is another one, the advice says so, and running
``mmedge int8-advice`` on the device itself confirms it there.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from mmedge.devices import detect, profile as device_profile
from mmedge.errors import UsageError
from mmedge.quantize.onnx_dynamic import add_dynamic_int8
from mmedge.runtime.package import open_package

#: Extra time of a dynamically quantized node, as a share of its float time: quantizing its activation at run
#: time (DynamicQuantizeLinear: a min/max pass and a conversion) and rescaling its int32 result.
DYNAMIC_OVERHEAD = 0.15
#: Speedup beyond which int8 is called faster (and below whose inverse slower): smaller differences are noise
#: next to the cost of an accuracy check.
MARGIN = 1.15


@dataclass(frozen=True)
class IsaClass:
    """What the target CPU offers for int8 GEMMs, and the rule-of-thumb speedup of int8 over fp32 GEMM on it."""

    name: str
    gemm_speedup: float
    evidence: str


def isa_class(arch: str, features: set[str], has_int8_dot: bool, *, from_profile: bool) -> IsaClass:
    """The int8 class of a CPU from its feature flags (``from_profile``: only the device profile's int8-dot trait
    is known, not the flags, so the class is the profile's typical CPU)."""
    source = "device profile" if from_profile else "cpu flags"
    if arch == "x86_64":
        if "amx_int8" in features:
            return IsaClass("x86 AMX int8 tiles", 4.0, f"{source}: amx_int8")
        if features & {"avx512_vnni", "avx_vnni"} or (from_profile and has_int8_dot):
            found = " ".join(sorted(features & {"avx512_vnni", "avx_vnni"})) or "int8 dot product"
            return IsaClass("x86 VNNI int8 dot product", 2.5, f"{source}: {found}")
        if "avx2" in features or from_profile:
            return IsaClass("x86 AVX2 (u8 x s8 multiply-add, no VNNI)", 1.6, f"{source}: avx2 without vnni")
        return IsaClass("x86 without AVX2", 1.0, f"{source}: no avx2")
    if "i8mm" in features:
        return IsaClass("Arm int8 matrix multiply (SMMLA)", 3.0, f"{source}: i8mm")
    if "asimddp" in features or (from_profile and has_int8_dot):
        return IsaClass("Arm int8 dot product (SDOT)", 2.5, f"{source}: asimddp")
    return IsaClass("Arm NEON without int8 dot product (e.g. Cortex-A72)", 1.2, f"{source}: no asimddp")


def quantized_nodes(package: str | Path) -> dict[str, set[str]]:
    """Per component, the names of the fp32 ONNX nodes the dynamic-int8 recipe quantizes: MatMul and Gemm whose
    second input is a constant (initializer or Constant node; onnxruntime turns such a Gemm into MatMulInteger
    + Add), and Attention/LSTM nodes."""
    import onnx

    pkg = open_package(package, verify=False)
    out: dict[str, set[str]] = {}
    for name, comp in pkg.manifest.components.items():
        art = comp.find("onnx", "fp32")
        if art is None:
            raise UsageError(f"component {name} has no dynamic fp32 ONNX file; the advisor measures ONNX Runtime: "
                             "export the package with the onnx format")
        names: set[str] = set()
        for rel in dict.fromkeys([art.file, *(s.file for s in art.signatures.values())]):
            graph = onnx.load(pkg.path(rel), load_external_data=False).graph
            constants = {t.name for t in graph.initializer}
            constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
            names |= {n.name for n in graph.node
                      if (n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in constants)
                      or n.op_type in ("Attention", "LSTM")}
        out[name] = names
    return out


def _original(node: str, names: set[str]) -> bool:
    """Whether the profiled ``node`` is one of ``names``: ONNX Runtime names a node it fuses after the original
    (``<name>/MatMulScaleFusion/``), and exporters put '/' in names too, so every '/'-prefix is tried."""
    return node in names or any(node[:i] in names for i, c in enumerate(node) if c == "/")


def coverage(operators: dict, quantized: dict[str, set[str]]) -> dict[str, Any]:
    """The share of the task call's time spent in ``quantized`` nodes (``operators``: a profile result's operators
    with every node listed, ``top_nodes=None``). The share is of the whole call, measured under the same profiler,
    so time outside the graphs (pre/post-processing, the decoding loop) counts as time int8 cannot shorten."""
    nodes = operators["top_nodes"]
    ops = sum(n["ms_per_call"] for n in nodes)
    wall = max(operators.get("wall_ms_per_call") or ops, ops)
    covered = sum(n["ms_per_call"] for n in nodes if _original(n["node"], quantized.get(n["component"], set())))
    conv = sum(n["ms_per_call"] for n in nodes if "Conv" in n["op_type"])
    return {"quantized_share": covered / wall if wall else 0.0, "conv_share": conv / wall if wall else 0.0,
            "op_share": ops / wall if wall else 0.0, "call_ms": wall,
            "quantized_nodes": sum(len(v) for v in quantized.values())}


def predicted_speedup(quantized_share: float, gemm_speedup: float) -> float:
    """Amdahl: the covered share runs ``gemm_speedup`` times faster plus the dynamic-quantization overhead."""
    return 1.0 / ((1.0 - quantized_share) + quantized_share * (1.0 / gemm_speedup + DYNAMIC_OVERHEAD))


def verdict(speedup: float) -> str:
    if speedup >= MARGIN:
        return "faster"
    return "slower" if speedup <= 1.0 / MARGIN else "about the same"


def measured_verdict(fp32: dict, int8: dict) -> str:
    """``verdict`` of the p50 ratio of two latency summaries, but "about the same" unless the distributions also
    separate (the faster one's p90 under the slower one's p50): a busy machine must not flip the advice."""
    speedup = fp32["p50"] / int8["p50"]
    if speedup >= MARGIN and int8["p90"] < fp32["p50"]:
        return "faster"
    if speedup <= 1.0 / MARGIN and fp32["p90"] < int8["p50"]:
        return "slower"
    return "about the same"


@dataclass
class Int8Advice:
    """The prediction, the measurement (when made) and what to do."""

    device: str
    isa: IsaClass
    coverage: dict[str, Any]
    predicted_speedup: float
    predicted: str
    measured_on: str | None = None
    measured: dict[str, Any] | None = None
    recommendation: str = ""
    notes: tuple[str, ...] = ()

    @property
    def agrees(self) -> bool | None:
        """Whether the measurement confirmed the prediction (None without a measurement)."""
        return None if self.measured is None else self.measured["verdict"] == self.predicted

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agrees": self.agrees, "notes": list(self.notes)}


def _result(profile_result: dict, variant: str) -> dict:
    return next(r for r in profile_result["results"] if r["variant"] == variant)


def advise_int8(package: str | Path, *, device: str | None = None, measure: bool = True, runs: int = 20,
                warmup: int = 3, root: str | Path = "/", options: dict | None = None,
                log: Callable[[str], None] | None = None) -> Int8Advice:
    """Predict whether dynamic int8 makes ``package`` faster on ``device`` (default: this machine) and, with
    ``measure``, quantize a temporary copy and profile fp32 against int8 on ONNX Runtime here."""
    from mmedge.runtime.profiling import profile

    host = detect(root)
    target = device or host.profile
    on_host = target == host.profile
    prof = host.device_profile() if on_host else device_profile(target)
    isa = isa_class(prof.arch if prof.arch != "arm64" else "aarch64", set(host.features) if on_host else set(),
                    prof.has_int8_dot, from_profile=not on_host)
    quantized = quantized_nodes(package)
    notes = []
    common = dict(engines=["onnxruntime"], runs=runs, warmup=warmup, options=options, top_nodes=None,
                  progress=log is not None)
    with tempfile.TemporaryDirectory(prefix="mmedge-int8-advice-") as tmp:
        if measure:
            if log:
                log("quantizing a copy of the package to dynamic int8 (onnxruntime)")
            copy = add_dynamic_int8(package, Path(tmp) / "pkg", variant="int8-advice")
            result = profile(copy, variants=["fp32", "int8-advice"], **common)
        else:
            result = profile(package, variants=["fp32"], **common)
    fp32 = _result(result, "fp32")
    if not fp32["operators"].get("available"):
        raise UsageError(f"ONNX Runtime's profiler gave no per-node times ({fp32['operators'].get('reason')}); "
                         "the advisor needs them for op coverage")
    cov = coverage(fp32["operators"], quantized)
    speedup = predicted_speedup(cov["quantized_share"], isa.gemm_speedup)
    advice = Int8Advice(device=target, isa=isa, coverage=cov, predicted_speedup=speedup, predicted=verdict(speedup))
    if cov["conv_share"] > 0.3:
        notes.append(f"{cov['conv_share']:.0%} of the time is in convolutions, which dynamic int8 leaves in float: "
                     "static int8 (QDQ with calibration) is the recipe for this model")
    if measure:
        int8 = _result(result, "int8-advice")
        measured = fp32["latency_ms"]["p50"] / int8["latency_ms"]["p50"]
        advice.measured_on = host.profile
        advice.measured = {"fp32_p50_ms": fp32["latency_ms"]["p50"], "int8_p50_ms": int8["latency_ms"]["p50"],
                           "speedup": measured, "verdict": measured_verdict(fp32["latency_ms"], int8["latency_ms"]),
                           "size_ratio": int8["files"]["bytes"] / fp32["files"]["bytes"],
                           "accuracy": int8["accuracy"]}
        if not on_host:
            notes.append(f"measured on this machine ({host.profile}), not on {target}: run `mmedge int8-advice` on "
                         f"the {target} itself to confirm there")
        if not advice.agrees:
            notes.append(f"the measurement ({advice.measured['verdict']}, {measured:.2f}x) disagrees with the "
                         f"prediction ({advice.predicted}, {speedup:.2f}x): trust the measurement")
    final = advice.measured["verdict"] if advice.measured and on_host else advice.predicted
    advice.recommendation = {"faster": "quantize to int8 for this device (then check the task metric budget)",
                             "about the same": "int8 only for size: it brings no speed here",
                             "slower": "keep float on this device (int8 only if size matters more than speed)"}[final]
    advice.notes = tuple(notes)
    return advice
