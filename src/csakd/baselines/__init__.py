"""Classical (non-learned) HSI-MSI fusion baselines, run on whole scenes on the CPU.

Every baseline has the signature
``method(lr_hsi (C, h, w), hr_msi (c, H, W), scale, *, response=None, phase=0, ...) -> (C, H, W)``:
numpy arrays or torch tensors in, float32 out (numpy when ``lr_hsi`` is numpy, else a tensor), with
``H = scale h``, ``W = scale w`` and decimation keeping HR pixel ``scale i + phase`` (the grid of
:mod:`csakd.degradation`). ``response`` is the spectral response ``R`` (c, C) of ``Z = R X`` (an array,
tensor or :class:`~csakd.degradation.SpectralResponse`), or None to estimate it where a method needs it;
``blur_kernel`` (methods other than bicubic) is the LR-HSI's blur, or None to estimate it as a Gaussian.

- ``bicubic``: :func:`~csakd.degradation.upsample_in_phase` of the LR-HSI (the MSI is not used).
- ``gsa``: Gram-Schmidt Adaptive detail injection with a regression-based pan per HSI band
  (:mod:`csakd.baselines.gsa`).
- ``cnmf``: Coupled Non-negative Matrix Factorisation (:mod:`csakd.baselines.cnmf`).
- ``hysure``: subspace fusion with vector total variation, by ADMM (:mod:`csakd.baselines.hysure`).

:data:`BASELINES` maps names to the functions; :func:`get_baseline` looks one up;
:func:`make_method` wraps one as a batch method ``(lr (B, C, h, w), msi (B, c, H, W)) -> (B, C, H, W)``
for :func:`csakd.evaluate.evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from csakd.baselines._common import Array, KernelLike, ResponseLike, prepare, to_output
from csakd.baselines.cnmf import cnmf
from csakd.baselines.gsa import gsa
from csakd.baselines.hysure import hysure
from csakd.degradation.spatial import upsample_in_phase
from csakd.errors import InputError

__all__ = ["BASELINES", "bicubic", "cnmf", "get_baseline", "gsa", "hysure", "make_method"]

logger = logging.getLogger(__name__)


def bicubic(
    lr_hsi: Array,
    hr_msi: np.ndarray | torch.Tensor,
    scale: int,
    *,
    response: ResponseLike = None,
    phase: int = 0,
    blur_kernel: KernelLike = None,
) -> Array:
    """Bicubic upsampling of the LR-HSI in phase with the decimation (the HR-MSI only fixes the grid).

    ``response`` and ``blur_kernel`` are accepted for a common signature and ignored.

    Shape:
        - lr_hsi: (C, h, w); hr_msi: (c, h scale, w scale)
        - output: (C, h scale, w scale), float32
    """
    y, _, s, p = prepare(lr_hsi, hr_msi, scale, phase)
    del response, blur_kernel
    return to_output(upsample_in_phase(y, s, p, mode="bicubic"), lr_hsi)


#: The baselines by name; each takes ``(lr_hsi, hr_msi, scale, *, response, phase, blur_kernel, ...)``.
BASELINES: dict[str, Callable[..., Any]] = {"bicubic": bicubic, "gsa": gsa, "cnmf": cnmf, "hysure": hysure}


def get_baseline(name: str) -> Callable[..., Any]:
    """The baseline called ``name`` (case-insensitive); InputError listing the valid names otherwise."""
    key = name.strip().lower() if isinstance(name, str) else name
    if not isinstance(key, str) or key not in BASELINES:
        raise InputError(f"unknown baseline {name!r}: expected one of {', '.join(sorted(BASELINES))}")
    return BASELINES[key]


def make_method(
    name: str,
    *,
    scale: int,
    phase: int = 0,
    response: ResponseLike = None,
    blur_kernel: KernelLike = None,
    **options: Any,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A baseline as a batch method for :func:`csakd.evaluate.evaluate`: ``(lr, msi) -> fused``.

    Each image of the batch is fused on its own on the CPU (the result goes back to ``lr``'s device).
    ``options`` are passed to the baseline (e.g. ``iterations=100`` for cnmf); unknown names raise here.

    Shape:
        - lr: (B, C, h, w); msi: (B, c, h scale, w scale)
        - output: (B, C, h scale, w scale) float32
    """
    fn = get_baseline(name)
    if options:
        import inspect

        accepted = set(inspect.signature(fn).parameters)
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise InputError(
                f"baseline {name!r} has no option(s) {', '.join(unknown)}; it accepts "
                f"{', '.join(sorted(accepted - {'lr_hsi', 'hr_msi', 'scale'}))}"
            )

    def run(lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        if not isinstance(lr, torch.Tensor) or not isinstance(msi, torch.Tensor) or lr.ndim != 4 or msi.ndim != 4:
            raise InputError(
                "a baseline method takes batches lr (B, C, h, w) and msi (B, c, H, W) as tensors, got "
                f"{getattr(lr, 'shape', type(lr).__name__)} and {getattr(msi, 'shape', type(msi).__name__)}"
            )
        if lr.shape[0] != msi.shape[0]:
            raise InputError(f"lr has {lr.shape[0]} images but msi has {msi.shape[0]}: expected the same batch size")
        outs = [
            fn(lr[b].cpu(), msi[b].cpu(), scale, response=response, phase=phase, blur_kernel=blur_kernel, **options)
            for b in range(lr.shape[0])
        ]
        return torch.stack(outs).to(lr.device)

    return run
