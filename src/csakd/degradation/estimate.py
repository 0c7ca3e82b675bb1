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
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from csakd.degradation.spatial import gaussian_kernel, pad
from csakd.errors import InputError

__all__ = ["JointEstimate", "degrade", "estimate_degradation", "estimate_gaussian_blur", "estimate_response"]

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


# ---------------------------------------------------------------------------------------------- joint estimate
@dataclass
class JointEstimate:
    """The PSF, response and offsets of ``S_k(Z) = R Y + o`` estimated together (:func:`estimate_degradation`).

    Attributes:
        kernel: the PSF (K, K), non-negative, summing to 1 (float64 numpy).
        response: ``R`` (c, C), non-negative, rows unnormalised (each MSI band's gain is in its row).
        offset: ``o`` (c,), one per MSI band, in the MSI's units: ``Z ~ R X + o``.
        residual_db: ``10 log10(|S_k(Z) - R Y - o|^2 / |S_k(Z) - mean|^2)`` over all MSI bands (more negative
            is a better fit); ``residual_db_per_band`` per MSI band.
        history_db: the residual after each alternation (non-increasing up to the regularisation).
        pixels: the LR pixels the estimate used.
    """

    kernel: np.ndarray
    response: np.ndarray
    offset: np.ndarray
    residual_db: float
    residual_db_per_band: list[float]
    history_db: list[float] = field(default_factory=list)
    pixels: int = 0


def _unfold_design(msi: torch.Tensor, size: int, scale: int, phase: int) -> torch.Tensor:
    """The matrix ``A`` (c n, K^2) with ``A k = vec(degrade(Z, k))`` for a (K, K) kernel ``k`` (true convolution)."""
    half = size // 2
    xp = pad(msi[:, None], half, half, half, half, "reflect")[..., phase:, phase:]
    cols = F.unfold(xp, size, stride=scale)  # (c, K^2, n): cross-correlation patches
    h = (msi.shape[-2] - phase + scale - 1) // scale
    w = (msi.shape[-1] - phase + scale - 1) // scale
    cols = cols[:, :, : h * w] if cols.shape[-1] >= h * w else cols
    # degrade() convolves (the kernel flipped); unfold correlates: flip the tap order to match
    cols = cols.flip(1)
    return cols.permute(0, 2, 1).reshape(-1, size * size)


def _difference_operator(n: int) -> np.ndarray:
    """First differences (n - 1, n)."""
    d = np.zeros((max(n - 1, 0), n))
    idx = np.arange(n - 1)
    d[idx, idx], d[idx, idx + 1] = -1.0, 1.0
    return d


def _nnls_normal(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``argmin_{x >= 0} x^T G x - 2 b^T x`` (G symmetric positive definite) by NNLS on its Cholesky factor."""
    lower = np.linalg.cholesky(gram)
    target = np.linalg.solve(lower, rhs)
    return nnls(lower.T, target, maxiter=50 * gram.shape[0])[0]


def estimate_degradation(
    lr: torch.Tensor,
    msi: torch.Tensor,
    scale: int,
    phase: int,
    *,
    kernel_size: int,
    init_kernel: torch.Tensor | np.ndarray | None = None,
    response_shape: np.ndarray | None = None,
    fit_kernel: bool = True,
    iterations: int = 30,
    kernel_smoothness: float = 1e-6,
    response_smoothness: float = 1e-4,
    max_pixels: int = 40_000,
    min_pixels: int | None = None,
    tol_db: float = 1e-3,
    valid: torch.Tensor | np.ndarray | None = None,
) -> JointEstimate:
    """Estimate the PSF ``k``, the response ``R`` and offsets ``o`` of ``S_k(Z) = R Y + o`` by alternation.

    As in HySure (Simoes et al., 2015), the two are estimated from the pair alone, alternating two convex
    problems, each solved exactly:

    - **response and offsets**, ``k`` fixed: per MSI band ``b``, ``min_{r >= 0, o} |S_k(Z)_b - r^T Y - o|^2 +
      mu_r |D r|^2`` (``D`` first differences across the HSI bands: responses are smooth in wavelength), by
      NNLS on the centred data (the offset is then the means' difference). A row is not normalised: it carries
      the band's gain. With ``response_shape`` given (c, C), only a gain ``g_b >= 0`` per row and the offset
      are fitted.
    - **PSF**, ``R, o`` fixed: ``min_{k >= 0, sum k = 1} sum_b |S_k(Z_b) - R_b Y - o_b|^2 + mu_k |grad k|^2``
      over a K x K support, by NNLS on the normal equations (the sum constraint as a heavy penalty, then
      renormalised); the PSF need not be Gaussian, nor centred (a shift within the support is absorbed).

    ``mu_r`` and ``mu_k`` are ``response_smoothness`` and ``kernel_smoothness`` times the mean diagonal of
    the corresponding Gram matrix (so they do not depend on the data's units or size). It starts from
    ``init_kernel`` (e.g. the Gaussian of :func:`estimate_gaussian_blur`, padded or cropped to K), stops after
    ``iterations`` or when the residual improves by less than ``tol_db``. At most ``max_pixels`` LR pixels are
    used (a regular subsample), and only those where ``valid`` (h, w), when given, is True (e.g. not nodata).

    Raises:
        InputError: fewer (valid) LR pixels than ``min_pixels`` (default: 4 (C + 1) and K^2 + 1): too few to estimate
            a response of C bands and a K x K PSF.

    Shape:
        - lr: (C, h, w); msi: (c, h scale, w scale), float64; returns a :class:`JointEstimate`
    """
    lr = lr.to(torch.float64)
    msi = msi.to(torch.float64)
    c_hsi, h, w = lr.shape
    c_msi = msi.shape[0]
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise InputError(f"kernel_size {kernel_size}: expected a positive odd number of HR pixels")
    kernel_size = min(kernel_size, 2 * (min(msi.shape[-2:]) - 1) + 1)
    n_all = h * w
    ok = torch.ones(h, w, dtype=torch.bool) if valid is None else torch.as_tensor(np.asarray(valid, dtype=bool))
    if tuple(ok.shape) != (h, w):
        raise InputError(f"valid mask {tuple(ok.shape)}: expected the LR grid ({h}, {w})")
    n_valid = int(ok.sum())
    need = min_pixels if min_pixels is not None else max(4 * (c_hsi + 1), kernel_size**2 + 1 if fit_kernel else 0)
    if n_valid < need:
        what = f"{n_valid} valid pixels (of {n_all})" if valid is not None else f"{n_all} pixels"
        raise InputError(
            f"the LR-HSI has {what}: too few to estimate a response of {c_hsi} bands"
            + (f" and a {kernel_size}x{kernel_size} PSF" if fit_kernel else "")
            + f" from the pair (at least {need} needed): use a larger overlap, or give the response and the blur"
        )
    step = max(1, math.ceil(math.sqrt(n_valid / max_pixels)))
    keep = torch.zeros(h, w, dtype=torch.bool)
    keep[::step, ::step] = True
    keep_flat = (keep & ok).reshape(-1)
    y = lr.reshape(c_hsi, -1)[:, keep_flat].T.numpy()  # (n, C)
    n = y.shape[0]
    design = _unfold_design(msi, kernel_size, scale, phase).reshape(c_msi, n_all, -1)[:, keep_flat]  # (c, n, K^2)
    a = design.reshape(-1, kernel_size**2).numpy()
    gram_k = a.T @ a
    grad = np.concatenate([
        np.kron(np.eye(kernel_size), _difference_operator(kernel_size)),
        np.kron(_difference_operator(kernel_size), np.eye(kernel_size)),
    ])
    reg_k = kernel_smoothness * float(np.trace(gram_k)) / kernel_size**2 * (grad.T @ grad)
    ones = np.ones(kernel_size**2)
    heavy = 1e3 * float(np.trace(gram_k))
    y_mean = y.mean(axis=0)
    yc = y - y_mean
    gram_y = yc.T @ yc
    d = _difference_operator(c_hsi)
    reg_r = response_smoothness * float(np.trace(gram_y)) / c_hsi * (d.T @ d)
    ridge = 1e-10 * float(np.trace(gram_y)) / c_hsi * np.eye(c_hsi)

    if init_kernel is None:
        k = np.zeros((kernel_size, kernel_size))
        k[kernel_size // 2, kernel_size // 2] = 1.0
    else:
        k0 = np.asarray(init_kernel, dtype=np.float64)
        k = np.zeros((kernel_size, kernel_size))
        ih, iw = k0.shape
        a0, b0 = kernel_size // 2 - ih // 2, kernel_size // 2 - iw // 2
        src = k0[max(0, -a0): ih - max(0, -a0), max(0, -b0): iw - max(0, -b0)]
        k[max(0, a0): max(0, a0) + src.shape[0], max(0, b0): max(0, b0) + src.shape[1]] = src
        k /= k.sum()
    shape = None if response_shape is None else np.asarray(response_shape, dtype=np.float64)

    def response_step(sz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, o) for the degraded MSI ``sz`` (n, c)."""
        sz_mean = sz.mean(axis=0)
        szc = sz - sz_mean
        r = np.zeros((c_msi, c_hsi))
        for b in range(c_msi):
            if shape is None:
                r[b] = _nnls_normal(gram_y + reg_r + ridge, yc.T @ szc[:, b])
            else:
                p = yc @ shape[b]
                r[b] = shape[b] * max(0.0, float(p @ szc[:, b]) / max(float(p @ p), 1e-300))
        return r, sz_mean - r @ y_mean

    def residuals(sz: np.ndarray, r: np.ndarray, o: np.ndarray) -> tuple[float, list[float]]:
        res = ((sz - y @ r.T - o) ** 2).sum(axis=0)
        var = ((sz - sz.mean(axis=0)) ** 2).sum(axis=0).clip(min=1e-300)
        per = [float(10 * np.log10(max(v, 1e-30))) for v in res / var]
        return float(10 * np.log10(max(res.sum() / var.sum(), 1e-30))), per

    history: list[float] = []
    sz = (a @ k.reshape(-1)).reshape(c_msi, n).T
    r, o = response_step(sz)
    total, per_band = residuals(sz, r, o)
    history.append(total)
    for _ in range(iterations if fit_kernel else 0):
        target = (y @ r.T + o).T.reshape(-1)  # (c n,)
        k_new = _nnls_normal(gram_k + reg_k + heavy * np.outer(ones, ones), a.T @ target + heavy * ones)
        if not k_new.sum() > 0:
            break
        k_new = (k_new / k_new.sum()).reshape(kernel_size, kernel_size)
        sz_new = (a @ k_new.reshape(-1)).reshape(c_msi, n).T
        r_new, o_new = response_step(sz_new)
        total_new, per_new = residuals(sz_new, r_new, o_new)
        improved = history[-1] - total_new
        if improved < -0.5:  # the regularised step made the fit clearly worse: keep the previous estimate
            break
        k, r, o, total, per_band = k_new, r_new, o_new, total_new, per_new
        history.append(total)
        if improved < tol_db:
            break
    logger.info("estimate: PSF %dx%d and response %s jointly, residual %.1f dB after %d alternations",
                kernel_size, kernel_size, r.shape, total, len(history) - 1)
    return JointEstimate(kernel=k, response=r, offset=o, residual_db=total, residual_db_per_band=per_band,
                         history_db=history, pixels=n)
