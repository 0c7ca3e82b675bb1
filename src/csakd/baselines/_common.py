"""Shared parts of the classical baselines: input checks, the spatial degradation, and estimating it.

Every baseline sees one scene: ``lr_hsi`` (C, h, w), ``hr_msi`` (c, H, W) with ``H = scale h`` and
``W = scale w``, as numpy arrays or torch tensors. They are checked and copied to float64 CPU tensors
(the methods compute in float64, CNMF's iterations in float32); the result goes back as float32, numpy
when ``lr_hsi`` was numpy, a tensor otherwise.

The spatial degradation is the one of :mod:`csakd.degradation`: ``S(x) = decimate(blur(x, k), scale,
phase)`` with reflect padding (LR pixel i sits on HR pixel ``scale i + phase``). When the blur kernel
``k`` is not given it is estimated (:func:`estimate_gaussian_blur`); the spectral response ``R`` (c, C)
of ``Z = R X``, when not given, by non-negative least squares (:func:`estimate_response`).
"""

from __future__ import annotations

import logging
import math
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from csakd.degradation.spatial import gaussian_kernel, pad
from csakd.degradation.srf import SpectralResponse
from csakd.errors import InputError

__all__ = [
    "Array",
    "degrade",
    "estimate_gaussian_blur",
    "estimate_response",
    "prepare",
    "resolve_kernel",
    "resolve_response_matrix",
    "to_output",
]

logger = logging.getLogger(__name__)

#: A scene as either a numpy array or a torch tensor; a baseline returns the type of its ``lr_hsi``.
Array = TypeVar("Array", np.ndarray, torch.Tensor)

KernelLike = np.ndarray | torch.Tensor | None
ResponseLike = np.ndarray | torch.Tensor | SpectralResponse | None


def _as_cube(x: object, name: str) -> torch.Tensor:
    """A (C, H, W) real array or tensor as a finite float64 CPU tensor (a copy)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu")
    elif isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise InputError(f"{name} must be a real numeric array, got dtype {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise InputError(f"{name} must be a numpy array or torch tensor of shape (C, H, W), got {type(x).__name__}")
    if t.ndim != 3:
        raise InputError(
            f"{name} must be one scene of shape (C, H, W) (bands first), got shape {tuple(t.shape)}"
            + ("; for a batch use csakd.baselines.make_method" if t.ndim == 4 else "")
        )
    if t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"{name} must be real-valued, got {t.dtype}")
    if min(t.shape) == 0:
        raise InputError(f"{name} is empty: shape {tuple(t.shape)}")
    t = t.to(torch.float64).clone()
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{name} contains NaN or infinite values")
    return t


def prepare(
    lr_hsi: object, hr_msi: object, scale: object, phase: object
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Check a scene and return ``(lr, msi, scale, phase)`` with float64 (C, h, w) and (c, H, W) tensors.

    Raises:
        InputError: not 3-D, non-finite values, a scale or phase out of range, or grids that do not
            match (``H != scale h`` or ``W != scale w``).
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise InputError(f"scale must be a positive integer (the HR / LR grid ratio), got {scale!r}")
    s = int(scale)
    if isinstance(phase, bool) or not isinstance(phase, (int, np.integer)) or not 0 <= phase < s:
        raise InputError(f"phase must be an integer in [0, scale) = [0, {s}), got {phase!r}")
    lr = _as_cube(lr_hsi, "lr_hsi")
    msi = _as_cube(hr_msi, "hr_msi")
    _, h, w = lr.shape
    _, hh, ww = msi.shape
    if (hh, ww) != (h * s, w * s):
        raise InputError(f"hr_msi is {hh}x{ww} but lr_hsi is {h}x{w}: at scale {s} the HR-MSI must be {h * s}x{w * s}")
    return lr, msi, s, int(phase)


def to_output(x: torch.Tensor, like: Array) -> Array:
    """``x`` as float32, numpy when ``like`` is numpy, else a tensor on ``like``'s device."""
    if isinstance(like, np.ndarray):
        return x.detach().to(torch.float32).numpy()
    return x.detach().to(dtype=torch.float32, device=like.device)


def resolve_response_matrix(response: ResponseLike, hsi_bands: int, msi_bands: int) -> np.ndarray | None:
    """The response as a (c, C) float64 matrix, or None; checks its shape against the scene.

    Accepts a (c, C) array or tensor, or a :class:`~csakd.degradation.SpectralResponse` (its ``matrix``).
    """
    if response is None:
        return None
    if isinstance(response, SpectralResponse):
        m = np.asarray(response.matrix, dtype=np.float64)
    elif isinstance(response, torch.Tensor):
        m = response.detach().cpu().to(torch.float64).numpy()
    elif isinstance(response, np.ndarray):
        try:
            m = np.asarray(response, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"response must be a numeric (c, C) matrix, got dtype {response.dtype}") from exc
    else:
        raise InputError(
            f"response must be a (c, C) numpy array, tensor or SpectralResponse, got {type(response).__name__}"
        )
    if m.shape != (msi_bands, hsi_bands):
        raise InputError(
            f"response has shape {m.shape} but the scene has {msi_bands} MSI and {hsi_bands} HSI bands: "
            f"expected ({msi_bands}, {hsi_bands}) (MSI bands x HSI bands)"
        )
    if not np.all(np.isfinite(m)):
        raise InputError("response contains NaN or infinite values")
    return m


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


def _check_kernel(kernel: np.ndarray | torch.Tensor, hr_shape: tuple[int, int]) -> torch.Tensor:
    k = torch.as_tensor(np.asarray(kernel) if isinstance(kernel, np.ndarray) else kernel.detach().cpu())
    k = k.to(torch.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise InputError(f"blur_kernel must be a 2-D kernel with odd sides, got shape {tuple(k.shape)}")
    if not bool(torch.isfinite(k).all()):
        raise InputError("blur_kernel contains NaN or infinite values")
    total = float(k.sum())
    if not total > 0:
        raise InputError(f"blur_kernel must have a positive sum, got {total}")
    if k.shape[0] // 2 >= hr_shape[0] or k.shape[1] // 2 >= hr_shape[1]:
        raise InputError(
            f"blur_kernel of {k.shape[0]}x{k.shape[1]} is too large for an HR image of "
            f"{hr_shape[0]}x{hr_shape[1]} pixels (reflect padding needs a half-width below the image side)"
        )
    return k / total


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


def resolve_kernel(
    blur_kernel: KernelLike, lr: torch.Tensor, msi: torch.Tensor, scale: int, phase: int
) -> torch.Tensor:
    """The given kernel (checked, normalised to sum 1) or, for None, :func:`estimate_gaussian_blur`'s."""
    if blur_kernel is None:
        return estimate_gaussian_blur(lr, msi, scale, phase)[1]
    if not isinstance(blur_kernel, (np.ndarray, torch.Tensor)):
        raise InputError(
            f"blur_kernel must be a 2-D numpy array or tensor (or None to estimate it), got "
            f"{type(blur_kernel).__name__}"
        )
    return _check_kernel(blur_kernel, (int(msi.shape[-2]), int(msi.shape[-1])))


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


def _check_positive_int(value: object, name: str, minimum: int) -> int:
    """``value`` as an int, or InputError unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
