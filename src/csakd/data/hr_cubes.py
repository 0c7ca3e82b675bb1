"""From files to training and evaluation data: cube folders with on-the-fly simulation, and the AVIRIS layout.

Splits of a single folder are deterministic: the cubes are sorted by name and every k-th
(``k = round(1 / val_fraction)``, starting at the k-th) goes to validation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from csakd.data import read_cube
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse, resolve_response
from csakd.errors import InputError

log = logging.getLogger(__name__)

CUBE_SUFFIXES = (".mat", ".npy", ".npz", ".hdr", ".tif", ".tiff")


@dataclass
class HRCube:
    """An HR-HSI cube ready for simulation: (C, H, W) float32 in [0, 1], its name and wavelengths (nm)."""

    name: str
    data: np.ndarray
    wavelengths: np.ndarray | None
    peak: float  # the divisor that brought it to [0, 1] (1.0 when not normalised)


def _is_cave_dir(path: Path) -> bool:
    return any(path.glob("*_ms_*.png")) or any(path.glob("*/*_ms_*.png"))


def list_cube_files(folder: str | Path) -> list[Path]:
    """The HR-HSI cubes in ``folder``: files of a known format and CAVE scene folders, sorted by name."""
    root = Path(folder)
    if not root.exists():
        raise InputError(f"data folder {root} does not exist")
    if root.is_file() or _is_cave_dir(root):
        return [root]
    found = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() and _is_cave_dir(p):
            found.append(p)
        elif p.is_file() and p.suffix.lower() in CUBE_SUFFIXES:
            found.append(p)
    if not found:
        raise InputError(
            f"no HR-HSI cubes in {root}: expected CAVE scene folders or {', '.join(CUBE_SUFFIXES)} files"
        )
    return found


def split_files(files: Sequence[Path], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic split: sorted by name, every k-th file (k = round(1 / val_fraction)) is validation."""
    if not (0 <= val_fraction < 1):
        raise InputError(f"validation fraction {val_fraction}: expected a number in [0, 1)")
    files = sorted(files, key=lambda p: p.name)
    if val_fraction <= 0 or len(files) < 2:
        return list(files), []
    k = max(2, round(1 / val_fraction))
    val = [f for i, f in enumerate(files) if i % k == k - 1]
    if not val:
        val = [files[-1]]
    train = [f for f in files if f not in val]
    return train, val


def center_crop(x: np.ndarray, size: int | None, multiple: int) -> np.ndarray:
    """The central ``size`` x ``size`` crop (or the largest one whose sides are multiples of ``multiple``)."""
    if multiple < 1:
        raise InputError(f"scale must be a positive integer, got {multiple}")
    if size is not None and size < 1:
        raise InputError(f"centre crop {size}: expected a positive number of pixels")
    h, w = x.shape[-2:]
    if size is not None:
        if h < size or w < size:
            raise InputError(f"image is {h}x{w}, smaller than the centre crop {size}")
        th, tw = size, size
    else:
        th, tw = h - h % multiple, w - w % multiple
    if th % multiple or tw % multiple:
        raise InputError(f"centre crop {th}x{tw} is not a multiple of the scale {multiple}")
    y0, x0 = (h - th) // 2, (w - tw) // 2
    return x[..., y0 : y0 + th, x0 : x0 + tw]


def load_hr_cubes(
    files: Sequence[Path],
    *,
    scale: int,
    crop: int | None = None,
    normalize: str = "max",
    wavelengths: np.ndarray | None = None,
    variable: str | None = None,
    layout: str = "auto",
) -> list[HRCube]:
    """Read HR-HSI cubes, centre-crop them, and bring each to [0, 1].

    ``normalize``: ``max`` divides each cube by its own maximum (the CAVE protocol), ``none`` keeps the
    values (they must already be in [0, 1]), a number divides by that number.
    """
    cubes = []
    for f in files:
        cube = read_cube(f, variable=variable, layout=layout)  # type: ignore[arg-type]
        cube.check_finite(str(f))
        data = center_crop(cube.data, crop, scale).astype(np.float32, copy=False)
        if normalize == "max":
            peak = float(data.max())
            if peak <= 0:
                raise InputError(f"{f}: the cube's maximum is {peak}; cannot normalise by it")
        elif normalize == "none":
            peak = 1.0
        else:
            try:
                peak = float(normalize)
            except ValueError as exc:
                raise InputError(f"--normalize {normalize!r}: expected max, none or a number") from exc
        data = np.ascontiguousarray(data / peak, dtype=np.float32)
        wl = cube.wavelengths if cube.wavelengths is not None else wavelengths
        cubes.append(HRCube(Path(f).stem if Path(f).is_file() else Path(f).name, data, wl, peak))
    bands = {c.data.shape[0] for c in cubes}
    if len(bands) > 1:
        detail = ", ".join(f"{c.name}: {c.data.shape[0]}" for c in cubes[:6])
        raise InputError(f"the cubes have different band counts ({detail}): expected one band count")
    return cubes


def build_degradation(config: DegradationConfig, cubes: Sequence[HRCube]) -> Degradation:
    """The degradation for these cubes, its response resolved at their wavelengths."""
    if not cubes:
        raise InputError("no cubes to build a degradation for")
    if config.srf is None:
        raise InputError("a spectral response is needed to simulate the HR-MSI: pass --srf (CSV, matrix or sensor)")
    wl = cubes[0].wavelengths
    response = resolve_response(config.srf, wl, bands=cubes[0].data.shape[0])
    return Degradation(config, response)


def simulate_pair(
    degradation: Degradation, cube: np.ndarray, *, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """One whole-image pair (with the degradation's noise and shift) as float32 tensors."""
    hr = torch.as_tensor(cube, dtype=torch.float32)
    lr, msi = degradation.simulate(hr, generator=generator)
    return {"lr_hsi": lr.float(), "hr_msi": msi.float(), "hr_hsi": hr}


def response_from_dict(data: dict | None) -> SpectralResponse | None:
    return None if data is None else SpectralResponse.from_dict(data)
