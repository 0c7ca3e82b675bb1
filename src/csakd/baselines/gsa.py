"""Gram-Schmidt Adaptive (GSA) component substitution for HSI-MSI fusion.

GSA (Aiazzi, Baronti, Selva, IEEE TGRS 2007) sharpens multispectral bands with a panchromatic image
``P``: the intensity ``I`` is a linear combination (plus a constant) of the upsampled bands whose
weights come from least squares between the *degraded* pan and the *original* low-resolution bands
(the "adaptive" part); each band then receives the detail ``P - I`` with the gain
``g_k = cov(band_k, I) / var(I)``.

An HSI-MSI pair has several "pan" bands. What is implemented here, with ``Y`` the LR-HSI (C, h, w),
``Z`` the HR-MSI (c, H, W), ``U`` the bicubic upsampling of ``Y`` in phase with the decimation
(:func:`~csakd.degradation.upsample_in_phase`) and ``S`` the spatial degradation (blur then
decimation; the blur given or estimated, see :mod:`csakd.degradation.estimate`):

- ``pan="synthetic"`` (the default): HSI band k gets its own synthetic pan ``P_k = a_k^T [Z; 1]``, the
  linear combination of the MSI bands plus a constant that best predicts band k at low resolution
  (least squares of ``Y_k`` on ``[S(Z); 1]`` over the LR pixels). Its intensity is
  ``I_k = w_k^T [U; 1]`` with ``w_k`` from least squares of ``S(P_k)`` on ``[Y; 1]`` over the LR pixels.
- ``pan="group"`` (the grouping of Yokoya et al.'s 2017 HS-MS fusion review): HSI band k takes as its
  pan the MSI band ``j`` whose degraded image ``S(Z_j)`` has the highest correlation with ``Y_k``;
  the bands that share a pan share one intensity, ``w`` from least squares of ``S(Z_j)`` on
  ``[Y_G; 1]`` over the group's bands ``G``.

In both, ``X_k = U_k + g_k (P_k - I_k)`` with ``g_k = cov(U_k, I_k) / var(I_k)`` over the HR pixels.
The regression with a constant already matches ``I`` to the pan's mean and scale at low resolution, so
``P`` is not histogram-matched. With ``pan="synthetic"``, a scene whose bands are exact linear
combinations of the MSI bands (plus constants) is reconstructed exactly (up to rounding). The spectral
response is not needed (``response`` is accepted for a common signature and ignored).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch

from csakd.baselines._common import Array, KernelLike, ResponseLike, prepare, resolve_kernel, to_output
from csakd.degradation.estimate import degrade
from csakd.degradation.spatial import upsample_in_phase
from csakd.errors import InputError

__all__ = ["gsa"]

logger = logging.getLogger(__name__)

PanMode = Literal["synthetic", "group"]


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (H W, C + 1) design matrix of the bands and a constant column."""
    flat = x.reshape(x.shape[0], -1).T
    return torch.cat([flat, torch.ones(flat.shape[0], 1, dtype=flat.dtype)], dim=1)


def _lstsq(design: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least-squares solution (SVD based, so rank-deficient designs are fine)."""
    return torch.linalg.lstsq(design, target, driver="gelsd").solution


def _inject(up: torch.Tensor, pan: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
    """``up_k + g_k (pan_k - intensity_k)`` with ``g_k = cov(up_k, I_k) / var(I_k)`` (per band, HR pixels)."""
    u = up.reshape(up.shape[0], -1)
    i = intensity.reshape(intensity.shape[0], -1)
    i0 = i - i.mean(dim=1, keepdim=True)
    u0 = u - u.mean(dim=1, keepdim=True)
    var = i0.square().mean(dim=1)
    cov = (u0 * i0).mean(dim=1)
    gain = torch.where(var > 0, cov / var.clamp_min(1e-300), torch.zeros_like(var))
    return up + gain[:, None, None] * (pan - intensity)


def gsa(
    lr_hsi: Array,
    hr_msi: np.ndarray | torch.Tensor,
    scale: int,
    *,
    response: ResponseLike = None,
    phase: int = 0,
    blur_kernel: KernelLike = None,
    pan: PanMode = "synthetic",
) -> Array:
    """Fuse one scene by Gram-Schmidt Adaptive detail injection (see the module docstring for the exact method).

    Args:
        lr_hsi: the LR-HSI ``Y``.
        hr_msi: the HR-MSI ``Z`` on the grid ``scale`` times finer.
        scale: the HR / LR grid ratio.
        response: ignored (GSA does not use the spectral response); accepted for a common signature.
        phase: the HR pixel of each ``scale x scale`` cell that the decimation kept, in [0, scale).
        blur_kernel: the blur of the LR-HSI's degradation (kh, kw), normalised to sum 1 here; None
            estimates it as a Gaussian (:func:`~csakd.degradation.estimate.estimate_gaussian_blur`).
        pan: ``"synthetic"`` (a regression-based pan per HSI band) or ``"group"`` (the best-correlated
            MSI band as the pan).

    Returns:
        The fused HR-HSI, float32, numpy when ``lr_hsi`` is numpy, else a tensor.

    Shape:
        - lr_hsi: (C, h, w); hr_msi: (c, h scale, w scale)
        - output: (C, h scale, w scale)

    Raises:
        InputError: mismatched grids, a bad scale / phase / kernel, non-finite values or an unknown ``pan``.
    """
    y, z, s, p = prepare(lr_hsi, hr_msi, scale, phase)
    if pan not in ("synthetic", "group"):
        raise InputError(f"pan must be 'synthetic' or 'group', got {pan!r}")
    del response  # GSA needs no spectral response
    kernel = resolve_kernel(blur_kernel, y, z, s, p)
    z_lr = degrade(z, kernel, s, p)
    up = upsample_in_phase(y, s, p, mode="bicubic")
    design_lr = _with_ones(y)  # (n, C + 1)
    c_hsi, hh, ww = up.shape
    if pan == "synthetic":
        a = _lstsq(_with_ones(z_lr), y.reshape(c_hsi, -1).T)  # (c + 1, C): pan_k = a[:, k]^T [Z; 1]
        pans = (_with_ones(z) @ a).T.reshape(c_hsi, hh, ww)
        pans_lr = _with_ones(z_lr) @ a  # S(P_k) = a_k^T [S(Z); 1] (the kernel sums to 1)
        w = _lstsq(design_lr, pans_lr)  # (C + 1, C)
        intensity = (_with_ones(up) @ w).T.reshape(c_hsi, hh, ww)
    else:
        zl = z_lr.reshape(z_lr.shape[0], -1)
        yl = y.reshape(c_hsi, -1)
        zc = (zl - zl.mean(1, keepdim=True)) / zl.std(1, keepdim=True).clamp_min(1e-300)
        yc = (yl - yl.mean(1, keepdim=True)) / yl.std(1, keepdim=True).clamp_min(1e-300)
        corr = yc @ zc.T / yl.shape[1]  # (C, c)
        owner = corr.argmax(dim=1)
        pans = torch.empty_like(up)
        intensity = torch.empty_like(up)
        for j in range(z.shape[0]):
            group = torch.nonzero(owner == j).flatten()
            if group.numel() == 0:
                continue
            w_g = _lstsq(_with_ones(y[group]), zl[j][:, None])  # (|G| + 1, 1)
            i_g = (_with_ones(up[group]) @ w_g).reshape(hh, ww)
            pans[group] = z[j]
            intensity[group] = i_g
        logger.debug("gsa: HSI bands per MSI pan %s", torch.bincount(owner, minlength=z.shape[0]).tolist())
    out = _inject(up, pans, intensity)
    return to_output(out, lr_hsi)
