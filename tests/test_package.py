"""The package contract: manifest round trip, checksums, schema versions, hostile paths, atomic writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mmedge.errors import ChecksumError, ExportError, PackageError, SchemaVersionError
from mmedge.exporter import package_writer
from mmedge.runtime import SCHEMA_VERSION, open_package
from mmedge.runtime.manifest import MANIFEST_NAME, Manifest


def _edit_manifest(pkg: Path, edit) -> None:
    path = pkg / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_manifest_records_the_contract(clip_package):
    m = open_package(clip_package).manifest
    assert m.schema_version == SCHEMA_VERSION and m.family == "clip"
    assert set(m.components) == {"text", "vision"}
    assert {"torch", "transformers", "onnx", "openvino", "litert-torch"} <= set(m.tools)
    assert m.source["kind"] == "hf-dir" and len(m.source["config_sha256"]) == 64
    formats = {(a.format, a.variant) for a in m.components["text"].artifacts}
    assert formats == {("onnx", "fp32"), ("onnx", "fp32-static"), ("openvino", "fp32"),
                       ("openvino", "fp32-static"), ("tflite", "fp32-static")}
    for comp in m.components.values():
        for a in comp.artifacts:
            assert a.parity["passed"] and a.parity["reference"] == "pytorch"
            assert len(a.parity["checks"]) == 2
            if not a.static:  # dynamic graphs are checked at a second batch/sequence size
                assert a.parity["checks"][0]["sizes"] != a.parity["checks"][1]["sizes"]
            for rel in (a.file, *a.extra_files):
                assert rel in m.files
    text_onnx = m.components["text"].find("onnx", "fp32")
    assert text_onnx.inputs[0].shape == ("batch", "sequence")
    assert m.components["text"].find("tflite", "fp32-static").inputs[0].dtype == "int32"
    assert m.preprocessing["text"]["tokenizer_file"] in m.files
    assert Manifest.from_dict(m.to_dict()).to_dict() == m.to_dict()


def test_verify_detects_one_tampered_byte(package_copy):
    assert open_package(package_copy).verify() == []
    target = package_copy / "vision" / "onnx-fp32" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="checksum mismatch: vision/onnx-fp32/model.onnx"):
        open_package(package_copy)
    open_package(package_copy, verify=False)  # explicit opt-out still opens


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_load_verifies_the_files_it_uses(package_copy):
    """runtime.load hashes the shared files and the chosen variant's, not every variant of the package."""
    from mmedge import runtime

    _flip_a_byte(package_copy / "vision" / "tflite-fp32-static" / "model.tflite")
    clip = runtime.load(package_copy, engine="onnxruntime", variant="fp32")  # the damage is elsewhere
    assert clip.ran.variant == "fp32"
    with pytest.raises(ChecksumError, match="checksum mismatch: vision/tflite-fp32-static/model.tflite"):
        runtime.load(package_copy, engine="litert")
    with pytest.raises(ChecksumError):
        open_package(package_copy)  # opening the package as a whole still checks everything
    _flip_a_byte(package_copy / open_package(package_copy, verify=False).manifest.preprocessing["text"]["tokenizer_file"])
    with pytest.raises(ChecksumError, match="checksum mismatch: .*tokenizer"):
        runtime.load(package_copy, engine="onnxruntime", variant="fp32")


def test_missing_file_is_reported(package_copy):
    (package_copy / "text" / "tflite-fp32-static" / "model.tflite").unlink()
    with pytest.raises(ChecksumError, match="missing: text/tflite-fp32-static/model.tflite"):
        open_package(package_copy)


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1])
def test_unknown_schema_version_is_refused(package_copy, version):
    _edit_manifest(package_copy, lambda d: d.update(schema_version=version))
    with pytest.raises(SchemaVersionError, match="schema_version"):
        open_package(package_copy, verify=False)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("components"), "lacks 'components'"),
    (lambda d: d.pop("files"), "lacks 'files'"),
    (lambda d: d["components"]["text"]["artifacts"][0].update(format="coreml"), "unknown format"),
    (lambda d: d["components"]["text"]["artifacts"][0]["signatures"]["default"]["inputs"][0].update(dtype="complex64"),
     "unknown dtype"),
    (lambda d: d["components"]["text"]["artifacts"][0].update(signatures={}), "no signatures"),
    (lambda d: d.update(family=3), "wrong type"),
])
def test_malformed_manifest_is_a_package_error(package_copy, edit, message):
    _edit_manifest(package_copy, edit)
    with pytest.raises(PackageError, match=message):
        open_package(package_copy, verify=False)


def test_path_escaping_the_package_is_refused(package_copy):
    def escape(d):
        d["files"]["../outside.onnx"] = "0" * 64
    _edit_manifest(package_copy, escape)
    with pytest.raises(PackageError, match="outside the package"):
        open_package(package_copy, verify=False)


def test_not_json_and_not_a_package(tmp_path, package_copy):
    with pytest.raises(PackageError, match="not a model package directory"):
        open_package(tmp_path / "nope")
    with pytest.raises(PackageError, match="no mmedge.json"):
        open_package(tmp_path)
    (package_copy / MANIFEST_NAME).write_bytes(b"\x00\xff{")
    with pytest.raises(PackageError, match="not valid JSON"):
        open_package(package_copy)


def test_failed_write_leaves_no_package_and_keeps_the_old_one(clip_package, package_copy, tmp_path):
    before = (package_copy / MANIFEST_NAME).read_bytes()
    with pytest.raises(RuntimeError):
        with package_writer.staging(package_copy) as stage:
            (stage / "half-written.onnx").write_bytes(b"partial")
            raise RuntimeError("killed mid-export")
    assert (package_copy / MANIFEST_NAME).read_bytes() == before
    assert not [p for p in package_copy.parent.iterdir() if ".staging-" in p.name]
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        with package_writer.staging(fresh) as stage:
            raise RuntimeError("killed")
    assert not fresh.exists()



def test_written_package_has_the_umask_permissions_of_a_normal_directory(clip_package, tmp_path):
    """The staging folder comes from mkdtemp (0700); the committed package is readable by other users as any
    directory made under the process's umask is."""
    m = open_package(clip_package).manifest
    old = os.umask(0o022)
    try:
        with package_writer.staging(tmp_path / "pkg") as stage:
            out = package_writer.commit(stage, tmp_path / "pkg", Manifest(family=m.family, task=m.task,
                                                                           components=m.components))
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755

def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ExportError, match="not an mmedge package"):
        with package_writer.staging(foreign):
            pass
    assert (foreign / "holiday.jpg").exists()


@pytest.mark.parametrize("engine, variant, rel", [
    ("onnxruntime", "fp32", "text/onnx-fp32/model.onnx"),
    ("openvino", "fp32", "text/openvino-fp32/model.xml"),
    ("openvino", "fp32", "text/openvino-fp32/model.bin"),
    ("litert", "fp32-static", "text/tflite-fp32-static/model.tflite"),
])
@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_damaged_model_file_is_a_package_error_on_every_engine(package_copy, engine, variant, rel, damage):
    from mmedge import runtime

    target = package_copy / rel
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    with pytest.raises(PackageError, match="damaged|re-export"):
        runtime.load(package_copy, engine=engine, variant=variant, device="x86-cpu", verify=False)
