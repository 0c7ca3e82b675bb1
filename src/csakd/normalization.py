"""Input normalisation: from a file's units to [0, 1], and to the networks' [-1, 1].

Models hold no data statistics; a checkpoint stores a :class:`Normalization` so that fusing needs
nothing else. Kinds:

- ``none``: the data are already in [0, 1] (e.g. the reference's AVIRIS files).
- ``fixed``: divide the HSI by ``hsi_scale`` and the MSI by ``msi_scale`` (e.g. 65535 for 16-bit data).
- ``per_image``: divide both images by one factor taken from the LR-HSI (its maximum), as the
  training cubes were divided by their own maximum; the fused image is multiplied back. Taking the
  factor from the LR-HSI keeps the MSI on the same scale as the HSI, as a response whose rows sum to 1
  gives; for sensors with other units use ``fixed``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from csakd.errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: this module also serves the torch-free ONNX runtime
    import torch

log = logging.getLogger(__name__)

#: A tensor or a NumPy array: :func:`to_network` and :func:`from_network` take either.
ArrayT = TypeVar("ArrayT", "torch.Tensor", np.ndarray)

KINDS = ("none", "fixed", "per_image")
#: Input values beyond this many times the range a checkpoint was trained on are called absurd.
ABSURD_FACTOR = 1e6


@dataclass(frozen=True)
class Normalization:
    kind: Literal["none", "fixed", "per_image"] = "per_image"
    hsi_scale: float = 1.0
    msi_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"normalisation {self.kind!r}: expected one of {', '.join(KINDS)}")
        if not (self.hsi_scale > 0 and self.msi_scale > 0):
            raise InputError(f"normalisation scales must be positive, got {self.hsi_scale}, {self.msi_scale}")

    def factors(self, lr_hsi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The divisors of the HSI and the MSI, shaped (B, 1, 1, 1) for a (B, C, h, w) LR-HSI."""
        import torch

        b = lr_hsi.shape[0]
        if self.kind == "per_image":
            peak = lr_hsi.detach().reshape(b, -1).amax(dim=1).clamp_min(1e-12).reshape(b, 1, 1, 1)
            return peak, peak
        hsi = torch.full((b, 1, 1, 1), self.hsi_scale if self.kind == "fixed" else 1.0, dtype=lr_hsi.dtype,
                         device=lr_hsi.device)
        msi = torch.full_like(hsi, self.msi_scale if self.kind == "fixed" else 1.0)
        return hsi, msi

    def factors_numpy(self, lr_hsi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The numpy twin of :meth:`factors` (no PyTorch needed): the divisors of the HSI and the MSI.

        ``per_image``: the maximum of each image of ``lr_hsi`` (at least 1e-12); ``fixed``: ``hsi_scale`` and
        ``msi_scale``; ``none``: 1. Computed in ``lr_hsi``'s dtype, as :meth:`factors` is.

        Shape:
            - lr_hsi: (B, C, h, w)
            - output: two (B, 1, 1, 1) arrays
        """
        lr = np.asarray(lr_hsi)
        b = lr.shape[0]
        if self.kind == "per_image":
            peak = np.maximum(lr.reshape(b, -1).max(axis=1), lr.dtype.type(1e-12)).reshape(b, 1, 1, 1)
            return peak, peak.copy()
        hsi = np.full((b, 1, 1, 1), self.hsi_scale if self.kind == "fixed" else 1.0, dtype=lr.dtype)
        msi = np.full((b, 1, 1, 1), self.msi_scale if self.kind == "fixed" else 1.0, dtype=lr.dtype)
        return hsi, msi

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return cls(**data)


def to_network(x01: ArrayT, *, inplace: bool = False) -> ArrayT:
    """[0, 1] -> the networks' [-1, 1], for tensors and NumPy arrays; ``inplace`` overwrites ``x01`` (the same
    float operations)."""
    if not inplace:
        return x01 * 2.0 - 1.0
    if isinstance(x01, np.ndarray):
        x01 *= 2.0
        x01 -= 1.0
        return x01
    return x01.mul_(2.0).sub_(1.0)


def from_network(x: ArrayT, *, inplace: bool = False) -> ArrayT:
    """The networks' [-1, 1] -> [0, 1], for tensors and NumPy arrays; ``inplace`` overwrites ``x`` (the same
    float operations)."""
    if not inplace:
        return (x + 1.0) * 0.5
    if isinstance(x, np.ndarray):
        x += 1.0
        x *= 0.5
        return x
    return x.add_(1.0).mul_(0.5)


def value_problems(normalization: Normalization, lr_hsi: np.ndarray, hr_msi: np.ndarray, *,
                   names: tuple[str, str] = ("lr_hsi", "hr_msi")) -> list[str]:
    """What is odd about the (finite) values of an LR-HSI / HR-MSI pair for a checkpoint of ``normalization``:
    negative values (radiance and reflectance are not negative), and values beyond :data:`ABSURD_FACTOR`
    times the range the checkpoint was trained on ([0, hsi_scale] / [0, msi_scale] for ``fixed``, [0, 1] for
    ``none`` and for the LR-HSI under ``per_image``, [0, the LR-HSI's maximum] for its HR-MSI), with counts."""
    lr, msi = np.asarray(lr_hsi), np.asarray(hr_msi)
    if normalization.kind == "fixed":
        refs = (normalization.hsi_scale, normalization.msi_scale)
    elif normalization.kind == "per_image":  # both images are divided by the LR-HSI's maximum
        refs = (1.0, max(1.0, float(np.max(lr))))
    else:
        refs = (1.0, 1.0)
    problems = []
    for name, data, ref in ((names[0], lr, refs[0]), (names[1], msi, refs[1])):
        negative = int(np.count_nonzero(data < 0))
        if negative:
            problems.append(f"{name} has {negative} negative value(s) among {data.size} (minimum "
                            f"{float(data.min()):.4g}): radiance and reflectance are not negative")
        bound = ABSURD_FACTOR * ref
        absurd = int(np.count_nonzero(np.abs(data) > bound))
        if absurd:
            largest = float(np.abs(data).max())
            problems.append(f"{name} has {absurd} value(s) beyond {bound:.3g} (largest {largest:.4g}),"
                            f" over {ABSURD_FACTOR:.0e} times the range the checkpoint was trained on "
                            f"([0, {ref:.4g}]): wrong units or a damaged file?")
    return problems


def check_values(normalization: Normalization, lr_hsi: np.ndarray, hr_msi: np.ndarray, *, strict: bool = False,
                 names: tuple[str, str] = ("lr_hsi", "hr_msi")) -> None:
    """Log a warning for each of :func:`value_problems`; with ``strict``, refuse the pair instead.

    Raises:
        InputError: ``strict`` and the pair has negative or absurd values (all the problems in one line).
    """
    problems = value_problems(normalization, lr_hsi, hr_msi, names=names)
    if problems and strict:
        raise InputError("; ".join(problems) + " (refused by --strict)")
    for problem in problems:
        log.warning("%s", problem)
