"""HySure: subspace-based fusion with vector total variation (Simões, Bioucas-Dias, Almeida, Chanussot,
IEEE TGRS 2015), solved by ADMM with FFTs.

The HR-HSI is ``X = E U``: ``E`` (C, p) the first ``p`` left singular vectors of the LR-HSI ``Y`` (an
orthonormal basis of its spectral subspace), ``U`` (p, H, W) the coefficients. ``U`` minimises

    1/2 |Y - E S(U)|^2 + lambda_m / 2 |Z - R E U|^2 + lambda_phi TV(U)

with ``S`` the blur ``B`` then the decimation, ``R`` the spectral response, and ``TV`` the vector total
variation: the sum over pixels of ``sqrt(sum_k (D_h U_k)^2 + (D_v U_k)^2)`` (first differences).

Solver (ADMM / SALSA, as in the paper): split ``V1 = B U``, ``V2 = U``, ``V3 = D_h U``, ``V4 = D_v U``
with scaled duals ``D_i`` and penalty ``mu``; per iteration
``U = argmin sum_i |G_i U - V_i - D_i|^2`` (diagonal in the Fourier domain), then ``V1`` at the
observed LR pixels ``(E^T Y + mu (B U - D1)) / (1 + mu)`` (elsewhere ``B U - D1``), ``V2`` per HR pixel
``(lambda_m (RE)^T (RE) + mu I)^{-1} (lambda_m (RE)^T Z + mu (U - D2))``, ``(V3, V4)`` by vector soft
thresholding at ``lambda_phi / mu``, and ``D_i -= G_i U - V_i``.

The convolutions are circular on a domain padded by a margin (a multiple of the scale, wider than the
blur) on which nothing is observed (the data terms are masked there), so the image borders are not
wrapped onto each other. ``U`` starts from ``E^T`` of the bicubic upsampling of ``Y``.

Differences from the paper: the paper also estimates a general blur kernel and ``R`` by regularised
least squares; here ``blur_kernel`` None estimates a Gaussian and ``response`` None estimates ``R`` by
NNLS (:mod:`csakd.degradation.estimate`). ``lambda_phi = tv_weight * rms(Y)`` (the root mean square of the
LR-HSI's values), so that scaling both images scales the result; defaults ``subspace=10``,
``msi_weight=1`` (lambda_m), ``tv_weight=1e-3``, ``mu=0.05``, ``iterations=200``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.fft as sfft
import torch

from csakd.baselines._common import (
    Array,
    KernelLike,
    ResponseLike,
    _check_positive_int,
    prepare,
    resolve_kernel,
    resolve_response_matrix,
    to_output,
)
from csakd.degradation.estimate import degrade, estimate_response
from csakd.degradation.spatial import upsample_in_phase
from csakd.errors import InputError

__all__ = ["hysure"]

logger = logging.getLogger(__name__)


def _otf(kernel: np.ndarray, shape: tuple[int, int], centre: tuple[int, int]) -> np.ndarray:
    """rfft2 of ``kernel`` placed on a periodic grid of ``shape`` with its ``centre`` at (0, 0).

    Multiplying an image's rfft2 by it is the true (flipped) circular convolution
    ``out[i, j] = sum_{u, v} kernel[u, v] x[i + cy - u, j + cx - v]``.
    """
    grid = np.zeros(shape)
    kh, kw = kernel.shape
    rows = (np.arange(kh) - centre[0]) % shape[0]
    cols = (np.arange(kw) - centre[1]) % shape[1]
    grid[np.ix_(rows, cols)] = kernel
    return sfft.rfft2(grid)


def _check_number(value: object, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise InputError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def hysure(
    lr_hsi: Array,
    hr_msi: np.ndarray | torch.Tensor,
    scale: int,
    *,
    response: ResponseLike = None,
    phase: int = 0,
    blur_kernel: KernelLike = None,
    subspace: int = 10,
    msi_weight: float = 1.0,
    tv_weight: float = 1e-3,
    mu: float = 0.05,
    iterations: int = 200,
) -> Array:
    """Fuse one scene by HySure (see the module docstring for the model and the solver).

    Args:
        lr_hsi: the LR-HSI ``Y``.
        hr_msi: the HR-MSI ``Z`` on the grid ``scale`` times finer.
        scale: the HR / LR grid ratio.
        response: the spectral response ``R`` (c, C), or None to estimate it by NNLS.
        phase: the HR pixel of each ``scale x scale`` cell that the decimation kept, in [0, scale).
        blur_kernel: the LR-HSI's blur (kh, kw), normalised to sum 1 here; None estimates a Gaussian.
        subspace: the subspace dimension ``p`` (at most C and the number of LR pixels).
        msi_weight: ``lambda_m``, the weight of the MSI term.
        tv_weight: ``lambda_phi`` relative to the root mean square of ``Y``.
        mu: the ADMM penalty.
        iterations: ADMM iterations (fixed; the result is deterministic).

    Returns:
        The fused HR-HSI ``E U``, float32, numpy when ``lr_hsi`` is numpy, else a tensor.

    Shape:
        - lr_hsi: (C, h, w); hr_msi: (c, h scale, w scale); response: (c, C)
        - output: (C, h scale, w scale)
    """
    y, z, s, ph = prepare(lr_hsi, hr_msi, scale, phase)
    p_max = _check_positive_int(subspace, "subspace", 1)
    iters = _check_positive_int(iterations, "iterations", 1)
    lam_m = _check_number(msi_weight, "msi_weight", positive=True)
    tv = _check_number(tv_weight, "tv_weight", positive=False)
    mu_ = _check_number(mu, "mu", positive=True)
    c_hsi, h, w = y.shape
    c_msi, hh, ww = z.shape
    r = resolve_response_matrix(response, c_hsi, c_msi)
    kernel = resolve_kernel(blur_kernel, y, z, s, ph)
    if r is None:
        r = estimate_response(y, degrade(z, kernel, s, ph))

    y_mat = y.reshape(c_hsi, -1).numpy()
    u_svd, _, _ = np.linalg.svd(y_mat, full_matrices=False)
    p = min(p_max, c_hsi, h * w)
    e = u_svd[:, :p]  # (C, p), orthonormal columns
    re = r @ e  # (c, p)
    lam_phi = tv * float(np.sqrt(np.mean(y_mat**2)))

    # the padded periodic domain: the image sits at [mg, mg + H) x [mg, mg + W)
    kh, kw = kernel.shape
    mg = s * math.ceil((max(kh, kw) // 2 + 1) / s)
    shape = (hh + 2 * mg, ww + 2 * mg)
    k_np = kernel.numpy()
    b_hat = _otf(k_np, shape, (kh // 2, kw // 2))
    dh_hat = _otf(np.array([[1.0, -1.0]]), shape, (0, 0))  # (D_h x)[i, j] = x[i, j] - x[i, j - 1]
    dv_hat = _otf(np.array([[1.0], [-1.0]]), shape, (0, 0))
    denom = np.abs(b_hat) ** 2 + 1.0 + np.abs(dh_hat) ** 2 + np.abs(dv_hat) ** 2

    def conv(x: np.ndarray, otf: np.ndarray) -> np.ndarray:
        return sfft.irfft2(sfft.rfft2(x) * otf, s=shape)

    inner = (slice(None), slice(mg, mg + hh), slice(mg, mg + ww))
    lr_rows = slice(mg + ph, mg + hh, s)
    lr_cols = slice(mg + ph, mg + ww, s)
    ety = (e.T @ y_mat).reshape(p, h, w)  # the LR-HSI in the subspace
    # V2 at the MSI's pixels: (lam_m RE^T RE + mu I)^-1 (lam_m RE^T Z + mu (U - D2))
    solve_m = np.linalg.inv(lam_m * re.T @ re + mu_ * np.eye(p))
    rez = (lam_m * re.T @ z.reshape(c_msi, -1).numpy()).reshape(p, hh, ww)

    up = upsample_in_phase(y, s, ph).numpy()
    u0 = np.einsum("cp,chw->phw", e, up)
    u = np.pad(u0, ((0, 0), (mg, mg), (mg, mg)), mode="reflect")
    u_hat = sfft.rfft2(u)
    g_hats = (b_hat, None, dh_hat, dv_hat)
    v = [sfft.irfft2(u_hat * g, s=shape) if g is not None else u.copy() for g in g_hats]
    d = [np.zeros_like(u) for _ in range(4)]
    logger.info("hysure: p=%d, lambda_phi=%.3g, margin %d, %d iterations", p, lam_phi, mg, iters)
    for _ in range(iters):
        # U: least squares over the four splittings, diagonal in the Fourier domain
        num = sfft.rfft2(v[0] + d[0]) * np.conj(b_hat) + sfft.rfft2(v[1] + d[1])
        num += sfft.rfft2(v[2] + d[2]) * np.conj(dh_hat) + sfft.rfft2(v[3] + d[3]) * np.conj(dv_hat)
        u_hat = num / denom
        u = sfft.irfft2(u_hat, s=shape)
        gu = [sfft.irfft2(u_hat * b_hat, s=shape), u, sfft.irfft2(u_hat * dh_hat, s=shape),
              sfft.irfft2(u_hat * dv_hat, s=shape)]  # fmt: skip
        # V1: the LR-HSI term at the observed (decimated) pixels
        v[0] = gu[0] - d[0]
        v[0][:, lr_rows, lr_cols] = (ety + mu_ * v[0][:, lr_rows, lr_cols]) / (1.0 + mu_)
        # V2: the HR-MSI term inside the image
        v[1] = gu[1] - d[1]
        rhs = rez + mu_ * v[1][inner]
        v[1][inner] = np.einsum("pq,qhw->phw", solve_m, rhs)
        # V3, V4: vector soft thresholding (isotropic over the p channels and both directions)
        a3, a4 = gu[2] - d[2], gu[3] - d[3]
        norm = np.sqrt((a3**2).sum(axis=0) + (a4**2).sum(axis=0))
        shrink = np.maximum(0.0, 1.0 - (lam_phi / mu_) / np.maximum(norm, 1e-300))
        v[2], v[3] = a3 * shrink, a4 * shrink
        for i in range(4):
            d[i] -= gu[i] - v[i]
    out = np.einsum("cp,phw->chw", e, u[inner])
    return to_output(torch.from_numpy(np.ascontiguousarray(out)), lr_hsi)
