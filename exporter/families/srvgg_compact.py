"""SRVGGNetCompact, the small super-resolution network of Real-ESRGAN's ``realesr-animevideov3`` and
``realesr-general-x4v3`` models, as a PyTorch module loaded from a model folder (``config.json`` with
``model_type: srvgg-compact`` + ``model.safetensors``, as ``importers.ncnn`` writes it).

Why our own module: the reference implementation lives in ``basicsr`` (``basicsr.archs.srvgg_arch``), which imports
torchvision (it fails to import beside the CPU torch wheel this project uses) and pulls OpenCV and a training
stack; the network itself is a dozen lines: a 3x3 conv + PReLU, ``num_conv`` more 3x3 conv + PReLU pairs, a last 3x3
conv to ``out_channels * upscale**2`` channels, ``PixelShuffle(upscale)``, and the nearest-neighbour upscaled
input added back (the network learns the residual). Parameter names follow basicsr's (``body.N.weight``), so an
official ``.pth`` files (their ``params`` entry) use the same names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mmedge.errors import ExportError

MODEL_TYPE = "srvgg-compact"


@dataclass(frozen=True)
class SrvggConfig:
    """Sizes of an SRVGGNetCompact (the animevideov3 ×4 model: 3, 3, 64, 16, 4)."""

    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_conv: int = 16
    upscale: int = 4

    @property
    def receptive_radius(self) -> int:
        """Pixels of input context on each side that reach one output pixel: one per 3x3 conv."""
        return self.num_conv + 2

    def to_json(self) -> dict:
        return {"model_type": MODEL_TYPE, "architectures": ["SRVGGNetCompact"], "act_type": "prelu", **asdict(self)}

    @classmethod
    def from_json(cls, config: dict) -> SrvggConfig:
        if config.get("model_type") != MODEL_TYPE or config.get("act_type", "prelu") != "prelu":
            raise ExportError(f"not an SRVGGNetCompact config with PReLU activations: {config}")
        try:
            return cls(**{k: int(config[k]) for k in cls.__dataclass_fields__})
        except (KeyError, TypeError, ValueError) as e:
            raise ExportError(f"SRVGGNetCompact config.json lacks or mangles {e}; re-import the model") from None


class SRVGGNetCompact(nn.Module):
    """``x`` [batch, num_in_ch, H, W] in [0, 1] → [batch, num_out_ch, H * upscale, W * upscale] (not clamped)."""

    def __init__(self, config: SrvggConfig):
        super().__init__()
        self.config = config
        c = config
        layers: list[nn.Module] = [nn.Conv2d(c.num_in_ch, c.num_feat, 3, 1, 1), nn.PReLU(c.num_feat)]
        for _ in range(c.num_conv):
            layers += [nn.Conv2d(c.num_feat, c.num_feat, 3, 1, 1), nn.PReLU(c.num_feat)]
        layers.append(nn.Conv2d(c.num_feat, c.num_out_ch * c.upscale * c.upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(c.upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + nn.functional.interpolate(x, scale_factor=self.config.upscale, mode="nearest")


def load_srvgg(model_dir: Path) -> SRVGGNetCompact:
    """The network of a ``srvgg-compact`` model folder, in eval mode, weights checked by name and shape."""
    from safetensors.torch import load_file

    try:
        config = SrvggConfig.from_json(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
        state = load_file(str(model_dir / "model.safetensors"))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read an SRVGGNetCompact from {model_dir}: {e}") from None
    model = SRVGGNetCompact(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(f"{model_dir / 'model.safetensors'} does not fit its config.json: "
                          f"{str(e).splitlines()[0][:300]}") from None
    return model.eval()
