"""Cross-Layer Residual Blocks (CLRB) and their aggregation (CLRA), the building blocks of every stream."""

from __future__ import annotations

import torch
from torch import nn

NEGATIVE_SLOPE = 0.2
RESIDUAL_SCALE = 0.2


def conv3x3(in_ch: int, out_ch: int, *, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    """A 3x3 convolution with zero padding 1 (same size out)."""
    return nn.Conv2d(in_ch, out_ch, 3, padding=1, groups=groups, bias=bias)


class CLRB(nn.Module):
    """Cross-Layer Residual Block: five densely connected 3x3 convolutions.

    Convolution ``k`` (1..5) sees the block input and the outputs of all earlier convolutions
    (widths ``nf + (k-1) gc``); the first four give ``gc`` channels followed by LeakyReLU(0.2),
    the fifth gives ``nf``. Output: ``x + 0.2 * conv5(...)``.

    Weights: Kaiming normal (fan-in) scaled by 0.1, zero bias.

    Shape:
        - Input: (B, nf, H, W)
        - Output: (B, nf, H, W)
    """

    def __init__(self, nf: int, gc: int, groups: int = 1) -> None:
        super().__init__()
        widths_out = [gc, gc, gc, gc, nf]
        self.convs = nn.ModuleList(
            conv3x3(nf + k * gc, widths_out[k], groups=groups) for k in range(5)
        )
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        for conv in self.convs:
            assert isinstance(conv, nn.Conv2d)
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            assert conv.bias is not None
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs[:-1]:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return x + RESIDUAL_SCALE * self.convs[-1](torch.cat(features, dim=1))


class CLRA(nn.Module):
    """Cross-Layer Residual Aggregation: three CLRBs in sequence, output ``x + 0.2 * blocks(x)``.

    Shape:
        - Input: (B, nf, H, W)
        - Output: (B, nf, H, W)
    """

    def __init__(self, nf: int, gc: int, groups: int = 1) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(CLRB(nf, gc, groups) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.blocks(x)


class Stream(nn.Module):
    """One stream of the DTS network: a 3x3 convolution to ``nf`` features, LeakyReLU(0.2), then CLRA blocks.

    Shape:
        - Input: (B, in_ch, H, W)
        - Output: (B, nf, H, W)
    """

    def __init__(self, in_ch: int, nf: int, gc: int, n_blocks: int, groups: int = 1) -> None:
        super().__init__()
        self.head = conv3x3(in_ch, nf)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        self.blocks = nn.Sequential(*(CLRA(nf, gc, groups) for _ in range(n_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.act(self.head(x)))
