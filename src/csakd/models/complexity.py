"""Parameter and multiply-accumulate counts of a network, as the paper reports them."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from csakd.errors import InputError
from csakd.models.config import ModelConfig
from csakd.models.dts import DTSNet


def count_config_params(config: ModelConfig) -> int:
    """Parameters of the network ``config`` describes, counted on the ``meta`` device (nothing allocated)."""
    with torch.device("meta"):
        return count_params(DTSNet(config))


def count_params(model: nn.Module) -> int:
    """Parameters of ``model``. Networks built here hold only what their forward pass uses."""
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(config: ModelConfig, size: int | tuple[int, int] = 256, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass for an HR image of ``size`` pixels (per image, x batch).

    Counted by PyTorch's FLOP counter (convolutions and matrix products; FLOPs / 2) on the ``meta``
    device, so nothing is computed or allocated. Interpolations, activations and additions are not
    counted, as in the paper's (thop-style) figures; nor is the residual base (with ``feedback``, its blur
    either), but ``feedback``'s extra input channels and its 1x1 convolution are.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1 or h % config.scale or w % config.scale:
        raise InputError(f"size {h}x{w}: expected a positive multiple of the scale {config.scale}")
    with torch.device("meta"):
        # the residual's base is an interpolation (two small matrix products): not counted, like the others
        model = DTSNet(replace(config, residual="none", feedback=False))
        lr = torch.zeros(batch, config.bands, h // config.scale, w // config.scale)
        msi = torch.zeros(batch, config.msi_bands, h, w)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(lr, msi)
    extra = 0
    if config.feedback:  # C more input channels of the joint streams' 3x3 convolutions, and the 1x1 C x C
        c, nf, lr_pixels = config.bands, config.nf, (h // config.scale) * (w // config.scale)
        extra = batch * (h * w * (9 * c * nf + c * c) + lr_pixels * 9 * c * nf)
    return int(counter.get_total_flops() // 2) + extra
