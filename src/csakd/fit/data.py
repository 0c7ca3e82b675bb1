"""Training samples for fit-scene's reduced-scale (Wald) fit."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from csakd.data.pairs import SimulatedPairs
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse
from csakd.errors import InputError

__all__ = ["WaldCrops"]

Sample = dict[str, torch.Tensor]


class WaldCrops(Dataset[Sample]):
    """Training crops one scale down: ``(S(Y), S(Z)) -> Y`` from the scene's own LR-HSI and HR-MSI.

    The scene ``[Y; S(Z)]`` (LR-HSI bands, then the MSI degraded to the LR-HSI grid) goes through
    :class:`~csakd.data.pairs.SimulatedPairs` with the estimated blur and phase, and a "response" that picks
    the ``S(Z)`` bands: each sample is a crop (taken with a margin, flipped and rotated before the blur, so the
    decimation phase is kept) whose LR-HSI part is degraded into the input ``lr_hsi``, whose ``S(Z)`` part is
    the input ``hr_msi`` and whose LR-HSI part is the target ``hr_hsi``.

    Args:
        lr: Y, (C, h, w) in [0, 1]; msi_lr: S(Z), (c, h, w) in [0, 1].
        config: the degradation (scale, blur, phase) to apply one scale down.
        crop: crop side in LR-HSI pixels (a multiple of the scale), None for whole images.
        samples_per_epoch, seed: as :class:`~csakd.data.pairs.SimulatedPairs`.
        kernel: the PSF (k, k, summing to 1) to use instead of the config's Gaussian.
    """

    def __init__(self, lr: np.ndarray, msi_lr: np.ndarray, config: DegradationConfig, *, crop: int | None,
                 samples_per_epoch: int, seed: int, augment: bool = True, kernel: np.ndarray | None = None) -> None:
        bands, msi_bands = int(lr.shape[0]), int(msi_lr.shape[0])
        if tuple(lr.shape[-2:]) != tuple(msi_lr.shape[-2:]):
            raise InputError(f"lr {tuple(lr.shape)} and msi_lr {tuple(msi_lr.shape)} must share the LR grid")
        pick = np.zeros((msi_bands, bands + msi_bands))
        pick[:, bands:] = np.eye(msi_bands)
        degradation = Degradation(config, SpectralResponse.from_matrix(pick, normalize=False,
                                                                       source="the scene's degraded HR-MSI"))
        if kernel is not None:  # an estimated PSF of any shape replaces the config's Gaussian
            degradation.kernel = torch.as_tensor(np.asarray(kernel, dtype=np.float64))
        scene = np.concatenate([lr, msi_lr]).astype(np.float32)
        self.bands = bands
        self.pairs = SimulatedPairs([scene], degradation, crop=crop, augment=augment,
                                    samples_per_epoch=samples_per_epoch, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.pairs.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        s = self.pairs[index]
        c = self.bands
        return {"lr_hsi": s["lr_hsi"][:c].contiguous(), "hr_msi": s["hr_msi"], "hr_hsi": s["hr_hsi"][:c].contiguous()}


