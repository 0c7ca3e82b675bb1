"""Image-quality metrics of a fused HR-HSI against the truth, per image, with their definitions.

Every metric takes ``pred`` and ``target`` of shape (B, C, H, W) (a (C, H, W) pair is one image),
on the data scale (the paper's numbers: [0, 1] data after mapping back from the network's [-1, 1]),
and returns a float64 tensor of shape (B,): one value per image. Computations run in float64.
Averaging over images happens in one place, :func:`summarize`.

Definitions (other papers differ: global peak, radians, a fixed 100/4; say which one a number uses):

- PSNR ("band", the CSAKD paper's): per band, ``10 log10(max_b(target)^2 / MSE_b)``, mean over bands; dB.
- PSNR (fixed peak P): ``10 log10(P^2 / MSE)`` with MSE over all values; dB.
- SAM: the angle between predicted and true spectra, mean over pixels; degrees.
- ERGAS: ``100 / scale * sqrt(mean_b(MSE_b / mean_b(target)^2))``; unitless (lower is better).
- RMSE: ``sqrt(MSE)`` over all values, times ``units`` (to report in the data's original units).
- SSIM: Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, per band over the valid region, mean over bands.
- CC: Pearson's correlation coefficient of each band with the same band of the target, mean over bands
  (insensitive to a gain and an offset per band; used for no-reference consistency checks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from csakd.errors import InputError

__all__ = [
    "cc",
    "check_tensor_pair",
    "compute_metrics",
    "ergas",
    "metrics_to_rows",
    "psnr",
    "rmse",
    "sam",
    "ssim",
    "summarize",
]

#: Metric keys of :func:`compute_metrics`, and whether higher values are better.
HIGHER_IS_BETTER = {
    "psnr": True,
    "psnr_fixed": True,
    "sam": False,
    "ergas": False,
    "rmse": False,
    "ssim": True,
}


def check_tensor_pair(
    pred: torch.Tensor, target: torch.Tensor, names: tuple[str, str] = ("pred", "target")
) -> None:
    """Refuse a pair that is not two tensors of one shape, (B, C, H, W) or (C, H, W) (the losses' check too)."""
    for name, t in zip(names, (pred, target), strict=True):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim not in (3, 4):
            raise InputError(f"{name} must have shape (B, C, H, W) or (C, H, W), got {tuple(t.shape)}")
    if pred.shape != target.shape:
        raise InputError(
            f"{names[0]} and {names[1]} must have the same shape, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def _is_positive_number(value: object) -> bool:
    """A finite int or float above 0 (not a bool)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and value > 0)


def _pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a pred/target pair and return both as float64 (B, C, H, W)."""
    check_tensor_pair(pred, target)
    if pred.ndim == 3:
        pred, target = pred.unsqueeze(0), target.unsqueeze(0)
    if pred.numel() == 0:
        raise InputError(f"pred and target are empty ({tuple(pred.shape)})")
    return pred.detach().to(torch.float64), target.detach().to(torch.float64)


def _band_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE per image and band, (B, C)."""
    return (pred - target).square().mean(dim=(-2, -1))


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    peak: Literal["band"] | float = "band",
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image.

    - ``peak="band"`` (the CSAKD paper's): for each band b, ``PSNR_b = 10 log10(P_b^2 / MSE_b)`` with
      ``P_b = max over pixels of target_b`` and ``MSE_b`` the mean squared error over the band's
      pixels; the result is the mean of ``PSNR_b`` over bands.
    - ``peak=P`` (a number, e.g. 1.0 for [0, 1] data): ``10 log10(P^2 / MSE)``, MSE over all values.

    A zero error gives ``inf`` (for ``"band"``: any band with zero error makes the mean ``inf``); a
    band whose peak is 0 with a non-zero error gives ``-inf``.

    Shape:
        - pred, target: (B, C, H, W) or (C, H, W)
        - output: (B,)

    Example:
        >>> t = torch.full((1, 2, 4, 4), 0.5)
        >>> psnr(t + 0.05, t, peak=1.0)
        tensor([26.0206], dtype=torch.float64)
    """
    p, t = _pair(pred, target)
    if isinstance(peak, str):
        if peak != "band":
            raise InputError(f"peak must be 'band' or a positive number, got {peak!r}")
        mse_b = _band_mse(p, t)
        peak_b = t.amax(dim=(-2, -1))
        ratio = peak_b.square() / mse_b
        ratio = torch.where(mse_b == 0, torch.full_like(ratio, math.inf), ratio)
        return (10.0 * torch.log10(ratio)).mean(dim=1)
    if not _is_positive_number(peak):
        raise InputError(f"peak must be 'band' or a positive number, got {peak!r}")
    mse = (p - t).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(float(peak) ** 2 / mse)


def sam(pred: torch.Tensor, target: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """Spectral angle mapper in degrees, per image.

    For each pixel, ``angle = arccos(<p, t> / max(|p| |t|, eps))`` between the predicted and true
    spectra (vectors over the C bands), the cosine clamped to [-1, 1]; the result is the mean angle
    over the H x W pixels, in degrees. A pixel where either spectrum is zero counts as 90 degrees.
    Scaling a spectrum does not change its angle.

    Shape:
        - pred, target: (B, C, H, W) or (C, H, W)
        - output: (B,)
    """
    p, t = _pair(pred, target)
    dot = (p * t).sum(dim=1)
    norms = p.norm(dim=1) * t.norm(dim=1)
    cos = (dot / norms.clamp_min(eps)).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos)).mean(dim=(1, 2))


def ergas(pred: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """ERGAS (relative dimensionless global error in synthesis), per image.

    ``ERGAS = 100 / scale * sqrt(mean over bands of MSE_b / mu_b^2)``, where ``MSE_b`` is the band's
    mean squared error and ``mu_b`` the band's mean in the target; ``scale`` is the HR/LR resolution
    ratio (4 in the paper). A band with zero mean gives ``inf``. Lower is better.

    Shape:
        - pred, target: (B, C, H, W) or (C, H, W)
        - output: (B,)
    """
    if not _is_positive_number(scale):
        raise InputError(f"ERGAS needs the positive resolution ratio scale, got {scale!r}")
    p, t = _pair(pred, target)
    mse_b = _band_mse(p, t)
    mu_b = t.mean(dim=(-2, -1))
    return 100.0 / float(scale) * torch.sqrt((mse_b / mu_b.square()).mean(dim=1))


def rmse(pred: torch.Tensor, target: torch.Tensor, *, units: float = 1.0) -> torch.Tensor:
    """Root mean squared error over all C x H x W values, times ``units``, per image.

    With [0, 1] data scaled from raw values by ``(raw - lo) / (hi - lo)``, ``units = hi - lo``
    reports the RMSE in the raw data's units.

    Shape:
        - pred, target: (B, C, H, W) or (C, H, W)
        - output: (B,)
    """
    if not _is_positive_number(units):
        raise InputError(f"units must be a positive number (data units per 1.0), got {units!r}")
    p, t = _pair(pred, target)
    return torch.sqrt((p - t).square().mean(dim=(1, 2, 3))) * float(units)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = size // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity, per image: the mean over bands of each band's mean SSIM.

    Local statistics use an 11x11 Gaussian window (sigma 1.5, normalised) at every position where
    the window fits inside the image (the valid region; no padding); variances and covariance are
    population ones (``E[xy] - E[x]E[y]``). Per position,
    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = data_range``. This equals scikit-image's
    ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=L)`` per band.

    Shape:
        - pred, target: (B, C, H, W) or (C, H, W), H and W at least 11
        - output: (B,)
    """
    if not _is_positive_number(data_range):
        raise InputError(f"data_range must be a positive number, got {data_range!r}")
    p, t = _pair(pred, target)
    _, c, h, w = p.shape
    size = 11
    if h < size or w < size:
        raise InputError(f"SSIM needs images of at least {size}x{size} pixels, got {h}x{w}")
    g = _gaussian_window(size, 1.5).to(p.device)
    col = g.reshape(1, 1, size, 1).expand(5 * c, 1, size, 1)
    row = g.reshape(1, 1, 1, size).expand(5 * c, 1, 1, size)
    stack = torch.cat([p, t, p * p, t * t, p * t], dim=1)  # (B, 5C, H, W)
    filt = F.conv2d(F.conv2d(stack, col, groups=5 * c), row, groups=5 * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = filt.split(c, dim=1)
    var_x = e_xx - mu_x.square()
    var_y = e_yy - mu_y.square()
    cov = e_xy - mu_x * mu_y
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    )
    return s.mean(dim=(2, 3)).mean(dim=1)


def cc(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-correlation: Pearson's correlation coefficient per band, mean over bands, per image.

    ``CC_b = sum((p - mean p)(t - mean t)) / sqrt(sum (p - mean p)^2 sum (t - mean t)^2)`` over the band's
    pixels; 1 is perfect. A band that is constant in ``pred`` or ``target`` gives 0 for that band.

    Shape:
        - pred, target: (B, C, H, W) or (C, H, W)
        - output: (B,)

    Example:
        >>> t = torch.rand(1, 2, 8, 8, dtype=torch.float64)
        >>> cc(3 * t + 1, t)
        tensor([1.], dtype=torch.float64)
    """
    p, t = _pair(pred, target)
    p0 = p - p.mean(dim=(-2, -1), keepdim=True)
    t0 = t - t.mean(dim=(-2, -1), keepdim=True)
    num = (p0 * t0).sum(dim=(-2, -1))
    den = torch.sqrt(p0.square().sum(dim=(-2, -1)) * t0.square().sum(dim=(-2, -1)))
    per_band = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))
    return per_band.clamp(-1.0, 1.0).mean(dim=1)


def compute_metrics(
    pred: torch.Tensor, target: torch.Tensor, *, scale: float, units: float = 1.0
) -> dict[str, torch.Tensor]:
    """All metrics per image: ``psnr`` (per-band peak), ``psnr_fixed`` (peak 1), ``sam`` (degrees),
    ``ergas``, ``rmse`` (times ``units``) and ``ssim`` (data range 1). Inputs are [0, 1] data.

    Shape:
        - pred, target: (B, C, H, W) or (C, H, W)
        - output: a dict of (B,) float64 tensors
    """
    p, t = _pair(pred, target)
    return {
        "psnr": psnr(p, t, peak="band"),
        "psnr_fixed": psnr(p, t, peak=1.0),
        "sam": sam(p, t),
        "ergas": ergas(p, t, scale),
        "rmse": rmse(p, t, units=units),
        "ssim": ssim(p, t, data_range=1.0),
    }


def metrics_to_rows(metrics: Mapping[str, torch.Tensor]) -> list[dict[str, float]]:
    """Turn :func:`compute_metrics`' dict of (B,) tensors into B dicts of floats (one per image)."""
    if not metrics:
        return []
    sizes = {k: int(v.numel()) for k, v in metrics.items()}
    if len(set(sizes.values())) != 1:
        raise InputError(f"every metric must have one value per image, got sizes {sizes}")
    n = next(iter(sizes.values()))
    values = {k: v.detach().reshape(-1).cpu().tolist() for k, v in metrics.items()}
    return [{k: float(values[k][i]) for k in metrics} for i in range(n)]


def summarize(per_image: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over images: the one place where metrics are reduced.

    Args:
        per_image: one dict per image with the same keys (e.g. from :func:`metrics_to_rows`).

    Returns:
        ``{key: mean over images}``; an ``inf`` value (a perfect PSNR) makes the mean ``inf``.
    """
    if len(per_image) == 0:
        raise InputError("summarize needs at least one image's metrics, got none")
    keys = list(per_image[0])
    for i, row in enumerate(per_image):
        if sorted(row) != sorted(keys):
            raise InputError(f"image {i} has metrics {sorted(row)}, expected {sorted(keys)} like image 0")
    return {k: sum(float(row[k]) for row in per_image) / len(per_image) for k in keys}
