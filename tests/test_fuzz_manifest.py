"""Fuzzing the package reader (``Manifest.from_dict``, ``open_package``): whatever the manifest holds, the reader
either opens the package or raises a ``PackageError`` (a subclass: schema version, checksum) — never a raw
KeyError/TypeError/AttributeError/ValueError from inside the reader.

Inputs: arbitrary JSON values; a valid manifest (built with the runtime's own classes, so it is what the exporter
writes) with keys dropped, values replaced by other types, unknown values, hostile paths (``../``, absolute,
NUL, unicode) and unknown keys added; and raw bytes in place of ``mmedge.json``. The default run tries ~100
examples per property; the ``fuzz`` stage (``pytest -m fuzz``, in .ci/run) runs the same properties with 2000.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmedge.errors import PackageError
from mmedge.runtime.manifest import (MANIFEST_NAME, Artifact, Component, Manifest, MobileSection, Signature,
                                     TensorSpec)
from mmedge.runtime.package import open_package

LIGHT = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEAVY = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
                | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)
hostile_paths = st.sampled_from(["../outside.onnx", "../../etc/passwd", "/etc/passwd", "a/../../b", "", ".", "..",
                                 "text/\x00model.onnx", "ü/模型.onnx", "text//model.onnx", "C:\\model.onnx",
                                 "text/onnx-fp32/model.onnx/..", "~/model.onnx"]) | st.text(max_size=30)


def _file(root: Path, rel: str, data: bytes, files: dict[str, str]) -> str:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    files[rel] = hashlib.sha256(data).hexdigest()
    return rel


def valid_package(root: Path) -> dict:
    """A small package whose manifest uses every part of schema 1 (dynamic and static artifacts, a
    multi-signature file, extra files, dims with unnamed axes, a mobile section); files are stand-in bytes."""
    files: dict[str, str] = {}
    ids = TensorSpec("input_ids", "int64", ("batch", "sequence"), "input_ids", ("batch", "sequence"))
    out = TensorSpec("logits", "float32", ("batch", 16), "logits", ("batch", None))
    dyn = Artifact("onnx", "fp32", "fp32", False, _file(root, "decoder/onnx-fp32/model.onnx", b"onnx", files),
                   {"default": Signature("default", "decoder/onnx-fp32/model.onnx", (ids,), (out,))},
                   extra_files=(_file(root, "decoder/onnx-fp32/weights.onnx_data", b"weights", files),),
                   parity={"passed": True})
    tfl = _file(root, "decoder/tflite-fp32-static/model.tflite", b"tflite", files)
    fixed = TensorSpec("input_ids", "int32", (1, 8), "input_ids", ("batch", "sequence"))
    static = Artifact("tflite", "fp32-static", "fp32", True, tfl,
                      {"decode": Signature("decode", tfl, (fixed,), (out,), "decode"),
                       "prefill_8": Signature("prefill_8", tfl, (fixed,), (out,), "prefill_8")})
    ort = _file(root, "mobile/decoder.ort", b"ort", files)
    mobile = MobileSection("android", {"decoder": {"signatures": {"default": ort}}},
                           _file(root, "mobile/required_operators.config", b"ops", files),
                           _file(root, "mobile/report.json", b"{}", files),
                           (_file(root, "mobile/README.md", b"readme", files),), {"onnxruntime": {"nnapi": True}})
    _file(root, "tokenizer/tokenizer.json", b"{}", files)
    manifest = Manifest("causal-lm", "text-generation", {"decoder": Component("decoder", "a decoder", (dyn, static))},
                        source={"model": "tiny"}, tools={"mmedge": "0.1.0"}, preprocessing={"text": {}},
                        generation={"cache": {}}, files=files, mobile=mobile)
    doc = manifest.to_dict()
    (root / MANIFEST_NAME).write_text(json.dumps(doc), encoding="utf-8")
    return doc


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("fuzz") / "pkg"
    root.mkdir()
    return root, valid_package(root)


def test_the_valid_package_opens(valid):
    root, doc = valid
    package = open_package(root, verify=True)
    assert package.manifest.to_dict() == doc
    assert package.manifest.variants() == [("onnx", "fp32", "fp32", False), ("tflite", "fp32-static", "fp32", True)]


# ------------------------------------------------------------------------------------------------ mutations

def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a JSON tree (keys and list indices), the root's children first."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        out.append(prefix + (key,))
        out.extend(_paths(child, prefix + (key,)))
    return out


@st.composite
def mutated(draw, doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        where = draw(st.sampled_from(paths))
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        key = where[-1]
        op = draw(st.sampled_from(["drop", "replace", "path", "unknown-key", "wrong-type"]))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(json_values)
        elif op == "path":
            parent[key] = draw(hostile_paths)
        elif op == "wrong-type":
            value = parent[key]
            parent[key] = ([value] if not isinstance(value, list) else {"0": value}) if draw(st.booleans()) \
                else json.dumps(value)
        elif isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=10))] = draw(json_values)
        elif isinstance(parent, dict):  # rename a key: the old one is gone, an unknown one appears
            parent[draw(hostile_paths)] = parent.pop(key)
    return doc


def check_reader(root: Path, doc: Any) -> None:
    """The property: opening a package with manifest ``doc`` succeeds or raises a PackageError; a success can
    be used (variants listed, files checked) without a raw exception either."""
    try:
        Manifest.from_dict(doc)
    except PackageError:
        pass
    (root / MANIFEST_NAME).write_text(json.dumps(doc), encoding="utf-8")
    for verify in (False, True):
        try:
            package = open_package(root, verify=verify)
        except PackageError:
            continue
        package.manifest.variants()
        package.shared_files()
        try:
            package.check()
        except PackageError:
            pass


def _each(strategy, prop_settings):
    @prop_settings
    @given(data=st.data())
    def run(valid, data):
        root, doc = valid
        with tempfile.TemporaryDirectory() as scratch:
            # a copy of the package's files, so a mutated manifest cannot damage the next example's
            copy_root = Path(scratch) / "pkg"
            copy_root.mkdir()
            for rel in doc["files"]:
                (copy_root / rel).parent.mkdir(parents=True, exist_ok=True)
                (copy_root / rel).write_bytes((root / rel).read_bytes())
            check_reader(copy_root, data.draw(strategy(doc)))
    return run


test_mutated_manifest_light = _each(mutated, LIGHT)
test_mutated_manifest_heavy = pytest.mark.fuzz(_each(mutated, HEAVY))


@LIGHT
@given(value=json_values)
def test_arbitrary_json_manifest(value, tmp_path_factory):
    root = tmp_path_factory.mktemp("any")
    check_reader(root, value)


@LIGHT
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_manifest(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("bytes")
    (root / MANIFEST_NAME).write_bytes(data)
    with pytest.raises(PackageError):
        open_package(root)


@pytest.mark.parametrize("text", ["1" * 5000, "[" * 100_000 + "]" * 100_000, '{"a": ' * 50_000 + "1" + "}" * 50_000],
                         ids=["huge-int", "deep-list", "deep-object"])
def test_pathological_json_is_a_package_error(tmp_path, text):
    """Python's JSON reader raises plain ValueError (an int over 4300 digits) or RecursionError (deep nesting)."""
    (tmp_path / MANIFEST_NAME).write_text(text)
    with pytest.raises(PackageError, match="re-export"):
        open_package(tmp_path)
