"""Estimating the observation model ``Y = S(X)``, ``Z = R X`` from a pair alone (no HR-HSI).

``S(x) = decimate(blur(x, k), scale, phase)`` is the spatial degradation of :mod:`csakd.degradation`
(reflect padding; LR pixel i sits on HR pixel ``scale i + phase``), computed by :func:`degrade` on the kept
pixels only. Since ``S(Z) = R S(X) = R Y``, the blur can be estimated as the one whose degraded MSI the
LR-HSI explains best (:func:`estimate_gaussian_blur`) and the response by non-negative least squares of
``S(Z)`` on ``Y`` (:func:`estimate_response`), as HySure does.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from csakd.degradation.spatial import gaussian_kernel, pad

__all__ = ["degrade", "estimate_gaussian_blur", "estimate_response"]

logger = logging.getLogger(__name__)


def degrade(x: torch.Tensor, kernel: torch.Tensor, scale: int, phase: int) -> torch.Tensor:
    """``S(x) = decimate(blur(x, kernel, reflect), scale, phase)``, computing only the kept pixels.

    Equal to :func:`csakd.degradation.decimate` of :func:`csakd.degradation.blur` (a true convolution
    with reflect padding), as a strided convolution: ``scale^2`` times less work.

    Shape:
        - x: (C, H, W) with H, W divisible by scale; kernel: (kh, kw) with odd sides
        - output: (C, H / scale, W / scale)
    """
    c = x.shape[0]
    k = kernel.to(x.dtype).flip(0, 1)
    kh, kw = k.shape
    xp = pad(x[None], kw // 2, kw // 2, kh // 2, kh // 2, "reflect")[..., phase:, phase:]
    col, row = k[:, kw // 2], k[kh // 2, :]
    if bool(torch.allclose(torch.outer(col, row) / k[kh // 2, kw // 2], k, rtol=1e-9, atol=1e-15)):
        y = F.conv2d(xp, col.reshape(1, 1, kh, 1).expand(c, 1, kh, 1), stride=(scale, 1), groups=c)
        y = F.conv2d(
            y, (row / k[kh // 2, kw // 2]).reshape(1, 1, 1, kw).expand(c, 1, 1, kw), stride=(1, scale), groups=c
        )
    else:
        y = F.conv2d(xp, k.reshape(1, 1, kh, kw).expand(c, 1, kh, kw), stride=scale, groups=c)
    return y[0]


def _orthonormal_basis(design: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (n, r) of the column space of ``design`` (n, m), from its SVD."""
    u, sv, _ = torch.linalg.svd(design, full_matrices=False)
    keep = sv > sv[0] * max(design.shape) * torch.finfo(design.dtype).eps
    return u[:, keep]


def _relative_residual(basis: torch.Tensor, target: torch.Tensor) -> float:
    """``|t - P t|^2 / |t - mean(t)|^2`` summed over target columns, ``P`` the projection on ``basis``."""
    proj = basis.T @ target
    res = target.square().sum() - proj.square().sum()
    return float(res.clamp_min(0) / (target - target.mean(dim=0)).square().sum().clamp_min(1e-300))


def estimate_gaussian_blur(
    lr: torch.Tensor, msi: torch.Tensor, scale: int, phase: int, *, sigmas: np.ndarray | None = None
) -> tuple[float, torch.Tensor]:
    """Estimate the blur as an isotropic Gaussian: the sigma whose ``S(Z)`` is best explained by ``Y``.

    Since ``S(Z) = S(R X) = R S(X) = R Y``, with the right blur every degraded MSI band is a linear
    combination of the LR-HSI bands. For each candidate sigma (HR pixels; kernel side ``2 ceil(3 sigma)
    + 1``, capped by the image) this fits ``S_sigma(Z)^T ~ [Y^T, 1] b`` by least squares and keeps the
    sigma of the smallest relative residual: a grid of 0.1 scale .. 1.5 scale, then a finer grid around
    the best. Returns ``(sigma, kernel)``, the kernel (kh, kw) float64 summing to 1.
    """
    c_hsi = lr.shape[0]
    y = lr.reshape(c_hsi, -1).T
    basis = _orthonormal_basis(torch.cat([y, torch.ones(y.shape[0], 1, dtype=y.dtype)], dim=1))
    if basis.shape[1] >= y.shape[0]:
        logger.warning(
            "baselines: the LR-HSI's %d pixels are no more than its %d bands + 1, so any blur fits; pass "
            "blur_kernel (the estimate falls back to the smallest sigma tried)",
            y.shape[0],
            c_hsi,
        )
    max_half = max(0, min(msi.shape[-2], msi.shape[-1]) - 1)

    def kernel_for(sigma: float) -> torch.Tensor:
        half = min(max_half, max(1, math.ceil(3.0 * sigma)))
        return gaussian_kernel(2 * half + 1, sigma, dtype=torch.float64)

    def score(sigma: float) -> float:
        z = degrade(msi, kernel_for(sigma), scale, phase)
        return _relative_residual(basis, z.reshape(z.shape[0], -1).T)

    grid = np.linspace(0.1, 1.5, 15) * scale if sigmas is None else np.asarray(sigmas, np.float64)
    scores = [score(float(s)) for s in grid]
    best = int(np.argmin(scores))
    if sigmas is None:
        step = grid[1] - grid[0]
        fine = np.linspace(max(grid[best] - step, 0.05 * scale), grid[best] + step, 11)
        fine_scores = [score(float(s)) for s in fine]
        if min(fine_scores) < scores[best]:
            grid, scores, best = fine, fine_scores, int(np.argmin(fine_scores))
    sigma = float(grid[best])
    logger.info("baselines: estimated Gaussian blur sigma %.3f HR pixels (relative residual %.3g)", sigma, scores[best])
    return sigma, kernel_for(sigma)


def estimate_response(lr: torch.Tensor, msi_lr: torch.Tensor) -> np.ndarray:
    """Estimate ``R`` (c, C) of ``Z = R X`` from ``S(Z) = R Y`` by non-negative least squares, per MSI band.

    Row k minimises ``|S(Z)_k - r^T Y|^2`` subject to ``r >= 0`` over the LR pixels (no offset: the
    observation model has none). Shape: lr (C, h, w), msi_lr (c, h, w) -> (c, C) float64.
    """
    y = lr.reshape(lr.shape[0], -1).T.numpy()
    z = msi_lr.reshape(msi_lr.shape[0], -1).T.numpy()
    rows = [nnls(y, z[:, k], maxiter=50 * y.shape[1])[0] for k in range(z.shape[1])]
    r = np.stack(rows)
    logger.info("baselines: estimated spectral response %s by NNLS", r.shape)
    return r
