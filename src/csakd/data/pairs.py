"""Datasets of paired samples ``{"lr_hsi", "hr_msi", "hr_hsi"}`` (float32 tensors in [0, 1], bands first).

Two kinds:

- :class:`SimulatedPairs`: HR-HSI cubes, with the LR-HSI and HR-MSI simulated from each (augmented)
  crop by a :class:`~csakd.degradation.Degradation`. A crop is taken with a margin (a multiple of the
  scale, at least the blur's radius plus any shift) from the cube padded by reflection, flipped and rotated,
  degraded, and the margin cut away: the LR pixels of a crop are exactly those of the whole image degraded
  at once, and flips and rotations keep the decimation phase (they act before the degradation).
- :class:`PairedCrops`: pairs that are already on disk (e.g. the reference's AVIRIS files): the three images
  are cropped at LR-aligned offsets (multiples of the scale) and get the same flip and rotation. A flip of
  a pre-made pair moves the decimation phase (phase p becomes s - 1 - p); the reference does it anyway.

Randomness: each sample draws from a generator seeded by ``(seed, epoch, index)``, so a run's data are the
same whatever the number of workers, and a resumed run sees the same samples (call :meth:`set_epoch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from csakd.degradation import Degradation
from csakd.degradation.spatial import shift as shift_image
from csakd.errors import InputError

Sample = dict[str, torch.Tensor]


def _generator(seed: int, epoch: int, index: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)
    return g


def augment_views(x: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 flips/rotations of the last two axes (code 0..7; 0 = identity)."""
    if code & 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k=code & 3, dims=(-2, -1)) if code & 3 else x


def _aligned_offset(limit: int, scale: int, g: torch.Generator) -> int:
    """A random offset in [0, limit] that is a multiple of ``scale``."""
    steps = limit // scale
    return int(torch.randint(0, steps + 1, (1,), generator=g)) * scale


#: the largest spectral augmentation strength accepted
MAX_SPECTRAL_STRENGTH = 2.0


def check_spectral_strength(strength: float, what: str = "spectral augmentation") -> float:
    """``strength`` as a float if it is a finite number in [0, MAX_SPECTRAL_STRENGTH], else an InputError
    naming ``what`` (the option the user gave)."""
    if not (math.isfinite(strength) and 0 <= strength <= MAX_SPECTRAL_STRENGTH):
        raise InputError(f"{what} {strength}: expected a strength in [0, {MAX_SPECTRAL_STRENGTH:g}] (0: none)")
    return float(strength)


def spectral_multiplier(bands: int, strength: float, g: torch.Generator) -> torch.Tensor:
    """A random positive per-band multiplier (``bands``,): a brightness times a smooth spectral curve (see
    :class:`SimulatedPairs`' ``spectral``)."""
    u = (torch.rand((), generator=g) * 2 - 1) * strength
    r = torch.randn(3, generator=g)
    t = torch.linspace(0, 1, bands)
    k = torch.arange(1, 4, dtype=torch.float32)
    curve = (r[:, None] * torch.cos(math.pi * k[:, None] * t[None]) / k[:, None]).sum(0)
    return torch.exp(u + 0.5 * strength * curve)


class SimulatedPairs(Dataset[Sample]):
    """Pairs simulated on the fly from HR-HSI cubes (each (C, H, W), values in [0, 1]).

    Args:
        cubes: the HR-HSI cubes; H and W must be multiples of the scale (crop them first).
        degradation: how to make the LR-HSI and HR-MSI (its noise settings are not applied here: the
            trainer adds training noise; see :func:`simulate_full` for a noisy test pair).
        crop: HR crop size (a multiple of the scale), or None for whole images.
        augment: random flips and 90-degree rotations (rotations only for square crops).
        samples_per_epoch: how many crops make an epoch (default: one per cube).
        max_shift: for mixed alignment, each sample's LR-HSI is shifted by a random 0..max_shift LR pixels.
        spectral: the strength ``a`` of the spectral augmentation (0: none): each crop's cube is multiplied,
            before it is degraded, by a random brightness ``exp(u)`` (``u`` uniform in [-a, a]) and a random smooth
            spectral curve ``exp(a/2 * sum_k r_k cos(pi k t) / k)`` over the band position ``t`` in [0, 1]
            (``k`` = 1..3, ``r_k`` standard normal): a new illuminant and exposure, so that a few training scenes
            show more spectra and levels. The LR-HSI and HR-MSI are simulated from the multiplied cube, so the
            pair stays consistent with the degradation.
        seed: the data seed.
    """

    def __init__(
        self,
        cubes: Sequence[torch.Tensor | np.ndarray],
        degradation: Degradation,
        *,
        crop: int | None = None,
        augment: bool = False,
        samples_per_epoch: int | None = None,
        max_shift: int = 0,
        spectral: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not cubes:
            raise InputError("no HR-HSI cubes to build pairs from")
        self.degradation = degradation
        self.scale = s = degradation.config.scale
        bands = {int(c.shape[0]) for c in cubes}
        if len(bands) != 1:
            raise InputError(f"the cubes have different band counts {sorted(bands)}: expected one band count")
        self.bands = bands.pop()
        if crop is not None and (crop <= 0 or crop % s):
            raise InputError(f"crop {crop} must be a positive multiple of the scale {s}")
        radius = max(degradation.kernel.shape[-2:]) // 2
        self.margin = s * math.ceil((radius + s * max_shift) / s) if (radius or max_shift) else 0
        self.cubes: list[torch.Tensor] = []
        for i, cube in enumerate(cubes):
            t = torch.as_tensor(np.asarray(cube, dtype=np.float32))
            h, w = t.shape[-2:]
            if h % s or w % s:
                raise InputError(f"cube {i} is {h}x{w}: both sides must be multiples of the scale {s}")
            if crop is not None and (h < crop or w < crop):
                raise InputError(f"cube {i} is {h}x{w}, smaller than the crop {crop}")
            m = self.margin
            if m >= min(h, w):
                raise InputError(f"cube {i} is {h}x{w}: too small for a blur margin of {m} pixels")
            self.cubes.append(F.pad(t[None], (m, m, m, m), mode="reflect")[0] if m else t)
        self.crop = crop
        self.augment = augment
        self.max_shift = max_shift
        self.spectral = check_spectral_strength(spectral)
        self.seed = seed
        self.epoch = 0
        self.samples_per_epoch = samples_per_epoch or len(self.cubes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> Sample:
        g = _generator(self.seed, self.epoch, index)
        padded = self.cubes[index % len(self.cubes)]
        m, s = self.margin, self.scale
        h, w = padded.shape[-2] - 2 * m, padded.shape[-1] - 2 * m
        if self.crop is None:
            y0 = x0 = 0
            ch, cw = h, w
        else:
            y0 = _aligned_offset(h - self.crop, s, g)
            x0 = _aligned_offset(w - self.crop, s, g)
            ch = cw = self.crop
        window = padded[:, y0 : y0 + ch + 2 * m, x0 : x0 + cw + 2 * m]
        if self.augment:
            code = int(torch.randint(0, 8 if ch == cw else 1, (1,), generator=g))
            code = code if ch == cw else int(torch.randint(0, 2, (1,), generator=g)) * 4
            window = augment_views(window, code)
        if self.spectral:
            window = window * spectral_multiplier(self.bands, self.spectral, g)[:, None, None]
        k = int(torch.randint(0, self.max_shift + 1, (1,), generator=g)) if self.max_shift else 0
        return self._degrade(window, k)

    def _degrade(self, window: torch.Tensor, shift_lr: int) -> Sample:
        m, s = self.margin, self.scale
        lr = self.degradation.degrade_spatial(window[None])[0]
        if shift_lr:
            lr = shift_image(lr[None], shift_lr)[0]
        hr = window[:, m : window.shape[-2] - m, m : window.shape[-1] - m] if m else window
        lm = m // s
        lr = lr[:, lm : lr.shape[-2] - lm, lm : lr.shape[-1] - lm] if lm else lr
        msi = self.degradation.response.apply(hr[None])[0]
        return {"lr_hsi": lr.contiguous(), "hr_msi": msi.contiguous(), "hr_hsi": hr.contiguous()}


class PairedCrops(Dataset[Sample]):
    """Aligned crops, flips and rotations of pre-made pairs (each a dict with lr_hsi, hr_msi, hr_hsi)."""

    def __init__(
        self,
        source: Dataset[Sample] | Sequence[Sample],
        scale: int,
        *,
        crop: int | None = None,
        augment: bool = False,
        samples_per_epoch: int | None = None,
        seed: int = 0,
    ) -> None:
        self.source = source
        self.scale = scale
        if crop is not None and (crop <= 0 or crop % scale):
            raise InputError(f"crop {crop} must be a positive multiple of the scale {scale}")
        self.crop = crop
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.n = len(source)  # type: ignore[arg-type]
        if self.n == 0:
            raise InputError("no pairs in the dataset")
        self.samples_per_epoch = samples_per_epoch or self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> Sample:
        g = _generator(self.seed, self.epoch, index)
        item = self.source[index % self.n]
        lr, msi, hr = item["lr_hsi"], item["hr_msi"], item["hr_hsi"]
        s = self.scale
        h, w = hr.shape[-2:]
        if tuple(msi.shape[-2:]) != (h, w) or tuple(lr.shape[-2:]) != (h // s, w // s):
            raise InputError(
                f"pair {index % self.n}: hr_hsi {h}x{w}, hr_msi {msi.shape[-2]}x{msi.shape[-1]}, lr_hsi "
                f"{lr.shape[-2]}x{lr.shape[-1]} do not agree at scale {s}"
            )
        if self.crop is not None:
            if h < self.crop or w < self.crop:
                raise InputError(f"pair {index % self.n} is {h}x{w}, smaller than the crop {self.crop}")
            y0 = _aligned_offset(h - self.crop, s, g)
            x0 = _aligned_offset(w - self.crop, s, g)
            c = self.crop
            hr = hr[:, y0 : y0 + c, x0 : x0 + c]
            msi = msi[:, y0 : y0 + c, x0 : x0 + c]
            lr = lr[:, y0 // s : (y0 + c) // s, x0 // s : (x0 + c) // s]
        if self.augment:
            square = hr.shape[-1] == hr.shape[-2]
            code = (
                int(torch.randint(0, 8, (1,), generator=g))
                if square
                else 4 * int(torch.randint(0, 2, (1,), generator=g))
            )
            lr, msi, hr = (augment_views(t, code) for t in (lr, msi, hr))
        return {"lr_hsi": lr.contiguous(), "hr_msi": msi.contiguous(), "hr_hsi": hr.contiguous()}
