"""Padded frames that do not leak: masks for the convolutions of a HiFi-GAN vocoder (VITS, SpeechT5) and of any
convolution stack in front of it (SpeechT5's postnet), for fixed-shape graphs that take more frames than they speak.

A static graph runs over ``max_frames`` frames of which only the first ``n`` are real. Masking the vocoder's input is
not enough: each convolution spreads the padded frames' values (biases, activations, residual sums) into the last
real samples. ``FrameMasks`` zeroes the padding right before every registered convolution, where the unpadded model
would see the convolution's own zero padding, so the real samples come out as the unpadded model makes them. At
each level the mask is the frame mask repeated by the upsampling done so far (a transposed convolution with
``kernel = 2 · stride`` multiplies the length by its stride). The hooks stay on the modules and do nothing while no
mask is set, so the model behaves as before for every other caller.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class FrameMasks:
    """Forward pre-hooks that multiply a convolution's input by the frame mask of its level."""

    def __init__(self, rates: list[int]):
        self.rates = [int(r) for r in rates]
        self.current: list[torch.Tensor] | None = None

    def add(self, module: nn.Module, level: int) -> None:
        """Mask ``module``'s input at ``level`` (0: the frame rate; i: after the first i upsamplers)."""
        def mask_input(_module: nn.Module, args: tuple) -> tuple | None:
            if self.current is None:
                return None
            return (args[0] * self.current[level], *args[1:])
        module.register_forward_pre_hook(mask_input)

    def add_hifigan(self, vocoder: nn.Module) -> FrameMasks:
        """Every convolution of a transformers HiFi-GAN (``conv_pre``, ``upsampler``, ``resblocks``, ``conv_post``;
        not the speaker conditioning ``cond``, whose input is one embedding, not frames)."""
        self.add(vocoder.conv_pre, 0)
        self.add(vocoder.conv_post, len(self.rates))
        for i, upsampler in enumerate(vocoder.upsampler):
            self.add(upsampler, i)
        for i, block in enumerate(vocoder.resblocks):
            for conv in (*block.convs1, *block.convs2):
                self.add(conv, i // vocoder.num_kernels + 1)
        return self

    @contextlib.contextmanager
    def masking(self, frame_mask: torch.Tensor) -> Iterator[None]:
        """Apply ``frame_mask`` [B, 1, F] (1 = a real frame) to the registered convolutions within the block."""
        batch, _, frames = frame_mask.shape
        masks, factor = [frame_mask], 1
        for rate in self.rates:
            factor *= rate
            masks.append(frame_mask[..., None].expand(batch, 1, frames, factor).reshape(batch, 1, frames * factor))
        self.current = masks
        try:
            yield
        finally:
            self.current = None
