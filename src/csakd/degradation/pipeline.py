"""The observation model: simulate an (LR-HSI, HR-MSI) pair from an HR-HSI.

``Y = D(B * X) + n`` (blur, decimation, an optional misregistration of the LR grid, noise) and
``Z = R X + n`` (spectral response, noise).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from csakd.degradation.noise import add_noise
from csakd.degradation.spatial import PaddingMode, _as_4d, blur, decimate, gaussian_kernel, load_psf, shift
from csakd.degradation.srf import SpectralResponse, resolve_response
from csakd.errors import InputError

__all__ = ["Degradation", "DegradationConfig"]

logger = logging.getLogger(__name__)


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass
class DegradationConfig:
    """How an HR-HSI is degraded into the LR-HSI and HR-MSI.

    Attributes:
        scale: the ratio s of the HR and LR grids (LR pixel = s x s HR pixels).
        blur_size: side of the Gaussian blur kernel in HR pixels (odd).
        blur_sigma: the Gaussian's standard deviation in HR pixels.
        psf: path to a 2-D PSF array (.npy/.npz/.mat/.txt); replaces the Gaussian; normalised to sum 1.
        phase: which HR pixel of each s x s cell decimation keeps, in [0, s) (the same in both axes).
        srf: the spectral response spec for :func:`resolve_response` (used by
            :meth:`Degradation.from_config`).
        hsi_snr_db: SNR of the white noise added to the LR-HSI, in dB; None = no noise.
        msi_snr_db: SNR of the white noise added to the HR-MSI, in dB; None = no noise.
        shift: misregistration of the LR-HSI in LR pixels: an int moves the content by that many
            pixels down and right, a pair ``(dy, dx)`` sets each axis (see :func:`shift`).
        noise_per_image: the noise power follows each image's mean square (True) or the batch's (False).
        padding: how blur extends the border (see :mod:`csakd.degradation.spatial`).
    """

    scale: int = 4
    blur_size: int = 9
    blur_sigma: float = 2.0
    psf: str | None = None
    phase: int = 0
    srf: str | None = None
    hsi_snr_db: float | None = None
    msi_snr_db: float | None = None
    shift: int | tuple[int, int] = 0
    noise_per_image: bool = True
    padding: PaddingMode = "reflect"

    def __post_init__(self) -> None:
        if not _is_int(self.scale) or self.scale < 1:
            raise InputError(f"degradation scale must be a positive integer, got {self.scale!r}")
        if not _is_int(self.phase) or not 0 <= self.phase < self.scale:
            raise InputError(
                f"degradation phase must be an integer in [0, scale={self.scale}), got {self.phase!r}"
            )
        if self.psf is None:
            if not _is_int(self.blur_size) or self.blur_size < 1 or self.blur_size % 2 == 0:
                raise InputError(f"blur_size must be a positive odd integer, got {self.blur_size!r}")
            if (
                isinstance(self.blur_sigma, bool)
                or not isinstance(self.blur_sigma, (int, float))
                or not math.isfinite(self.blur_sigma)
                or self.blur_sigma <= 0
            ):
                raise InputError(f"blur_sigma must be a positive number of pixels, got {self.blur_sigma!r}")
        for name in ("hsi_snr_db", "msi_snr_db"):
            v = getattr(self, name)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            ):
                raise InputError(f"{name} must be a finite number of dB or None, got {v!r}")
        if isinstance(self.shift, list):
            self.shift = (self.shift[0], self.shift[1]) if len(self.shift) == 2 else self.shift
        if not (
            _is_int(self.shift)
            or (
                isinstance(self.shift, tuple) and len(self.shift) == 2 and all(_is_int(v) for v in self.shift)
            )
        ):
            raise InputError(f"shift must be an integer or a pair (dy, dx) of LR pixels, got {self.shift!r}")
        if self.padding not in ("reflect", "symmetric", "replicate", "circular", "zeros"):
            raise InputError(
                f"padding must be reflect, symmetric, replicate, circular or zeros, got {self.padding!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-able dict of the fields."""
        d = asdict(self)
        if isinstance(self.shift, tuple):
            d["shift"] = list(self.shift)
        return d


class Degradation:
    """Simulate ``(lr_hsi, hr_msi)`` from ``hr_hsi`` with a fixed blur, decimation and response.

    Order: ``lr = decimate(blur(X), scale, phase)``, then :func:`shift` by ``config.shift`` LR pixels,
    then noise at ``hsi_snr_db``; ``msi = R X`` then noise at ``msi_snr_db``. Noise is drawn from
    ``generator`` (LR-HSI first, then HR-MSI).

    Args:
        config: the degradation settings.
        response: the spectral response R (C HSI bands to c MSI bands).

    Attributes:
        config, response: as given.
        kernel: the blur kernel, (kh, kw) float64, sums to 1 (the Gaussian or the PSF file's).

    Example:
        >>> r = SpectralResponse.from_matrix(np.ones((3, 8)))
        >>> lr, msi = Degradation(DegradationConfig(scale=4), r).simulate(torch.rand(2, 8, 32, 32))
        >>> tuple(lr.shape), tuple(msi.shape)
        ((2, 8, 8, 8), (2, 3, 32, 32))
    """

    def __init__(self, config: DegradationConfig, response: SpectralResponse) -> None:
        if not isinstance(config, DegradationConfig):
            raise InputError(f"config must be a DegradationConfig, got {type(config).__name__}")
        if not isinstance(response, SpectralResponse):
            raise InputError(f"response must be a SpectralResponse, got {type(response).__name__}")
        self.config = config
        self.response = response
        if config.psf is not None:
            self.kernel = torch.as_tensor(load_psf(config.psf), dtype=torch.float64)
            logger.info("degradation: PSF %s of %dx%d", config.psf, *self.kernel.shape)
        else:
            self.kernel = gaussian_kernel(config.blur_size, float(config.blur_sigma), dtype=torch.float64)

    @classmethod
    def from_config(
        cls,
        config: DegradationConfig,
        *,
        wavelengths: np.ndarray | Sequence[float] | None = None,
        bands: int | None = None,
    ) -> Degradation:
        """Build the degradation, resolving ``config.srf`` for an HSI with these wavelengths (nm) / bands."""
        if config.srf is None:
            raise InputError(
                "the degradation needs a spectral response: set srf (a CSV, matrix file or sensor name)"
            )
        return cls(config, resolve_response(config.srf, wavelengths, bands=bands))

    def __repr__(self) -> str:
        return f"Degradation({self.config!r}, {self.response!r})"

    def _check(self, hr_hsi: torch.Tensor) -> tuple[torch.Tensor, bool]:
        x4, squeezed = _as_4d(hr_hsi, "hr_hsi")
        bands, h, w = x4.shape[1:]
        if bands != self.response.hsi_bands:
            raise InputError(
                f"hr_hsi has {bands} bands but the spectral response ({self.response.source}) "
                f"expects {self.response.hsi_bands}"
            )
        s = self.config.scale
        if h % s or w % s:
            raise InputError(
                f"hr_hsi has {h}x{w} pixels, not divisible by the scale {s}; crop it to "
                f"{h - h % s}x{w - w % s}"
            )
        return x4, squeezed

    def degrade_spatial(self, x: torch.Tensor) -> torch.Tensor:
        """``D(B * x)``: blur then decimate, without shift or noise (any band count).

        Shape:
            - x: (B, C, H, W) or (C, H, W), H and W divisible by scale
            - output: (B, C, H / scale, W / scale) or (C, H / scale, W / scale)
        """
        x4, squeezed = _as_4d(x, "x")
        s = self.config.scale
        if x4.shape[-2] % s or x4.shape[-1] % s:
            raise InputError(f"x has {x4.shape[-2]}x{x4.shape[-1]} pixels, not divisible by the scale {s}")
        y = decimate(blur(x4, self.kernel, padding=self.config.padding), s, self.config.phase)
        return y.squeeze(0) if squeezed else y

    def simulate(
        self, hr_hsi: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(lr_hsi, hr_msi)`` simulated from ``hr_hsi``.

        Shape:
            - hr_hsi: (B, C, H, W) or (C, H, W), H and W divisible by scale, C = response.hsi_bands
            - lr_hsi: (B, C, H / scale, W / scale) (same rank as the input)
            - hr_msi: (B, c, H, W) (same rank as the input)
        """
        x4, squeezed = self._check(hr_hsi)
        cfg = self.config
        lr = self.degrade_spatial(x4)
        lr = shift(lr, cfg.shift, mode=cfg.padding)
        lr = add_noise(lr, cfg.hsi_snr_db, generator=generator, per_image=cfg.noise_per_image)
        msi = self.response.apply(x4)
        msi = add_noise(msi, cfg.msi_snr_db, generator=generator, per_image=cfg.noise_per_image)
        if squeezed:
            return lr.squeeze(0), msi.squeeze(0)
        return lr, msi
