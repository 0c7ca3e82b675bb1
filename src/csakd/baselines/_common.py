"""Shared parts of the classical baselines: input checks, the spatial degradation, and estimating it.

Every baseline sees one scene: ``lr_hsi`` (C, h, w), ``hr_msi`` (c, H, W) with ``H = scale h`` and
``W = scale w``, as numpy arrays or torch tensors. They are checked and copied to float64 CPU tensors
(the methods compute in float64, CNMF's iterations in float32); the result goes back as float32, numpy
when ``lr_hsi`` was numpy, a tensor otherwise.

The spatial degradation is the one of :mod:`csakd.degradation`: ``S(x) = decimate(blur(x, k), scale,
phase)`` with reflect padding (LR pixel i sits on HR pixel ``scale i + phase``). When the blur kernel
``k`` is not given it is estimated, and the spectral response ``R`` (c, C) of ``Z = R X`` when not given,
by the estimators of :mod:`csakd.degradation.estimate`.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import numpy as np
import torch

from csakd.degradation.estimate import estimate_gaussian_blur
from csakd.degradation.srf import SpectralResponse
from csakd.errors import InputError

__all__ = [
    "Array",
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


def _check_positive_int(value: object, name: str, minimum: int) -> int:
    """``value`` as an int, or InputError unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
