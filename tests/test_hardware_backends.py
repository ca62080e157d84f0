"""Hardware backends without the hardware: Jetson (TensorRT/CUDA EPs) and Intel NPU (OpenVINO) through fakes.

A fake ``onnxruntime`` records the providers and provider options each session gets (and fails on demand); a
fake ``openvino`` has a device list and a compile that fails or succeeds. Packages are hand-written manifests
over empty files: nothing here reads a model, so the whole module runs in about a second.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest

from mmedge.devices import detect, plan
from mmedge.errors import EngineUnavailableError, UsageError
from mmedge.runtime.accelerators import FileContext, file_options
from mmedge.runtime.accelerators.tensorrt import shape_profiles
from mmedge.runtime.engines import openvino as ov_engine
from mmedge.runtime.loader import load_runners
from mmedge.runtime.manifest import Artifact, Component, Manifest, Signature, TensorSpec
from mmedge.runtime.package import Package

from test_devices import ARM_FEATURES, X86_FLAGS, _cpuinfo, _write, arts

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
ALL_ENGINES = {"onnxruntime": True, "openvino": True, "litert": True}

# --------------------------------------------------------------------------------------------- a package


def _decoder_inputs(past: int | str, seq: int | str, total: int | str) -> tuple[TensorSpec, ...]:
    cache = (2, "batch" if isinstance(past, str) else 1, 4, past, 8)
    batch = "batch" if isinstance(seq, str) else 1
    return (TensorSpec("input_ids", "int64", (batch, seq), "input_ids", ("batch", "sequence")),
            TensorSpec("attention_mask", "int64", (batch, total), "attention_mask", ("batch", "total_sequence")),
            TensorSpec("past_keys", "float32", cache, "past_keys", (None, "batch", None, "past_sequence", None)))


def _artifact(fmt: str, variant: str, static: bool, signatures: dict[str, tuple[TensorSpec, ...]]) -> Artifact:
    ext = "onnx" if fmt == "onnx" else "xml"
    sigs = {name: Signature(name, f"{fmt}/{variant}-{name}.{ext}", inputs,
                            (TensorSpec("logits", "float32", (1, 1, 16)),)) for name, inputs in signatures.items()}
    return Artifact(format=fmt, variant=variant, precision=variant.split("-")[0], static=static,
                    file=next(iter(sigs.values())).file, signatures=sigs)


def _package(root: Path, variants: list[tuple[str, str]]) -> Package:
    """A decoder package with the given (format, variant)s; '-static' ones have a decode and a prefill graph."""
    artifacts = []
    for fmt, variant in variants:
        if variant.endswith("-static"):
            sigs = {"decode": _decoder_inputs(64, 1, 65), "prefill_16": _decoder_inputs(64, 16, 80)}
        else:
            sigs = {"default": _decoder_inputs("past_sequence", "sequence", "total_sequence")}
        artifacts.append(_artifact(fmt, variant, variant.endswith("-static"), sigs))
    for a in artifacts:
        for rel in a.files():
            _write(root, rel, b"")
    manifest = Manifest(family="causal-lm", task="text-generation",
                        components={"decoder": Component("decoder", "", tuple(artifacts))},
                        generation={"cache": {"layers": 2, "kv_heads": 4, "head_dim": 8, "max_positions": 128,
                                              "max_cache_len": 64, "prompt_buckets": [16]}},
                        files={rel: "0" * 64 for a in artifacts for rel in a.files()})
    return Package(root=root, manifest=manifest)


# --------------------------------------------------------------------------------------------- fake engines


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)   # so find_spec() sees it as installed
    mod.__dict__.update(attrs)
    return mod


@pytest.fixture
def fake_ort(monkeypatch):
    """A fake onnxruntime: ``state.available`` providers; sessions whose first provider is in ``state.fail`` raise."""
    state = types.SimpleNamespace(available=[TRT, CUDA, CPU], fail=set(), drop=set(), sessions=[])

    class SessionOptions:
        def add_session_config_entry(self, key, value):
            pass

    class InferenceSession:
        def __init__(self, path, sess_options=None, providers=()):
            names = [p for p, _ in providers]
            if names[0] in state.fail:
                raise RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : {names[0]} could not build an engine: "
                                   "unsupported op NonZero")
            self.providers, self.path = list(providers), path
            state.sessions.append(self)

        def get_providers(self):
            return [p for p, _ in self.providers if p not in state.drop]

        def get_outputs(self):
            return []

    monkeypatch.setitem(sys.modules, "onnxruntime", _module(
        "onnxruntime", __version__="1.99-fake", SessionOptions=SessionOptions, InferenceSession=InferenceSession,
        get_available_providers=lambda: list(state.available)))
    return state


@pytest.fixture
def fake_ov(monkeypatch, tmp_path):
    """A fake openvino: ``state.devices`` listed; compiling for a device in ``state.fail`` raises."""
    state = types.SimpleNamespace(devices=["CPU", "GPU", "NPU"], fail=set(), compiled=[], dynamic_ir=False)

    class Partial:
        def __init__(self, shape):
            self.shape, self.is_dynamic = shape, state.dynamic_ir

        def to_shape(self):
            return self.shape

    class Port:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

        def get_any_name(self):
            return self.name

        def get_partial_shape(self):
            return Partial(self.shape)

    class Model:
        def __init__(self, path: str):
            specs = _decoder_inputs(64, 16, 80) if "prefill_16" in path else _decoder_inputs(64, 1, 65)
            self.inputs = [Port(t.bound_name, list(t.shape)) for t in specs]
            self.outputs = []  # the engine names outputs from the read model (Compiled has none here either)
            self.reshaped = None

        def reshape(self, shapes):
            self.reshaped = shapes

    class Compiled:
        outputs = []

        def __init__(self, device):
            self.device = device

        def create_infer_request(self):
            return None

        def get_property(self, name):
            return [self.device]

    class Core:
        available_devices = property(lambda self: list(state.devices))

        def read_model(self, path):
            return Model(path)

        def compile_model(self, model, device, config):
            if device in state.fail:
                raise RuntimeError(f"Exception from src/plugins/intel_npu: compiler: unsupported operation Loop")
            state.compiled.append((device, dict(config), model))
            return Compiled(device)

    monkeypatch.setitem(sys.modules, "openvino", _module("openvino", Core=Core, get_version=lambda: "fake"))
    monkeypatch.setattr(ov_engine, "DEVICE_ROOT", str(tmp_path / "root"))
    return state


def _trt_options(session) -> dict:
    return dict(session.providers)[TRT]


# --------------------------------------------------------------------------------------------- Jetson


@pytest.mark.parametrize("variant, int8", [("fp16", False), ("fp32", False), ("int8", True)])
def test_jetson_tensorrt_options_per_precision(tmp_path, fake_ort, variant, int8) -> None:
    package = _package(tmp_path / "pkg", [("onnx", variant)])
    _, ran = load_runners(package, device="jetson-orin", variant=variant, options={"cache_dir": str(tmp_path / "c")})
    session = fake_ort.sessions[-1]
    assert [p for p, _ in session.providers] == [TRT, CUDA, CPU]
    trt = _trt_options(session)
    assert trt["trt_fp16_enable"] is True and trt["trt_int8_enable"] is int8
    cuda = dict(session.providers)[CUDA]
    assert cuda == {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}
    assert ran.components["decoder"]["providers"] == [TRT, CUDA, CPU] and not ran.fallbacks


def test_jetson_caches_go_under_the_cache_dir_per_package_and_component(tmp_path, fake_ort) -> None:
    package = _package(tmp_path / "pkg", [("onnx", "fp16")])
    load_runners(package, device="jetson-orin", options={"cache_dir": str(tmp_path / "cache")})
    trt = _trt_options(fake_ort.sessions[-1])
    folder = Path(trt["trt_engine_cache_path"])
    assert trt["trt_engine_cache_enable"] and trt["trt_timing_cache_enable"]
    assert trt["trt_timing_cache_path"] == str(folder) and folder.is_dir()
    assert folder.parent.parent == tmp_path / "cache" / "trt" and folder.name == "decoder"
    assert folder.parent.name.startswith("pkg-")


def test_default_cache_root_follows_the_environment(tmp_path, monkeypatch, fake_ort) -> None:
    monkeypatch.setenv("MMEDGE_CACHE_DIR", str(tmp_path / "env-cache"))
    load_runners(_package(tmp_path / "pkg", [("onnx", "fp16")]), device="jetson-orin")
    assert _trt_options(fake_ort.sessions[-1])["trt_engine_cache_path"].startswith(str(tmp_path / "env-cache" / "trt"))


def test_shape_profiles_for_a_dynamic_decoder_follow_the_manifest_limits(tmp_path, fake_ort) -> None:
    load_runners(_package(tmp_path / "pkg", [("onnx", "fp16")]), device="jetson-orin",
                 options={"cache_dir": str(tmp_path)})
    trt = _trt_options(fake_ort.sessions[-1])
    # max_positions 128, max_cache_len 64: past 0 / 32 / 127, total 1 / 33 / 128, batch 1 / 1 / 16
    assert trt["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1,past_keys:2x1x4x0x8"
    assert trt["trt_profile_opt_shapes"] == "input_ids:1x1,attention_mask:1x33,past_keys:2x1x4x32x8"
    assert trt["trt_profile_max_shapes"] == "input_ids:16x128,attention_mask:16x128,past_keys:2x16x4x127x8"


def test_static_files_need_no_profiles_and_encoders_use_the_text_length() -> None:
    static = _decoder_inputs(64, 1, 65)
    assert shape_profiles(Signature("decode", "f", static, ()), {"max_positions": 128}, {}) == {}
    text = (TensorSpec("input_ids", "int64", ("batch", "sequence")),)
    profiles = shape_profiles(Signature("default", "f", text, ()), {"text_length": 77}, {"trt_max_batch": 4})
    assert profiles["trt_profile_opt_shapes"] == "input_ids:1x77" and profiles["trt_profile_max_shapes"] == "input_ids:4x77"


def test_user_profiles_and_fp16_choice_win(tmp_path, fake_ort) -> None:
    mine = {TRT: {"trt_fp16_enable": False, "trt_profile_min_shapes": "input_ids:1x1"}}
    load_runners(_package(tmp_path / "pkg", [("onnx", "fp32")]), device="jetson-orin",
                 options={"cache_dir": str(tmp_path), "provider_options": mine})
    trt = _trt_options(fake_ort.sessions[-1])
    assert trt["trt_fp16_enable"] is False and trt["trt_profile_min_shapes"] == "input_ids:1x1"
    assert "trt_profile_max_shapes" not in trt


def _orin_root(root: Path, model: str, compatible: str = "nvidia,p3701-0005") -> Path:
    _write(root, "proc/device-tree/model", model.encode() + b"\0")
    _write(root, "proc/device-tree/compatible", compatible.encode() + b"\0nvidia,tegra234\0")
    _write(root, "etc/nv_tegra_release", "# R36 (release), REVISION: 4.0\n")
    _write(root, "proc/cpuinfo", _cpuinfo(6, f"Features\t: {ARM_FEATURES} asimddp"))
    return root


@pytest.mark.parametrize("model, compatible, cores", [
    ("NVIDIA Jetson Orin Nano Developer Kit", "nvidia,p3767-0005", 0),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "nvidia,p3767-0000", 2),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "nvidia,p3767-0001", 1),
    ("NVIDIA Jetson AGX Orin Developer Kit", "nvidia,p3701-0005", 2),
])
def test_detect_orin_modules_and_their_dla_cores(tmp_path, model, compatible, cores) -> None:
    d = detect(_orin_root(tmp_path, model, compatible))
    assert d.profile == "jetson-orin" and d.dla_cores == cores
    assert "DLA" in d.evidence["jetson module"] and d.to_dict()["dla_cores"] == cores


@pytest.mark.parametrize("model, dla", [("NVIDIA Jetson Orin Nano Developer Kit", False),
                                        ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", True),
                                        ("NVIDIA Jetson AGX Orin Developer Kit", True)])
def test_dla_only_on_orin_nx_and_agx_and_only_when_asked(tmp_path, model, dla) -> None:
    package = _package(tmp_path / "pkg", [("onnx", "fp16")])
    artifact = package.manifest.components["decoder"].artifacts[0]
    context = FileContext.of(package, "decoder", detect(_orin_root(tmp_path / "root", model)))
    base = {"providers": [TRT, CUDA, CPU], "cache_dir": str(tmp_path / "c")}
    asked = file_options("onnxruntime", {**base, "dla": True, "dla_core": 1}, artifact, artifact.default, context)
    trt = asked["provider_options"][TRT]
    assert trt.get("trt_dla_enable", False) is dla
    assert (trt.get("trt_dla_core") == 1) if dla else any("no DLA" in f["why"] for f in asked["fallbacks"])
    not_asked = file_options("onnxruntime", base, artifact, artifact.default, context)["provider_options"][TRT]
    assert "trt_dla_enable" not in not_asked


def test_missing_tensorrt_and_cuda_eps_fall_back_with_the_jetson_install_hint(tmp_path, fake_ort, monkeypatch) -> None:
    fake_ort.available = [CPU]                           # what the PyPI aarch64 wheel has
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    _, ran = load_runners(_package(tmp_path / "pkg", [("onnx", "fp16")]), device="jetson-orin",
                          options={"cache_dir": str(tmp_path)})
    assert [p for p, _ in fake_ort.sessions[-1].providers] == [CPU]
    missing = {f["what"]: f["why"] for f in ran.fallbacks}
    assert set(missing) >= {TRT, CUDA}
    assert "Jetson Zoo" in missing[TRT] and "onnxruntime-gpu" in missing[TRT] and "JetPack" in missing[CUDA]


def test_tensorrt_session_failure_falls_back_to_cuda_then_cpu(tmp_path, fake_ort) -> None:
    fake_ort.fail = {TRT}
    _, ran = load_runners(_package(tmp_path / "pkg", [("onnx", "fp16")]), device="jetson-orin",
                          options={"cache_dir": str(tmp_path)})
    assert ran.components["decoder"]["providers"] == [CUDA, CPU]
    assert any(f["what"] == TRT and "NonZero" in f["why"] and CUDA in f["why"] for f in ran.fallbacks)
    fake_ort.fail = {TRT, CUDA}
    _, ran = load_runners(_package(tmp_path / "pkg2", [("onnx", "fp16")]), device="jetson-orin",
                          options={"cache_dir": str(tmp_path)})
    assert ran.components["decoder"]["providers"] == [CPU]
    assert [f["what"] for f in ran.fallbacks if f["what"] in (TRT, CUDA)] == [TRT, CUDA]


def test_a_provider_ort_silently_drops_is_reported(tmp_path, fake_ort) -> None:
    fake_ort.drop = {TRT}
    _, ran = load_runners(_package(tmp_path / "pkg", [("onnx", "fp16")]), device="jetson-orin",
                          options={"cache_dir": str(tmp_path)})
    assert any(f["what"] == TRT and "did not register" in f["why"] for f in ran.fallbacks)


# --------------------------------------------------------------------------------------------- Raspberry Pi


def test_pi_cpu_routes_threads_and_int8_only_with_dot_product_unless_forced() -> None:
    package = arts("onnx:fp32", "onnx:int8", "tflite:fp32", "tflite:int8")
    pi4 = plan(package, "rpi4", available=ALL_ENGINES, cores=4)
    assert pi4.choices[0].options == {"num_threads": 4, "delegate": "xnnpack"} and pi4.choices[0].precision == "fp32"
    assert pi4.choices[2].options["intra_op_num_threads"] == 4 and pi4.choices[2].options["lean_memory"]
    forced = plan(package, "rpi4", variant="int8", available=ALL_ENGINES, cores=4)
    assert forced.choices[0].precision == "int8" and "forced by --variant" in forced.choices[0].reason
    assert plan(package, "rpi5", available=ALL_ENGINES, cores=4).choices[0].precision == "int8"


# --------------------------------------------------------------------------------------------- Intel NPU


def test_npu_static_artifact_gets_cache_dir_and_performance_hint(tmp_path, fake_ov) -> None:
    package = _package(tmp_path / "pkg", [("openvino", "fp16-static"), ("openvino", "fp16")])
    _, ran = load_runners(package, device="intel-npu", options={"cache_dir": str(tmp_path / "c")})
    assert (ran.engine, ran.variant) == ("openvino", "fp16-static")
    devices = {d for d, _, _ in fake_ov.compiled}
    assert devices == {"NPU"} and len(fake_ov.compiled) == 2        # decode + prefill_16
    config = fake_ov.compiled[0][1]
    assert config["PERFORMANCE_HINT"] == "LATENCY" and "INFERENCE_PRECISION_HINT" not in config
    assert Path(config["CACHE_DIR"]).is_dir() and Path(config["CACHE_DIR"]).parts[-3] == "openvino"
    assert ran.components["decoder"]["execution_devices"] == ["NPU"]


def test_npu_throughput_hint_compiler_type_and_typos(tmp_path, fake_ov) -> None:
    package = _package(tmp_path / "pkg", [("openvino", "fp16-static")])
    load_runners(package, device="intel-npu",
                 options={"cache_dir": str(tmp_path), "PERFORMANCE_HINT": "throughput", "NPU_COMPILER_TYPE": "DRIVER"})
    config = fake_ov.compiled[-1][1]
    assert config["PERFORMANCE_HINT"] == "THROUGHPUT" and config["NPU_COMPILER_TYPE"] == "DRIVER"
    with pytest.raises(UsageError, match="DRIVER, PLUGIN"):
        load_runners(package, device="intel-npu", options={"cache_dir": str(tmp_path), "NPU_COMPILER_TYPE": "MLIR"})


def test_npu_reshapes_a_dynamic_ir_to_the_manifest_static_contract(tmp_path, fake_ov) -> None:
    fake_ov.dynamic_ir = True
    _, ran = load_runners(_package(tmp_path / "pkg", [("openvino", "fp16-static")]), device="intel-npu",
                          options={"cache_dir": str(tmp_path)})
    model = fake_ov.compiled[0][2]
    assert model.reshaped["past_keys"] == [2, 1, 4, 64, 8] and ran.components["decoder"]["reshaped_to_manifest"]


def test_npu_skips_dynamic_artifacts_in_the_plan_and_refuses_them_when_forced(tmp_path, fake_ov) -> None:
    package = _package(tmp_path / "pkg", [("openvino", "fp16")])
    _, ran = load_runners(package, device="intel-npu", options={"cache_dir": str(tmp_path)})
    assert fake_ov.compiled[-1][0] == "GPU"
    assert any("NPU" in f["what"] and "static shapes only" in f["why"] for f in ran.fallbacks)
    artifact = package.manifest.components["decoder"].artifacts[0]
    forced = file_options("openvino", {"device": "NPU", "cache_dir": str(tmp_path)}, artifact, artifact.default,
                          FileContext.of(package, "decoder", None))
    with pytest.raises(EngineUnavailableError, match="--static"):
        ov_engine.OpenVinoSession(tmp_path / "x.xml", forced)


def test_npu_compile_failure_falls_back_to_gpu_then_cpu(tmp_path, fake_ov) -> None:
    package = _package(tmp_path / "pkg", [("openvino", "fp16-static")])
    fake_ov.fail = {"NPU"}
    _, ran = load_runners(package, device="intel-npu", options={"cache_dir": str(tmp_path)})
    assert ran.components["decoder"]["device"] == "GPU"
    assert any("NPU compiler rejected" in f["why"] and "Loop" in f["why"] for f in ran.fallbacks)
    fake_ov.fail = {"NPU", "GPU"}
    _, ran = load_runners(package, device="intel-npu", options={"cache_dir": str(tmp_path)})
    assert ran.components["decoder"]["device"] == "CPU"
    assert ran.components["decoder"]["options"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_npu_missing_driver_messages(tmp_path, fake_ov) -> None:
    package = _package(tmp_path / "pkg", [("openvino", "fp16-static")])
    fake_ov.devices = ["CPU"]
    _, ran = load_runners(package, device="intel-npu", options={"cache_dir": str(tmp_path)})
    whys = " | ".join(f["why"] for f in ran.fallbacks)
    assert "no /dev/accel" in whys and "linux-npu-driver" in whys and ran.components["decoder"]["device"] == "CPU"
    _write(Path(ov_engine.DEVICE_ROOT), "dev/accel/accel0", "")
    _, ran = load_runners(package, device="intel-npu", options={"cache_dir": str(tmp_path)})
    assert any("not in OpenVINO's devices" in f["why"] and "/dev/accel/accel0 exists" in f["why"] for f in ran.fallbacks)


def test_detect_intel_npu_from_accel_node_or_openvino_devices(tmp_path) -> None:
    _write(tmp_path, "proc/cpuinfo", _cpuinfo(8, f"flags\t\t: {X86_FLAGS} avx_vnni"))
    assert detect(tmp_path).profile == "x86-cpu"
    from_ov = detect(tmp_path, openvino_devices=["CPU", "GPU.0", "NPU"])
    assert from_ov.profile == "intel-npu" and "NPU" in from_ov.evidence["openvino"]
    _write(tmp_path, "dev/accel/accel0", "")
    assert detect(tmp_path).profile == "intel-npu"


def test_litert_reports_whether_xnnpack_really_ran(clip_package, monkeypatch):
    """The delegate in ``ran`` is what LiteRT applied (delegate nodes counted), not the option that asked for it;
    a skipped XNNPACK (LiteRT's CPU check failed, as under emulation without a CPU topology) is a fallback."""
    from mmedge import runtime
    from mmedge.runtime.engines import litert

    info = runtime.load(clip_package, engine="litert").ran.to_dict()["components"]["vision"]
    assert info["delegate"] == "xnnpack" and info["delegated_nodes"] >= 1 and info["fallbacks"] == []
    monkeypatch.setattr(litert, "_delegated_nodes", lambda interpreter: 0)
    ran = runtime.load(clip_package, engine="litert").ran.to_dict()
    assert ran["components"]["vision"]["delegate"] == "none"
    assert any(f["what"] == "xnnpack" and "reference kernels" in f["why"] for f in ran["fallbacks"])
