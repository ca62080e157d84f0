"""Bad-input catalogue, first table (docs/bad-inputs.md, "Packages, model files, devices, engines, disks").

Each ``Case`` is one row of that table and one test: it damages a copy of the tiny CLIP package (or picks a bad
device, engine, feed or output path), makes the call, and checks the error's exact type and that its message names
the fix. CLI rows check the exit code and the one-line ``mmedge: error:`` message instead; the disk rows also check
that nothing half-written is left that opens as a package and that an existing package is intact.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmedge import errors, runtime
from mmedge.cli.main import main
from mmedge.errors import MmedgeError
from mmedge.runtime.manifest import MANIFEST_NAME

ONNX = "text/onnx-fp32/model.onnx"
ONNX_WEIGHTS = "text/onnx-fp32/weights.onnx_data"
OV_XML, OV_BIN = "text/openvino-fp32/model.xml", "text/openvino-fp32/model.bin"
TFLITE = "text/tflite-fp32-static/model.tflite"
#: the engine and variant that reads each damaged file
ENGINE_OF = {ONNX: ("onnxruntime", "fp32"), ONNX_WEIGHTS: ("onnxruntime", "fp32"), OV_XML: ("openvino", "fp32"),
             OV_BIN: ("openvino", "fp32"), TFLITE: ("litert", "fp32-static")}
OV_OPTIONS = {"INFERENCE_PRECISION_HINT": "f32"}
#: a write limit below the tiny CLIP's 200 kB weight files: the "full disk" of the disk rows
FILE_SIZE_LIMIT = 150_000


@dataclass
class Ctx:
    """What a case gets: a private copy of the package, a scratch folder, the tiny model's source directory."""

    pkg: Path
    tmp: Path
    model: Path
    monkeypatch: pytest.MonkeyPatch
    cleanup: contextlib.ExitStack
    before: bytes = b""  # the manifest before a failed in-place update


@dataclass(frozen=True)
class Exit:
    """A CLI outcome: the exit code and what went to stderr."""

    code: int
    stderr: str


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Ctx], Callable[[], Any]]  # damages/prepares, returns the call that must fail
    error: type[MmedgeError]
    says: str  # a fragment of the message: the fix
    after: Callable[[Ctx], None] | None = field(default=None)  # what must hold afterwards (nothing half-written)
    slow: bool = False  # a second export in a subprocess: run in the slow stage


def last_line(stderr: str) -> str:
    """The CLI's error line (progress lines come before it on stderr)."""
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else ""


def cli(*argv: str) -> Exit:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    return Exit(code, last_line(err.getvalue()))


def cli_limited(*argv: str, limit: int = FILE_SIZE_LIMIT) -> Exit:
    """``mmedge ARGV`` in a subprocess that cannot write files over ``limit`` bytes (RLIMIT_FSIZE, SIGXFSZ ignored:
    a write fails with EFBIG as on a full disk), so the test's own process keeps writing normally."""
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "from mmedge.cli.main import main\n"
              "hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, hard))\n"
              "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return Exit(proc.returncode, last_line(proc.stderr))


def load(pkg: Path, **kwargs) -> Callable[[], Any]:
    kwargs.setdefault("device", "x86-cpu")
    if kwargs.get("engine") == "openvino":
        kwargs.setdefault("options", OV_OPTIONS)
    return lambda: runtime.load(pkg, **kwargs)


def edit_manifest(pkg: Path, edit: Callable[[dict], Any]) -> None:
    path = pkg / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def damage(rel: str, how: str, *, verify: bool = False) -> Callable[[Ctx], Callable[[], Any]]:
    """Truncate, empty or overwrite one model file with random bytes, then load the variant that reads it."""
    def make(c: Ctx) -> Callable[[], Any]:
        target = c.pkg / rel
        data = target.read_bytes()
        target.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                            "garbage": np.random.default_rng(0).bytes(len(data))}[how])
        engine, variant = ENGINE_OF[rel]
        return load(c.pkg, engine=engine, variant=variant, verify=verify)
    return make


def manifest(edit: Callable[[dict], Any], *, verify: bool = True) -> Callable[[Ctx], Callable[[], Any]]:
    def make(c: Ctx) -> Callable[[], Any]:
        edit_manifest(c.pkg, edit)
        return load(c.pkg, engine="onnxruntime", variant="fp32", verify=verify)
    return make


def raw_manifest(content: bytes) -> Callable[[Ctx], Callable[[], Any]]:
    def make(c: Ctx) -> Callable[[], Any]:
        (c.pkg / MANIFEST_NAME).write_bytes(content)
        return load(c.pkg)
    return make


def set_artifact_file(value: str) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        art = d["components"]["text"]["artifacts"][0]
        art["file"] = art["signatures"]["default"]["file"] = value
    return edit


def symlink_outside(c: Ctx) -> Callable[[], Any]:
    """The model file replaced by a symlink to an identical file outside the package: checksums still match."""
    outside = c.tmp / "outside.onnx"
    shutil.copy(c.pkg / ONNX, outside)
    (c.pkg / ONNX).unlink()
    (c.pkg / ONNX).symlink_to(outside)
    return load(c.pkg, engine="onnxruntime", variant="fp32")


def flip_byte(c: Ctx) -> Callable[[], Any]:
    target = c.pkg / ONNX_WEIGHTS
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return load(c.pkg, engine="onnxruntime", variant="fp32")


def remove(rel: str) -> Callable[[Ctx], Callable[[], Any]]:
    def make(c: Ctx) -> Callable[[], Any]:
        (c.pkg / rel).unlink()
        return load(c.pkg, engine="onnxruntime", variant="fp32")
    return make


def ids(*shape: int, dtype: Any = np.int64) -> np.ndarray:
    return np.ones(shape, dtype=dtype)


def feed_text(variant: str = "fp32", **feeds: Any) -> Callable[[Ctx], Callable[[], Any]]:
    """Call the text encoder's ComponentRunner of ``variant`` with ``feeds``."""
    def make(c: Ctx) -> Callable[[], Any]:
        runner = runtime.load(c.pkg, engine="onnxruntime", variant=variant, device="x86-cpu", verify=False).text
        return lambda: runner(**feeds)
    return make


def feed_pixels(value: float) -> Callable[[Ctx], Callable[[], Any]]:
    """Call the image encoder's ComponentRunner with one pixel set to ``value``."""
    def make(c: Ctx) -> Callable[[], Any]:
        pixels = np.zeros((1, 3, 32, 32), np.float32)
        pixels[0, 1, 2, 3] = value
        runner = runtime.load(c.pkg, engine="onnxruntime", variant="fp32", device="x86-cpu", verify=False).vision
        return lambda: runner(pixel_values=pixels)
    return make


def engine_missing(*modules: str, engine: str, variant: str) -> Callable[[Ctx], Callable[[], Any]]:
    """``import MODULE`` fails (a None entry in sys.modules), as when the engine's package is not installed."""
    def make(c: Ctx) -> Callable[[], Any]:
        for m in modules:
            c.monkeypatch.setitem(sys.modules, m, None)
        return load(c.pkg, engine=engine, variant=variant)
    return make


def engine_import_broken(c: Ctx) -> Callable[[], Any]:
    """The planner finds openvino installed but importing it fails (a half-installed wheel)."""
    from mmedge.runtime.engines.base import open_session

    c.monkeypatch.setitem(sys.modules, "openvino", None)
    return lambda: open_session("openvino", c.pkg / OV_XML, options=OV_OPTIONS)


def read_only_dir(c: Ctx) -> Path:
    """A directory nobody can write to: chmod where that binds (not root), else a read-only tmpfs mount."""
    folder = c.tmp / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        c.cleanup.callback(folder.chmod, 0o755)
        return folder
    # root ignores permission bits: only a read-only file system stops its writes
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to mount a read-only tmpfs: cannot make a read-only dir")
    c.cleanup.callback(subprocess.run, ["umount", str(folder)], check=True)
    return folder


def export_read_only(c: Ctx) -> Callable[[], Any]:
    out = read_only_dir(c) / "pkg"
    return lambda: cli("export", str(c.model), str(out), "--formats", "onnx")


def quantize_read_only(c: Ctx) -> Callable[[], Any]:
    out = read_only_dir(c) / "pkg"
    return lambda: cli("quantize", str(c.pkg), "--mode", "int8", "--formats", "onnx", "--limit", "1",
                       "--out", str(out))


def export_under_a_file(c: Ctx) -> Callable[[], Any]:
    (c.tmp / "a-file").write_text("not a directory")
    return lambda: cli("export", str(c.model), str(c.tmp / "a-file" / "pkg"), "--formats", "onnx")


def export_full_disk(c: Ctx) -> Callable[[], Any]:
    return lambda: cli_limited("export", str(c.model), str(c.tmp / "out"), "--formats", "onnx")


def export_tflite_full_disk(c: Ctx) -> Callable[[], Any]:
    return lambda: cli_limited("export", str(c.model), str(c.tmp / "out"), "--formats", "tflite", limit=250_000)


def quantize_full_disk(c: Ctx) -> Callable[[], Any]:
    c.before = (c.pkg / MANIFEST_NAME).read_bytes()
    return lambda: cli_limited("quantize", str(c.pkg), "--mode", "int8", "--formats", "onnx", "--limit", "1")


def nothing_written(c: Ctx) -> None:
    """No package at the output and no staging leftovers beside it."""
    assert not (c.tmp / "out").exists()
    assert not [p for p in c.tmp.iterdir() if ".staging-" in p.name or ".final-" in p.name]


def package_intact(c: Ctx) -> None:
    """The package that a failed in-place update was writing to still opens, unchanged and verified."""
    assert (c.pkg / MANIFEST_NAME).read_bytes() == c.before
    runtime.open_package(c.pkg, verify=True)
    assert not [p for p in c.pkg.parent.iterdir() if ".staging-" in p.name or ".old-" in p.name]


def cli_run(*argv: str) -> Callable[[Ctx], Callable[[], Any]]:
    return lambda c: lambda: cli("run", str(c.pkg), *argv)


def damaged_run_no_verify(c: Ctx) -> Callable[[], Any]:
    damage(ONNX, "truncated")(c)
    return cli_run("--no-verify", "--engine", "onnxruntime", "--variant", "fp32", "--text", "x")(c)


def with_wav(c: Ctx) -> Callable[[], Any]:
    import wave

    with wave.open(str(c.tmp / "speech.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0\0" * 1600)
    return lambda: cli("run", str(c.pkg), "--audio", str(c.tmp / "speech.wav"), "--text", "hello")


REEXPORT = "re-export"
CASES = [
    # model files damaged, checksums skipped (verify=False): the engine's own error comes out typed
    Case("onnx-truncated", damage(ONNX, "truncated"), errors.PackageError, REEXPORT),
    Case("onnx-zero-bytes", damage(ONNX, "empty"), errors.PackageError, REEXPORT),
    Case("onnx-garbage", damage(ONNX, "garbage"), errors.PackageError, REEXPORT),
    Case("onnx-weights-truncated", damage(ONNX_WEIGHTS, "truncated"), errors.PackageError, REEXPORT),
    Case("openvino-xml-truncated", damage(OV_XML, "truncated"), errors.PackageError, REEXPORT),
    Case("openvino-xml-zero-bytes", damage(OV_XML, "empty"), errors.PackageError, REEXPORT),
    Case("openvino-bin-truncated", damage(OV_BIN, "truncated"), errors.PackageError, REEXPORT),
    Case("openvino-bin-zero-bytes", damage(OV_BIN, "empty"), errors.PackageError, REEXPORT),
    Case("tflite-truncated", damage(TFLITE, "truncated"), errors.PackageError, REEXPORT),
    Case("tflite-zero-bytes", damage(TFLITE, "empty"), errors.PackageError, REEXPORT),
    Case("tflite-garbage", damage(TFLITE, "garbage"), errors.PackageError, REEXPORT),
    # the same damage with checksums on (the default): caught before any engine reads the file
    Case("onnx-truncated-verified", damage(ONNX, "truncated", verify=True), errors.ChecksumError, "Re-export"),
    Case("checksum-mismatch", flip_byte, errors.ChecksumError, "Re-export or re-copy"),
    Case("file-missing", remove(ONNX_WEIGHTS), errors.ChecksumError, "re-copy"),
    # the manifest
    Case("manifest-schema-99", manifest(lambda d: d.update(schema_version=99)), errors.SchemaVersionError,
         "upgrade mmedge"),
    Case("manifest-schema-0", manifest(lambda d: d.update(schema_version=0)), errors.SchemaVersionError,
         "re-export the package with this mmedge"),
    Case("manifest-schema-string", manifest(lambda d: d.update(schema_version="1")), errors.PackageError, REEXPORT),
    Case("manifest-schema-bool", manifest(lambda d: d.update(schema_version=True)), errors.PackageError, REEXPORT),
    Case("manifest-schema-missing", manifest(lambda d: d.pop("schema_version")), errors.PackageError, REEXPORT),
    Case("manifest-no-components", manifest(lambda d: d.pop("components")), errors.PackageError, REEXPORT),
    Case("manifest-no-signature-inputs",
         manifest(lambda d: d["components"]["text"]["artifacts"][0]["signatures"]["default"].pop("inputs")),
         errors.PackageError, REEXPORT),
    Case("manifest-not-json", raw_manifest(b'{"schema_version": 1, "family": '), errors.PackageError, REEXPORT),
    Case("manifest-zero-bytes", raw_manifest(b""), errors.PackageError, REEXPORT),
    Case("manifest-not-utf8", raw_manifest(b"\xff\xfe{}"), errors.PackageError, REEXPORT),
    Case("manifest-not-an-object", raw_manifest(b"[1, 2, 3]"), errors.PackageError, REEXPORT),
    Case("manifest-missing", remove(MANIFEST_NAME), errors.PackageError, "mmedge export"),
    Case("path-dotdot", manifest(set_artifact_file("../../outside.onnx"), verify=False), errors.PackageError,
         REEXPORT),
    Case("path-dotdot-in-files", manifest(lambda d: d["files"].update({"../x.onnx": "0" * 64})),
         errors.PackageError, REEXPORT),
    Case("path-absolute", manifest(set_artifact_file("/etc/hostname"), verify=False), errors.PackageError, REEXPORT),
    Case("path-symlink-outside", symlink_outside, errors.PackageError, REEXPORT),
    # a package of one family run as another
    Case("family-unknown", manifest(lambda d: d.update(family="hologram")), errors.UnknownFamilyError,
         "upgrade mmedge"),
    Case("family-swapped-to-lm", manifest(lambda d: d.update(family="causal-lm")), errors.PackageError,
         "does not fit the 'causal-lm' pipeline"),
    Case("family-swapped-to-classifier", manifest(lambda d: d.update(family="image-classification")),
         errors.PackageError, REEXPORT),
    Case("cli-audio-to-clip", with_wav, errors.UsageError, "--audio"),
    Case("cli-prompt-to-clip", cli_run("--prompt", "once upon a time"), errors.UsageError, "text-generation package"),
    # tensors fed to a ComponentRunner through the Python API
    Case("cli-damaged-model-no-verify", damaged_run_no_verify, errors.PackageError, REEXPORT),
    Case("feed-missing", feed_text(input_ids=ids(1, 7)), errors.InputError, "attention_mask"),
    Case("feed-extra", feed_text(input_ids=ids(1, 7), attention_mask=ids(1, 7), token_type_ids=ids(1, 7)),
         errors.InputError, "token_type_ids"),
    Case("feed-wrong-rank", feed_text(input_ids=ids(7), attention_mask=ids(7)), errors.InputError, "2 dimensions"),
    Case("feed-static-shape", feed_text("fp32-static", input_ids=ids(1, 90), attention_mask=ids(1, 90)),
         errors.StaticShapeError, "dynamic variant"),
    Case("feed-fractional-ids", feed_text(input_ids=ids(1, 7, dtype=np.float32) * 1.5, attention_mask=ids(1, 7)),
         errors.InputError, "integer"),
    Case("feed-string-dtype", feed_text(input_ids=np.full((1, 7), "a"), attention_mask=ids(1, 7)),
         errors.InputError, "numeric"),
    Case("feed-ids-overflow", feed_text(input_ids=ids(1, 7, dtype=np.uint64) * 2**63, attention_mask=ids(1, 7)),
         errors.InputError, "int64"),
    Case("feed-nan", feed_pixels(np.nan), errors.InputError, "np.nan_to_num"),
    Case("feed-inf", feed_pixels(np.inf), errors.InputError, "np.nan_to_num"),
    # devices and engines
    Case("device-unknown", lambda c: load(c.pkg, device="pi9"), errors.UnknownDeviceError, "known devices"),
    Case("cli-device-unknown", cli_run("--device", "pi9", "--text", "x"), errors.UnknownDeviceError,
         "known devices"),
    Case("engine-unknown", lambda c: load(c.pkg, engine="tensorrt"), errors.UsageError, "onnxruntime"),
    Case("variant-unknown", lambda c: load(c.pkg, variant="int3"), errors.PackageError, "pick another"),
    Case("engine-missing-openvino", engine_missing("openvino", engine="openvino", variant="fp32"),
         errors.EngineUnavailableError, "pip install 'mmedge[openvino]'"),
    Case("engine-missing-onnxruntime", engine_missing("onnxruntime", engine="onnxruntime", variant="fp32"),
         errors.EngineUnavailableError, "pip install 'mmedge[ort]'"),
    Case("engine-missing-litert", engine_missing("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                                                 "tflite_runtime.interpreter", engine="litert",
                                                 variant="fp32-static"),
         errors.EngineUnavailableError, "pip install 'mmedge[litert]'"),
    Case("engine-import-broken", engine_import_broken, errors.EngineUnavailableError, "pip install"),
    # output disks
    Case("export-read-only-dir", export_read_only, errors.ExportError, "writable output path"),
    Case("quantize-read-only-dir", quantize_read_only, errors.ExportError, "writable output path"),
    Case("export-out-under-a-file", export_under_a_file, errors.ExportError, "writable output path"),
    Case("export-full-disk", export_full_disk, errors.ExportError, "free space", after=nothing_written),
    Case("export-tflite-full-disk", export_tflite_full_disk, errors.ExportError, "free space", after=nothing_written,
         slow=True),
    Case("quantize-full-disk", quantize_full_disk, errors.ExportError, "free space", after=package_intact),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_bad_input(case: Case, package_copy, tiny_clip_dir, tmp_path, monkeypatch):
    with contextlib.ExitStack() as cleanup:
        ctx = Ctx(pkg=package_copy, tmp=tmp_path, model=tiny_clip_dir, monkeypatch=monkeypatch, cleanup=cleanup)
        call = case.make(ctx)
        try:
            outcome = call()
        except MmedgeError as e:
            assert type(e) is case.error, f"{type(e).__name__}: {e}"
            message = str(e)
        else:
            assert isinstance(outcome, Exit), f"no error raised: {outcome!r}"
            assert outcome.code == case.error.exit_code, outcome.stderr
            assert outcome.stderr.startswith("mmedge: error:"), outcome.stderr
            message = outcome.stderr
        assert case.says in message, message
        if case.after is not None:
            case.after(ctx)


