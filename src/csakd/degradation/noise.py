"""Additive white Gaussian noise at a given signal-to-noise ratio."""

from __future__ import annotations

import math

import torch

from csakd.degradation.spatial import _as_4d
from csakd.errors import InputError

__all__ = ["add_noise", "noise_sigma"]


def noise_sigma(x: torch.Tensor, snr_db: float, *, per_image: bool = True) -> torch.Tensor:
    """The noise standard deviation that gives ``snr_db``: ``sigma = sqrt(mean(x^2) / 10^(snr_db / 10))``.

    The mean square is the signal power, taken over each image's C, H, W (``per_image=True``) or over
    the whole batch (``per_image=False``, the reference code's choice). Same units as ``x``.

    Shape:
        - x: (B, C, H, W) or (C, H, W)
        - output: (B, 1, 1, 1), or (1, 1, 1, 1) for per_image=False or a 3-D input
    """
    x4, _ = _as_4d(x, "x")
    _check_snr(snr_db)
    dims = (1, 2, 3) if per_image else (0, 1, 2, 3)
    power = x4.detach().square().mean(dim=dims, keepdim=True)
    return torch.sqrt(power / (10.0 ** (float(snr_db) / 10.0)))


def _check_snr(snr_db: object) -> None:
    if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float)) or not math.isfinite(snr_db):
        raise InputError(f"SNR must be a finite number of dB (or None for no noise), got {snr_db!r}")


def add_noise(
    x: torch.Tensor,
    snr_db: float | None,
    *,
    generator: torch.Generator | None = None,
    per_image: bool = True,
) -> torch.Tensor:
    """Add white Gaussian noise at ``snr_db`` dB: ``x + sigma * n``, ``n ~ N(0, 1)`` i.i.d. per value.

    ``sigma`` is :func:`noise_sigma` (noise power = mean square / 10^(snr_db / 10)), computed from
    each image (``per_image=True``, the default) or from the whole batch (``per_image=False``). The
    noise is drawn from ``generator`` (on x's device) for reproducibility; ``snr_db=None`` returns
    ``x`` unchanged. The noise level is treated as a constant (no gradient flows through sigma).

    Shape:
        - x: (B, C, H, W) or (C, H, W)
        - output: same as x
    """
    if snr_db is None:
        _as_4d(x, "x")
        return x
    sigma = noise_sigma(x, snr_db, per_image=per_image)
    if sigma.shape[0] == 1 and x.ndim == 3:
        sigma = sigma.squeeze(0)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + sigma * noise
