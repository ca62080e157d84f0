"""Export behaviour beyond the happy path: a failed parity check is an error and writes nothing;
``--device`` picks the formats and shapes the device needs."""

from __future__ import annotations

import pytest

from mmedge.errors import ParityError
from mmedge.exporter.export import export
from mmedge.exporter.families.clip import ClipSpec
from mmedge.runtime import open_package


def test_parity_failure_is_an_error_and_leaves_no_package(tiny_clip_dir, tmp_path, monkeypatch):
    original = ClipSpec.load

    def impossible_tolerance(self, model_dir):
        loaded = original(self, model_dir)
        for comp in loaded.components:
            comp.atol = -1.0  # no difference can be below a negative tolerance: the check must fail
        return loaded

    monkeypatch.setattr(ClipSpec, "load", impossible_tolerance)
    out = tmp_path / "pkg"
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export(tiny_clip_dir, out, formats=["onnx"])
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_device_selects_formats_and_static_variants(tiny_clip_dir, tmp_path):
    pkg = open_package(export(tiny_clip_dir, tmp_path / "rpi4", device="rpi4"))
    offered = {(f, v) for f, v, _, _ in pkg.manifest.variants()}
    assert offered == {("tflite", "fp32-static"), ("onnx", "fp32")}


def test_tflite_refuses_weights_over_the_flatbuffer_limit_up_front(tiny_clip_dir, tmp_path, monkeypatch):
    import torch

    from mmedge.errors import ExportError
    from mmedge.exporter.converters import tflite

    tied = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(tied, torch.nn.ReLU(), tied)  # a tied layer counts once
    assert tflite.weight_bytes(model) == (16 + 4) * 4
    monkeypatch.setattr(tflite, "FLATBUFFER_LIMIT", 1000)  # the tiny CLIP's towers "exceed" it
    out = tmp_path / "pkg"
    with pytest.raises(ExportError, match=r"over TFLite's 2 GiB file limit .*--formats onnx,openvino"):
        export(tiny_clip_dir, out, formats=["tflite"])
    assert not out.exists()
