"""The noise-aware residual base fit-scene gives its network (``FitOptions.base = "denoised"``).

The network's ``regression`` base (:mod:`csakd.models.detail`) was tuned on noise-free CAVE pairs; on real
(noisy) pairs it copies both inputs' noise into the result: the LR-HSI's through the bicubic upsampling, the
HR-MSI's through the injected detail, amplified in flat windows where the local regression's gain is large.
Two settings, both estimated from the pair alone and stored in the network's
:class:`~csakd.models.config.ModelConfig` (so ``csakd fuse`` with the checkpoint reproduces the result):

- ``detail_eps``, the ridge of each window's MSI covariance, set to the HR-MSI's noise variance (the median
  over its bands, :func:`noise_sigma`): a window whose MSI varies no more than its noise injects little
  detail (by default the ridge is 4e-7, far below the noise of real images);
- ``output_*``, a projection of the output onto the LR-HSI's noise-whitened principal subspace
  (:func:`hsi_subspace`): each band divided by its estimated noise, the principal directions kept whose
  variance exceeds twice the (unit) noise variance (keeping a direction costs its noise, dropping it its
  signal: the rule of HySime's minimum-error subspace with white noise), and projected back. Real spectra
  lie close to a low-dimensional subspace; the noise in the other directions goes.

Measured on benchmarks/fit_scene_truth.py's five pairs (real cubes as the truth, 35 dB noise on both inputs):
see the README's fit-scene section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BaseSettings", "base_settings", "hsi_subspace", "noise_sigma"]

#: a noise sigma (on [0, 1] data) below which no noise is measured (float32 rounding of noise-free data)
MIN_SIGMA = 1e-6

_LAPLACE = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], dtype=torch.float64) / 6.0
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)


def noise_sigma(image: torch.Tensor, flat_share: float = 0.1) -> np.ndarray:
    """Per band, the standard deviation of white noise in ``image`` (C, H, W): the robust spread (median
    absolute value / 0.6745) of a second-difference filter of unit noise gain (Immerkaer's mask / 6), over the
    ``flat_share`` of pixels with the smallest Sobel gradient (where the scene's own detail is least).

    Measured on the truth benchmark's images (35 dB noise): within 3-45% of the true sigma, above it on
    textured scenes.
    """
    x = image.to(torch.float64)[:, None]
    if min(x.shape[-2:]) < 3:
        return np.zeros(x.shape[0])
    high = F.conv2d(x, _LAPLACE[None, None])[:, 0]
    gx = F.conv2d(x, _SOBEL[None, None])[:, 0]
    gy = F.conv2d(x, _SOBEL.t().contiguous()[None, None])[:, 0]
    grad = (gx.square() + gy.square()).flatten(1)
    high = high.flatten(1)
    keep = max(1, round(flat_share * grad.shape[1]))
    idx = grad.argsort(dim=1)[:, :keep]
    flat = high.gather(1, idx)
    return (flat.abs().median(dim=1).values / 0.6745).numpy()


def hsi_subspace(lr: torch.Tensor, sigma: np.ndarray, valid: np.ndarray | None = None,
                 ratio: float = 2.0) -> dict[str, Any] | None:
    """The LR-HSI's (C, h, w) noise-whitened principal subspace, as the oblique projection
    ``x -> mean + W E E^T W^-1 (x - mean)`` (``W`` = diag(noise sigma per band), ``E`` the whitened
    covariance's eigenvectors whose eigenvalues exceed ``ratio``).

    Returns None when no noise was measured (a median sigma below :data:`MIN_SIGMA`) or when every direction
    is kept. Otherwise a dict: ``mean`` (C), ``analysis`` (k, C) = ``E^T W^-1``, ``synthesis`` (k, C) =
    ``(W E)^T``, ``dimension`` k and ``eigenvalues`` (the largest, in units of the noise variance). Bands
    with a sigma below a tenth of the median get that tenth (a band with no measurable noise does not
    dominate the whitened covariance).
    """
    c = lr.shape[0]
    y = lr.to(torch.float64).reshape(c, -1)
    if valid is not None:
        y = y[:, torch.from_numpy(np.asarray(valid, dtype=bool).reshape(-1))]
    med = float(np.median(sigma))
    if not med > MIN_SIGMA or y.shape[1] < 2:
        return None
    w = torch.from_numpy(np.maximum(np.asarray(sigma, dtype=np.float64), 0.1 * med))
    mean = y.mean(dim=1)
    yw = (y - mean[:, None]) / w[:, None]
    ev, vec = torch.linalg.eigh(yw @ yw.T / yw.shape[1])
    ev, vec = ev.flip(0), vec.flip(1)
    k = max(1, int((ev > ratio).sum()))
    if k >= c:
        return None
    e = vec[:, :k]
    return {"mean": mean, "analysis": (e / w[:, None]).T, "synthesis": (e * w[:, None]).T, "dimension": k,
            "eigenvalues": [float(v) for v in ev[: min(c, k + 4)]]}


@dataclass
class BaseSettings:
    """What :func:`base_settings` sets in the network's config, and why (``report``: JSON-ready)."""

    overrides: dict[str, Any]
    report: dict[str, Any]


def base_settings(lr: torch.Tensor, msi: torch.Tensor, valid: np.ndarray | None = None) -> BaseSettings:
    """The ``ModelConfig`` settings of the denoised base for a normalised pair (LR-HSI (C, h, w) and HR-MSI
    (c, H, W), both on [0, 1]): ``detail_eps`` and the ``output_*`` projection (see the module docstring).
    The network works on [-1, 1] (twice the [0, 1] values), so variances are 4 times and the mean ``2 m - 1``.
    """
    from csakd.models.detail import LOCAL_EPS

    msi_sigma = noise_sigma(msi)
    hsi_sigma = noise_sigma(lr)
    eps = max(LOCAL_EPS, 4.0 * float(np.median(msi_sigma ** 2)))
    overrides: dict[str, Any] = {"detail_eps": eps}
    sub = hsi_subspace(lr, hsi_sigma, valid=valid)
    report: dict[str, Any] = {
        "kind": "denoised",
        "msi_noise_sigma": [float(v) for v in msi_sigma],
        "hsi_noise_sigma": {"median": float(np.median(hsi_sigma)), "min": float(hsi_sigma.min()),
                            "max": float(hsi_sigma.max())},
        "units": "noise sigmas on the [0, 1] scale of each image (divided by its peak)",
        "detail_eps": eps,
        "subspace_dimension": None if sub is None else sub["dimension"],
        "subspace_eigenvalues": None if sub is None else sub["eigenvalues"],
        "note": "the regression base's ridge is the HR-MSI's noise variance (network scale); the output is "
                "projected onto the LR-HSI's noise-whitened principal subspace (directions above twice the "
                "noise variance)" + ("" if sub is not None else "; no projection: no noise measured or every "
                                     "direction kept"),
    }
    if sub is not None:
        overrides.update({
            "output_mean": tuple(float(2.0 * v - 1.0) for v in sub["mean"]),
            "output_analysis": tuple(tuple(float(v) for v in row) for row in sub["analysis"]),
            "output_synthesis": tuple(tuple(float(v) for v in row) for row in sub["synthesis"]),
        })
    return BaseSettings(overrides=overrides, report=report)
