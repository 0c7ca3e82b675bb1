"""The observation model of HSI-MSI fusion: ``Y = D(B * X) + n`` (LR-HSI), ``Z = R X + n`` (HR-MSI).

- :mod:`~csakd.degradation.srf`: the spectral response ``R`` (matrices, CSV curves, named sensors).
- :mod:`~csakd.degradation.spatial`: blur ``B``, decimation ``D``, misregistration, in-phase upsampling.
- :mod:`~csakd.degradation.noise`: white Gaussian noise at a given SNR.
- :mod:`~csakd.degradation.pipeline`: :class:`Degradation`, the whole model from a :class:`DegradationConfig`.
"""

from __future__ import annotations

from csakd.degradation.matrix_file import read_matrix
from csakd.degradation.noise import add_noise, noise_sigma
from csakd.degradation.pipeline import Degradation, DegradationConfig
from csakd.degradation.spatial import (
    PaddingMode,
    blur,
    decimate,
    gaussian_kernel,
    load_psf,
    pad,
    shift,
    upsample_in_phase,
)
from csakd.degradation.srf import SpectralResponse, resolve_response

__all__ = [
    "Degradation",
    "DegradationConfig",
    "PaddingMode",
    "SpectralResponse",
    "add_noise",
    "blur",
    "decimate",
    "gaussian_kernel",
    "load_psf",
    "noise_sigma",
    "pad",
    "read_matrix",
    "resolve_response",
    "shift",
    "upsample_in_phase",
]
