"""Tests of mmedge.devices: detection from fake roots, profiles as data, and the planner's ordering and errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mmedge.devices import (ArtifactRef, DetectedDevice, DeviceProfile, Plan, available_engines, describe, detect,
                            list_profiles, plan, profile)
from mmedge.errors import EngineUnavailableError, UnknownDeviceError, UsageError

ALL = {"onnxruntime": True, "openvino": True, "litert": True}
NONE = {"onnxruntime": False, "openvino": False, "litert": False}
ARM_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
X86_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma"

# --------------------------------------------------------------------------------------------- fake roots


def _write(root: Path, rel: str, data: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def _cpuinfo(n: int, line: str) -> str:
    return "".join(f"processor\t: {i}\n{line}\nBogoMIPS\t: 108.00\n\n" for i in range(n))


def rpi4_root(root: Path) -> Path:
    _write(root, "proc/device-tree/model", b"Raspberry Pi 4 Model B Rev 1.4\0")
    _write(root, "proc/cpuinfo", _cpuinfo(4, f"Features\t: {ARM_FEATURES}") + "Model\t\t: Raspberry Pi 4 Model B\n")
    return root


def rpi5_root(root: Path) -> Path:
    _write(root, "proc/device-tree/model", b"Raspberry Pi 5 Model B Rev 1.0\0")
    _write(root, "proc/cpuinfo", _cpuinfo(4, f"Features\t: {ARM_FEATURES} atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"))
    return root


def jetson_root(root: Path) -> Path:
    _write(root, "proc/device-tree/model", b"NVIDIA Jetson AGX Orin Developer Kit\0")
    _write(root, "etc/nv_tegra_release", "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n")
    _write(root, "proc/cpuinfo", _cpuinfo(12, f"Features\t: {ARM_FEATURES} atomics fphp asimdhp asimddp"))
    return root


def npu_root(root: Path) -> Path:
    _write(root, "proc/cpuinfo", _cpuinfo(8, f"flags\t\t: {X86_FLAGS} avx_vnni"))
    _write(root, "dev/accel/accel0", "")
    return root


def x86_root(root: Path) -> Path:
    _write(root, "proc/cpuinfo", _cpuinfo(6, f"flags\t\t: {X86_FLAGS}"))
    return root


def arts(*specs: str) -> list[ArtifactRef]:
    """'onnx:fp32', 'openvino:int8-static' ... → ArtifactRefs (precision = the variant before '-')."""
    out = []
    for spec in specs:
        fmt, variant = spec.split(":")
        out.append(ArtifactRef(format=fmt, variant=variant, precision=variant.split("-")[0],
                               static=variant.endswith("-static")))
    return out


def order(p: Plan) -> list[tuple[str, str, str]]:
    return [(c.format, c.variant, c.engine) for c in p.choices]


# --------------------------------------------------------------------------------------------- profiles


def test_profiles_are_the_seven_device_classes_and_consistent() -> None:
    names = {p.name for p in list_profiles()}
    assert names == {"x86-cpu", "rpi4", "rpi5", "jetson-orin", "intel-npu", "android", "ios"}
    fmt = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"}
    for p in list_profiles():
        assert isinstance(p, DeviceProfile) and p.preferred and p.arch in ("x86_64", "aarch64", "arm64")
        assert all(fmt[r.engine] == r.format for r in p.preferred)
        json.dumps(p.to_dict())
    assert profile("rpi5").has_int8_dot and not profile("rpi4").has_int8_dot
    assert profile("intel-npu").static_shapes and profile("android").static_shapes and profile("ios").static_shapes
    assert not profile("x86-cpu").static_shapes


def test_profile_data_cannot_be_mutated_through_a_plan_or_a_profile() -> None:
    p = plan(arts("onnx:fp32"), "x86-cpu", available=ALL, cores=3)
    p.choices[0].options["providers"].append("Bogus")
    with pytest.raises(TypeError):
        profile("x86-cpu").preferred[0].options["device"] = "GPU"  # type: ignore[index]
    again = plan(arts("onnx:fp32"), "x86-cpu", available=ALL, cores=3)
    assert again.choices[0].options["providers"] == ["CPUExecutionProvider"]


def test_unknown_device_names_the_known_ones() -> None:
    with pytest.raises(UnknownDeviceError, match="rpi5") as err:
        profile("rpi6")
    assert isinstance(err.value, UsageError)
    with pytest.raises(UnknownDeviceError):
        plan(arts("onnx:fp32"), "toaster", available=ALL)


# --------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize("make, name, cores, int8_dot", [
    (rpi4_root, "rpi4", 4, False),
    (rpi5_root, "rpi5", 4, True),
    (jetson_root, "jetson-orin", 12, True),
    (npu_root, "intel-npu", 8, True),
    (x86_root, "x86-cpu", 6, False),
])
def test_detect_fake_roots(tmp_path: Path, make, name: str, cores: int, int8_dot: bool) -> None:
    d = detect(make(tmp_path))
    assert isinstance(d, DetectedDevice)
    assert (d.profile, d.cores, d.has_int8_dot) == (name, cores, int8_dot)
    assert d.device_profile().has_int8_dot == int8_dot
    assert "proc/cpuinfo" in d.evidence
    json.dumps(d.to_dict())


def test_detect_reads_model_without_nul_and_records_evidence(tmp_path: Path) -> None:
    d = detect(jetson_root(tmp_path))
    assert d.model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert d.evidence["etc/nv_tegra_release"].startswith("# R36")
    assert d.arch == "aarch64" and "asimddp" in d.features
    assert detect(npu_root(tmp_path / "npu")).evidence["dev/accel/accel0"]
    assert detect(rpi4_root(tmp_path / "pi")).evidence["proc/device-tree/model"] == "Raspberry Pi 4 Model B Rev 1.4"


def test_detect_x86_with_vnni_has_int8_dot(tmp_path: Path) -> None:
    _write(tmp_path, "proc/cpuinfo", _cpuinfo(2, f"flags\t\t: {X86_FLAGS} avx512f avx512_vnni"))
    d = detect(tmp_path)
    assert d.profile == "x86-cpu" and d.has_int8_dot and "avx512_vnni" in d.features
    assert d.device_profile().has_int8_dot and not profile("x86-cpu").has_int8_dot


def test_detect_unknown_arm_board_falls_back_with_a_note(tmp_path: Path) -> None:
    _write(tmp_path, "proc/device-tree/model", b"Radxa ROCK 5B\0")
    _write(tmp_path, "proc/cpuinfo", _cpuinfo(8, f"Features\t: {ARM_FEATURES} asimddp"))
    d = detect(tmp_path)
    assert d.profile == "rpi5" and any("no profile" in n for n in d.notes)
    _write(tmp_path, "proc/cpuinfo", _cpuinfo(4, f"Features\t: {ARM_FEATURES}"))
    assert detect(tmp_path).profile == "rpi4"


def test_detect_other_accel_driver_is_not_an_intel_npu(tmp_path: Path) -> None:
    x86_root(tmp_path)
    _write(tmp_path, "dev/accel/accel0", "")
    (tmp_path / "sys/class/accel/accel0/device").mkdir(parents=True)
    (tmp_path / "drivers/amdxdna").mkdir(parents=True)
    (tmp_path / "sys/class/accel/accel0/device/driver").symlink_to(tmp_path / "drivers/amdxdna")
    assert detect(tmp_path).profile == "x86-cpu"


def test_detect_empty_root_has_unknown_cores_and_notes(tmp_path: Path) -> None:
    d = detect(tmp_path)
    assert d.profile == "x86-cpu" and d.cores is None and d.notes


def test_detect_live_machine_and_engines_without_importing_them() -> None:
    before = set(sys.modules)
    d = detect("/")
    engines = available_engines()
    assert d.cores and d.cores >= 1
    assert set(engines) >= {"onnxruntime", "openvino", "litert"} and all(isinstance(v, bool) for v in engines.values())
    assert not {"onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime"} & (set(sys.modules) - before)


def test_describe_is_json(tmp_path: Path) -> None:
    out = json.loads(json.dumps(describe(rpi5_root(tmp_path))))
    assert out["detected"]["profile"] == "rpi5" and out["detected"]["cores"] == 4
    assert out["detected"]["evidence"]["proc/device-tree/model"].startswith("Raspberry Pi 5")
    assert {p["name"] for p in out["profiles"]} >= {"rpi4", "ios"} and set(out["engines"]) >= {"litert"}
    json.dumps(describe())


@pytest.mark.parametrize("make_root, first_cpu_precision", [(rpi4_root, "fp32"), (rpi5_root, "int8")])
def test_describe_lists_the_detected_routes_with_their_options(tmp_path: Path, make_root, first_cpu_precision) -> None:
    out = describe(make_root(tmp_path))
    assert [(r["rank"], r["engine"], r["accelerator"]) for r in out["routes"]] == [
        (1, "litert", "xnnpack"), (2, "onnxruntime", "CPUExecutionProvider")]
    assert all(r["precisions"][0] == first_cpu_precision for r in out["routes"])
    litert, ort = out["routes"]
    assert litert["options"]["num_threads"] == 4 and ort["options"]["intra_op_num_threads"] == 4  # the Pi's cores
    assert ort["options"]["lean_memory"] is True


def test_describe_shows_another_profiles_routes_without_this_machines_cores(tmp_path: Path, monkeypatch) -> None:
    import mmedge.devices.summary as summary

    monkeypatch.setattr(summary, "available_engines", lambda: {**ALL, "onnxruntime": False})
    out = describe(rpi5_root(tmp_path), profile_name="jetson-orin")
    assert out["detected"]["profile"] == "rpi5" and out["profile"]["name"] == "jetson-orin"
    trt, cuda, cpu, litert = out["routes"]
    assert trt["accelerator"] == "TensorrtExecutionProvider" and trt["precisions"] == ["fp16", "fp32", "int8"]
    assert trt["options"]["provider_options"]["TensorrtExecutionProvider"]["trt_engine_cache_enable"] is True
    assert cpu["options"]["intra_op_num_threads"] is None       # the Jetson's core count is not this machine's
    assert not trt["installed"] and trt["fix"] == "pip install 'mmedge[ort]'" and litert["installed"]
    with pytest.raises(UnknownDeviceError, match="toaster"):
        describe(tmp_path, profile_name="toaster")


# --------------------------------------------------------------------------------------------- planner


def test_rpi5_prefers_int8_rpi4_prefers_fp32_and_litert_first() -> None:
    package = arts("onnx:fp32", "onnx:int8", "tflite:fp32", "tflite:int8")
    pi5 = plan(package, "rpi5", available=ALL, cores=4)
    assert order(pi5) == [("tflite", "int8", "litert"), ("tflite", "fp32", "litert"),
                          ("onnx", "int8", "onnxruntime"), ("onnx", "fp32", "onnxruntime")]
    assert pi5.choices[0].options == {"num_threads": 4, "delegate": "xnnpack"}
    assert "dot product" in pi5.choices[0].reason
    pi4 = plan(package, "rpi4", available=ALL, cores=4)
    assert order(pi4) == [("tflite", "fp32", "litert"), ("tflite", "int8", "litert"),
                          ("onnx", "fp32", "onnxruntime"), ("onnx", "int8", "onnxruntime")]
    assert pi4.choices[2].options["intra_op_num_threads"] == 4


def test_detected_device_carries_its_int8_trait_and_cores(tmp_path: Path) -> None:
    _write(tmp_path, "proc/cpuinfo", _cpuinfo(16, f"flags\t\t: {X86_FLAGS} avx_vnni"))
    p = plan(arts("onnx:fp32", "onnx:int8"), detect(tmp_path), available=ALL)
    assert order(p)[0] == ("onnx", "int8", "onnxruntime")
    assert p.choices[0].options["intra_op_num_threads"] == 16
    assert order(plan(arts("onnx:fp32", "onnx:int8"), "x86-cpu", available=ALL))[0] == ("onnx", "fp32", "onnxruntime")


def test_jetson_orders_tensorrt_cuda_cpu() -> None:
    p = plan(arts("onnx:fp16", "onnx:fp32"), "jetson-orin", available=ALL, cores=12)
    firsts = [c.options["providers"][0] for c in p.choices]
    assert firsts == ["TensorrtExecutionProvider", "TensorrtExecutionProvider", "CUDAExecutionProvider",
                      "CUDAExecutionProvider", "CPUExecutionProvider", "CPUExecutionProvider"]
    assert p.choices[0].precision == "fp16" and p.choices[-2].precision == "fp32"
    assert p.choices[0].options["providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                 "CPUExecutionProvider"]
    assert all(c.reason for c in p.choices)


def test_npu_route_takes_static_artifacts_only_dynamic_serve_the_fallbacks() -> None:
    p = plan(arts("openvino:fp16", "openvino:fp16-static"), "intel-npu", available=ALL, cores=8)
    devices = [(c.options.get("device"), c.variant) for c in p.choices]
    assert devices[0] == ("NPU", "fp16-static")
    assert ("NPU", "fp16") not in devices and ("CPU", "fp16") in devices and ("GPU", "fp16") in devices
    assert any("static" in why and "NPU" in what for what, why in p.skipped)
    assert p.choices[-1].options == {"device": "CPU", "INFERENCE_PRECISION_HINT": "f32"}
    dynamic_only = plan(arts("openvino:fp32"), "intel-npu", available=ALL)
    assert [c.options["device"] for c in dynamic_only.choices] == ["GPU", "CPU"]


def test_phones_prefer_static_artifacts() -> None:
    p = plan(arts("tflite:fp32", "tflite:fp32-static"), "android", available=ALL, cores=8)
    assert [c.variant for c in p.choices][:2] == ["fp32-static", "fp32"]
    assert p.choices[0].options == {"num_threads": 4, "delegate": "gpu"}   # phones keep their explicit 4 threads
    ios = plan(arts("onnx:fp16"), "ios", available=ALL)
    assert ios.choices[0].options["providers"][0] == "CoreMLExecutionProvider"
    x86 = plan(arts("onnx:fp32", "onnx:fp32-static"), "x86-cpu", available=ALL)
    assert [c.variant for c in x86.choices] == ["fp32", "fp32-static"]


def test_missing_engine_goes_to_skipped_with_install_hint() -> None:
    p = plan(arts("onnx:fp32", "tflite:fp32"), "rpi4", available={"onnxruntime": True, "litert": False}, cores=4)
    assert order(p) == [("onnx", "fp32", "onnxruntime")]
    assert ("tflite/fp32 on litert (xnnpack)", "engine not installed: pip install 'mmedge[litert]'") in p.skipped
    assert p.fixes == ["pip install 'mmedge[litert]'"]


def test_tflite_runtime_serves_float_files_only() -> None:
    avail = {"onnxruntime": False, "openvino": False, "litert": False, "tflite_runtime": True}
    p = plan(arts("tflite:fp32", "tflite:int8"), "rpi5", available=avail, cores=4)
    assert order(p) == [("tflite", "fp32", "litert")] and p.choices[0].options["runtime"] == "tflite_runtime"
    assert any(what.startswith("tflite/int8") and "mmedge[litert]" in why for what, why in p.skipped)


def test_forced_engine_and_variant() -> None:
    package = arts("onnx:fp32", "onnx:int8", "openvino:fp32", "tflite:fp32")
    p = plan(package, "x86-cpu", engine="openvino", available=ALL)
    assert order(p) == [("openvino", "fp32", "openvino")] and "--engine" in p.choices[0].reason
    p = plan(package, "x86-cpu", variant="int8", available=ALL)
    assert order(p) == [("onnx", "int8", "onnxruntime")]
    with pytest.raises(UsageError, match="onnxruntime"):
        plan(package, "x86-cpu", engine="tensorflow", available=ALL)
    with pytest.raises(UsageError, match="offers"):
        plan(package, "x86-cpu", variant="int4", available=ALL)
    no_route = plan(package, "jetson-orin", engine="openvino", available=ALL)
    assert not no_route.choices and any("--engine" in f for f in no_route.fixes)


def test_require_raises_engine_unavailable_naming_the_fix() -> None:
    with pytest.raises(EngineUnavailableError, match=r"pip install 'mmedge\[ort\]'"):
        plan(arts("onnx:fp32"), "x86-cpu", available=NONE).require()
    with pytest.raises(EngineUnavailableError, match="--formats tflite"):
        plan(arts("openvino:fp32"), "rpi5", available=ALL).require()
    ok = plan(arts("onnx:fp32"), "x86-cpu", available=ALL)
    assert ok.require() is ok


def test_plan_to_dict_is_json() -> None:
    p = plan(arts("onnx:fp32", "openvino:fp32"), "jetson-orin", available={"onnxruntime": False}, cores=2)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["device"] == "jetson-orin" and d["choices"] == [] and d["skipped"] and d["fixes"]
    assert any(s[0] == "openvino/fp32" for s in d["unused"])


def test_jetson_tensorrt_route_takes_qdq_int8_last_and_npu_routes_carry_hints() -> None:
    p = plan(arts("onnx:fp16", "onnx:fp32", "onnx:int8"), "jetson-orin", available=ALL, cores=6)
    trt = [c for c in p.choices if c.options["providers"][0] == "TensorrtExecutionProvider"]
    assert [c.precision for c in trt] == ["fp16", "fp32", "int8"]
    assert trt[0].options["provider_options"]["TensorrtExecutionProvider"]["trt_engine_cache_enable"] is True
    assert trt[0].options["dla"] is False
    cuda = [c for c in p.choices if c.options["providers"][0] == "CUDAExecutionProvider"]
    assert "int8" not in {c.precision for c in cuda}
    npu = plan(arts("openvino:fp16-static"), "intel-npu", available=ALL)
    assert npu.choices[0].options == {"device": "NPU", "PERFORMANCE_HINT": "LATENCY"}
    assert profile("jetson-orin").notes and "Jetson Zoo" in profile("jetson-orin").notes
