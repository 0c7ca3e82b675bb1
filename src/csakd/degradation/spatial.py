"""Spatial degradation: blur ``B``, decimation ``D``, misregistration, and in-phase upsampling.

Grid convention: decimation by ``scale`` with ``phase`` keeps HR pixels ``scale * i + phase``, so LR
pixel ``i`` sits on HR pixel ``scale * i + phase`` (pixel centres). :func:`upsample_in_phase` uses the
same grid, so ``decimate(upsample_in_phase(y, s, p), s, p) == y``.

Padding modes (``padding=`` / ``mode=``), for a row ``a b c d``:

============  ==============  ==================  ======================
mode          pads as         numpy ``np.pad``    ``scipy.ndimage`` mode
============  ==============  ==================  ======================
reflect       c b | a b c d   ``reflect``         ``mirror``
symmetric     b a | a b c d   ``symmetric``       ``reflect``
replicate     a a | a b c d   ``edge``            ``nearest``
circular      c d | a b c d   ``wrap``            ``grid-wrap``
zeros         0 0 | a b c d   ``constant``        ``constant`` (cval 0)
============  ==============  ==================  ======================

``reflect`` (torch's and numpy's meaning: the edge pixel is not repeated) is the default; note that
scipy.ndimage calls it ``mirror`` and uses ``reflect`` for the edge-repeating ``symmetric``.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from csakd.errors import InputError

__all__ = [
    "PaddingMode",
    "blur",
    "decimate",
    "gaussian_kernel",
    "load_psf",
    "pad",
    "shift",
    "upsample_in_phase",
]

PaddingMode = Literal["reflect", "symmetric", "replicate", "circular", "zeros"]
_PAD_MODES = ("reflect", "symmetric", "replicate", "circular", "zeros")


def _as_4d(x: object, name: str) -> tuple[torch.Tensor, bool]:
    """Check a (B, C, H, W) or (C, H, W) floating tensor; return it as 4-D and whether it was 3-D."""
    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W) or (C, H, W), got {type(x).__name__}"
        )
    if x.ndim not in (3, 4):
        raise InputError(f"{name} must have shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


#: The widest Gaussian kernel :func:`gaussian_kernel` builds (4097 x 4097 float64 = 128 MiB).
MAX_KERNEL_SIZE = 4097


def gaussian_kernel(size: int, sigma: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An isotropic 2-D Gaussian blur kernel that sums to 1.

    ``k[i, j] ∝ exp(-((i - r)^2 + (j - r)^2) / (2 sigma^2))`` with ``r = size // 2``; ``sigma`` in
    pixels. Equals scipy.ndimage.gaussian_filter's kernel with ``truncate = r / sigma``.

    Shape:
        - output: (size, size)

    Example:
        >>> k = gaussian_kernel(9, 2.0)
        >>> k.shape, round(float(k.sum()), 6)
        (torch.Size([9, 9]), 1.0)
    """
    size = _positive_int(size, "blur kernel size")
    if size % 2 == 0:
        raise InputError(f"blur kernel size must be odd so that the kernel has a centre pixel, got {size}")
    if size > MAX_KERNEL_SIZE:
        raise InputError(
            f"blur kernel size {size} is larger than {MAX_KERNEL_SIZE}: a {size}x{size} kernel would need "
            f"{size * size * 8 / 2**30:.1f} GiB and is wider than any image it could blur (a typo?)"
        )
    if not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise InputError(f"blur sigma must be a positive number of pixels, got {sigma!r}")
    r = size // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2.0 * float(sigma) ** 2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def load_psf(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 2-D point spread function from a file (see :func:`csakd.degradation.matrix_file.read_matrix`).

    The PSF must have odd sizes, finite non-negative values and a positive sum; it is returned
    normalised to sum 1 (a blur preserves the mean).

    Shape:
        - output: (kh, kw) float64
    """
    from csakd.degradation.matrix_file import read_matrix

    psf = read_matrix(path, what="PSF")
    return _check_kernel(psf, f"PSF {os.fspath(path)}", normalize=True)


def _check_kernel(k: np.ndarray, what: str, *, normalize: bool) -> np.ndarray:
    if k.ndim != 2:
        raise InputError(f"{what} must be a 2-D kernel, got shape {k.shape}")
    if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise InputError(
            f"{what} must have odd height and width (a centre pixel), got {k.shape[0]}x{k.shape[1]}"
        )
    if not np.all(np.isfinite(k)):
        raise InputError(f"{what} contains NaN or infinite values")
    if normalize:
        total = float(k.sum())
        if not total > 0:
            raise InputError(f"{what} must have a positive sum, got {total}")
        k = k / total
    return k


def pad(
    x: torch.Tensor, left: int, right: int, top: int, bottom: int, mode: PaddingMode = "reflect"
) -> torch.Tensor:
    """Pad the last two dimensions of ``x`` (see the module docstring for the modes).

    Shape:
        - x: (B, C, H, W) or (C, H, W)
        - output: (..., H + top + bottom, W + left + right)
    """
    if mode not in _PAD_MODES:
        raise InputError(f"padding mode must be one of {_PAD_MODES}, got {mode!r}")
    if min(left, right, top, bottom) < 0:
        raise InputError("pad widths must be non-negative")
    h, w = x.shape[-2], x.shape[-1]
    limit_h = h - 1 if mode == "reflect" else h
    limit_w = w - 1 if mode == "reflect" else w
    if mode != "zeros" and mode != "replicate" and (max(top, bottom) > limit_h or max(left, right) > limit_w):
        raise InputError(
            f"an image of {h}x{w} pixels is too small for {mode} padding of {max(top, bottom)} rows and "
            f"{max(left, right)} columns; it needs at least {max(top, bottom) + (mode == 'reflect')} rows "
            f"and {max(left, right) + (mode == 'reflect')} columns"
        )
    if left == right == top == bottom == 0:
        return x
    if mode == "symmetric":
        parts = [x[..., :, :left].flip(-1), x, x[..., :, w - right :].flip(-1)] if (left or right) else [x]
        y = torch.cat(parts, dim=-1)
        if top or bottom:
            y = torch.cat([y[..., :top, :].flip(-2), y, y[..., y.shape[-2] - bottom :, :].flip(-2)], dim=-2)
        return y
    torch_mode = "constant" if mode == "zeros" else mode
    if x.ndim < 3:
        raise InputError(f"pad needs at least 3 dimensions (C, H, W), got {tuple(x.shape)}")
    return F.pad(x, (left, right, top, bottom), mode=torch_mode)


def _separable_factors(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(column, row) vectors with outer(column, row) == k when k has rank 1, else None.

    For a rank-1 kernel, the column and the row through its largest entry k[i, j] give
    ``k = outer(k[:, j], k[i, :] / k[i, j])``; the check compares that product with k.
    """
    if k.shape[0] == 1 or k.shape[1] == 1:
        return None
    flat = int(k.detach().abs().argmax())
    i, j = divmod(flat, k.shape[1])
    pivot = k[i, j]
    if pivot == 0:
        return None
    col = k[:, j]
    row = k[i, :] / pivot
    err = (torch.outer(col, row) - k).detach().abs().max()
    if err > 1e-6 * pivot.detach().abs():
        return None
    return col, row


def blur(
    x: torch.Tensor,
    kernel: torch.Tensor | np.ndarray,
    padding: PaddingMode = "reflect",
) -> torch.Tensor:
    """Convolve every band with the same 2-D kernel (depthwise), output the same size as the input.

    ``out[b, c, i, j] = sum_{u, v} k[u, v] * xp[b, c, i + r_h - u, j + r_w - v]``, a true convolution
    (the kernel is flipped; this matters only for asymmetric PSFs), where ``xp`` is ``x`` padded by
    ``r_h = kh // 2`` rows and ``r_w = kw // 2`` columns with ``padding``. With ``padding="reflect"``
    this equals ``scipy.ndimage.convolve(x, k, mode="mirror")`` per band. Rank-1 (separable) kernels,
    such as Gaussians, run as a column pass then a row pass. The kernel is used as given (not
    renormalised). Differentiable in ``x``.

    Args:
        x: the image.
        kernel: (kh, kw) with odd sizes: a tensor, or a numpy PSF (e.g. from :func:`load_psf`).
        padding: how the border is extended (see the module docstring).

    Shape:
        - x: (B, C, H, W) or (C, H, W)
        - kernel: (kh, kw)
        - output: same as x
    """
    x4, squeezed = _as_4d(x, "x")
    if isinstance(kernel, np.ndarray):
        k = torch.tensor(_check_kernel(np.asarray(kernel, np.float64), "blur kernel", normalize=False))
    elif isinstance(kernel, torch.Tensor):
        k = kernel
        if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise InputError(f"blur kernel must be 2-D with odd sizes, got shape {tuple(k.shape)}")
    else:
        raise InputError(f"blur kernel must be a 2-D tensor or numpy array, got {type(kernel).__name__}")
    k = k.to(dtype=x4.dtype, device=x4.device).flip(0, 1)
    kh, kw = k.shape
    rh, rw = kh // 2, kw // 2
    channels = x4.shape[1]
    xp = pad(x4, rw, rw, rh, rh, padding)
    factors = _separable_factors(k)
    if factors is not None:
        col, row = factors
        y = F.conv2d(xp, col.reshape(1, 1, kh, 1).expand(channels, 1, kh, 1), groups=channels)
        y = F.conv2d(y, row.reshape(1, 1, 1, kw).expand(channels, 1, 1, kw), groups=channels)
    else:
        y = F.conv2d(xp, k.reshape(1, 1, kh, kw).expand(channels, 1, kh, kw), groups=channels)
    return y.squeeze(0) if squeezed else y


def _check_scale_phase(scale: object, phase: object) -> tuple[int, int]:
    s = _positive_int(scale, "scale")
    if isinstance(phase, bool) or not isinstance(phase, (int, np.integer)) or not 0 <= phase < s:
        raise InputError(f"phase must be an integer in [0, scale) = [0, {s}), got {phase!r}")
    return s, int(phase)


def decimate(x: torch.Tensor, scale: int, phase: int = 0) -> torch.Tensor:
    """Keep every ``scale``-th pixel in both directions, starting at ``phase``.

    ``out[..., i, j] = x[..., scale * i + phase, scale * j + phase]``.

    Shape:
        - x: (B, C, H, W) or (C, H, W), H and W divisible by scale
        - output: (B, C, H / scale, W / scale) or (C, H / scale, W / scale)
    """
    x4, squeezed = _as_4d(x, "x")
    s, p = _check_scale_phase(scale, phase)
    h, w = x4.shape[-2:]
    if h % s or w % s:
        raise InputError(
            f"image of {h}x{w} pixels cannot be decimated by scale {s}: H and W must be divisible by {s}"
        )
    y = x4[..., p::s, p::s]
    return y.squeeze(0) if squeezed else y


def shift(x: torch.Tensor, pixels: int | tuple[int, int], mode: PaddingMode = "reflect") -> torch.Tensor:
    """Translate the image content by an integer number of pixels (misregistration).

    Sign convention (as ``np.roll`` and ``scipy.ndimage.shift``): ``pixels = (dy, dx)`` moves the
    content down by ``dy`` rows and right by ``dx`` columns, ``out[..., i, j] = x[..., i - dy, j - dx]``;
    the uncovered border is filled from ``x`` extended with ``mode``. An int shifts both axes equally.

    Shape:
        - x: (B, C, H, W) or (C, H, W)
        - output: same as x
    """
    x4, squeezed = _as_4d(x, "x")
    if isinstance(pixels, (int, np.integer)) and not isinstance(pixels, bool):
        dy = dx = int(pixels)
    elif (
        isinstance(pixels, (tuple, list))
        and len(pixels) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pixels)
    ):
        dy, dx = int(pixels[0]), int(pixels[1])
    else:
        raise InputError(f"shift must be an integer or a pair of integers (dy, dx) in pixels, got {pixels!r}")
    if dy == 0 and dx == 0:
        return x
    h, w = x4.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        raise InputError(f"a shift of ({dy}, {dx}) pixels is not smaller than the {h}x{w} image")
    xp = pad(x4, max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0), mode)
    top, left = max(-dy, 0), max(-dx, 0)
    y = xp[..., top : top + h, left : left + w]
    return y.squeeze(0) if squeezed else y


def upsample_in_phase(
    lr: torch.Tensor,
    scale: int,
    phase: int = 0,
    mode: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
) -> torch.Tensor:
    """Interpolate an LR image onto the HR grid that :func:`decimate` samples from.

    LR pixel ``i`` sits at HR pixel ``scale * i + phase``; HR pixel ``k`` takes the value of the
    interpolant at LR coordinate ``(k - phase) / scale``. Interpolation is
    ``torch.nn.functional.grid_sample`` (cubic convolution with a = -0.75 for ``bicubic``) with
    ``border`` padding: HR pixels beyond the first or last LR pixel are extrapolated from the
    edge-replicated LR image. ``bicubic`` is computed as the separable product ``A_h X A_w^T``
    (:func:`cubic_upsampling_matrix`): the same numbers as ``grid_sample``, several times faster on a
    CPU. (The grid is expressed for ``align_corners=False``, which is the same
    sampling as ``align_corners=True`` with the matching coordinates and needs no special case for
    a 1-pixel LR side.) Hence ``decimate(upsample_in_phase(y, s, p),
    s, p) == y`` up to float rounding. Differentiable and built from ONNX-exportable ops
    (``arange``, ``grid_sample``).

    Shape:
        - lr: (B, C, h, w) or (C, h, w)
        - output: (B, C, h * scale, w * scale) or (C, h * scale, w * scale)
    """
    x4, squeezed = _as_4d(lr, "lr")
    s, p = _check_scale_phase(scale, phase)
    if mode not in ("bicubic", "bilinear", "nearest"):
        raise InputError(f"upsampling mode must be 'bicubic', 'bilinear' or 'nearest', got {mode!r}")
    if mode == "bicubic":
        y = _bicubic_in_phase(x4, s, p)
        return y.squeeze(0) if squeezed else y
    b, _, h, w = x4.shape
    dtype, device = x4.dtype, x4.device
    # LR coordinate u of each HR pixel, mapped to grid_sample's normalised coordinate for
    # align_corners=False (pixel i spans [i, i + 1) of a grid of n pixels): g = (2u + 1) / n - 1.
    # Equivalent to align_corners=True with g = 2u / (n - 1) - 1, and well defined for n = 1.
    ys = (torch.arange(h * s, dtype=dtype, device=device) - p) / s
    xs = (torch.arange(w * s, dtype=dtype, device=device) - p) / s
    gy = (2.0 * ys + 1.0) / h - 1.0
    gx = (2.0 * xs + 1.0) / w - 1.0
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    grid = grid.unsqueeze(0).expand(b, h * s, w * s, 2)
    y = F.grid_sample(x4, grid, mode=mode, padding_mode="border", align_corners=False)
    return y.squeeze(0) if squeezed else y


CUBIC_A = -0.75  # the cubic-convolution parameter of torch's bicubic interpolation


def cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic-convolution kernel (``a = -0.75``, as torch's bicubic) at distances ``t``."""
    a = CUBIC_A
    x = t.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def cubic_upsampling_matrix(n: int, s: int, p: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(s n, n) matrix of bicubic in-phase upsampling along one axis: row ``k`` interpolates at LR
    coordinate ``(k - p) / s`` from the taps ``floor - 1 .. floor + 2``, clamped to ``0 .. n - 1`` (edge
    replication, as ``grid_sample``'s border padding). Built from ONNX-exportable ops."""
    u = (torch.arange(n * s, dtype=dtype, device=device) - p) / s
    base = torch.floor(u)
    columns = torch.arange(n, device=device)
    matrix = torch.zeros(n * s, n, dtype=dtype, device=device)
    for j in (-1, 0, 1, 2):
        tap = (base + j).clamp(0, n - 1).to(columns.dtype)
        weight = cubic_weights(u - (base + j))
        matrix = matrix + weight[:, None] * (tap[:, None] == columns[None, :]).to(dtype)
    return matrix


def _bicubic_in_phase(x: torch.Tensor, s: int, p: int) -> torch.Tensor:
    """Bicubic in-phase upsampling of (B, C, h, w) as two matrix products, ``A_h X A_w^T`` (the same
    numbers as ``grid_sample``'s bicubic with border padding, several times faster on a CPU)."""
    h, w = x.shape[-2:]
    a_h = cubic_upsampling_matrix(h, s, p, x.dtype, x.device)
    a_w = cubic_upsampling_matrix(w, s, p, x.dtype, x.device)
    return torch.matmul(a_h, torch.matmul(x, a_w.T))
