"""The in-memory image cube that every reader returns and every writer takes.

A :class:`Cube` holds one hyperspectral or multispectral image as a bands-first array ``data`` of shape
``(C, H, W)`` (C bands, H rows, W columns), with optional per-band wavelengths in nanometres, band names
and georeferencing. Band-last layouts exist only inside the readers and writers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from csakd.errors import InputError

__all__ = [
    "IDENTITY_TRANSFORM",
    "Cube",
    "GeoInfo",
    "available_memory_bytes",
    "check_allocation",
    "wavelengths_to_nm",
]

#: The affine transform that maps pixel (col, row) to (col, row): rasterio order (a, b, c, d, e, f).
IDENTITY_TRANSFORM: tuple[float, float, float, float, float, float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

#: Wavelength values all below this are taken to be micrometres when no unit is stated.
MICROMETRE_THRESHOLD = 20.0

_NM_UNITS = {"nm", "nanometer", "nanometers", "nanometre", "nanometres"}
_UM_UNITS = {"um", "µm", "μm", "micrometer", "micrometers", "micrometre", "micrometres", "micron", "microns"}
_MM_UNITS = {"mm", "millimeter", "millimeters", "millimetre", "millimetres"}


def wavelengths_to_nm(values: Sequence[float] | np.ndarray, units: str | None = None) -> np.ndarray:
    """Return wavelengths as a float64 vector in nanometres.

    Args:
        values: the wavelengths, any 1-D sequence of numbers (a ``(C,)`` vector; ``(1, C)`` or ``(C, 1)``
            MATLAB vectors are flattened).
        units: the unit the values are in (``"Nanometers"``, ``"Micrometers"``, ``"um"``, ``"mm"``...,
            case-insensitive). ``None``, ``""``, ``"Unknown"`` or ``"Index"`` mean "not stated": then values
            that are all below 20 are taken to be micrometres (no hyperspectral sensor has bands below
            20 nm) and multiplied by 1000; otherwise they are taken as nanometres.

    Raises:
        InputError: if the values are not finite numbers, not a vector, or the unit is not a length.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"wavelengths must be numbers, got {values!r:.80}") from exc
    if arr.ndim > 1 and sum(s != 1 for s in arr.shape) <= 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(
            f"wavelengths must be a vector (one value per band), got an array of shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise InputError(f"wavelengths contain {int(np.sum(~np.isfinite(arr)))} NaN/Inf value(s)")
    unit = (units or "").strip().lower()
    if unit in _NM_UNITS:
        return arr.copy()
    if unit in _UM_UNITS:
        return arr * 1000.0
    if unit in _MM_UNITS:
        return arr * 1.0e6
    if unit not in ("", "unknown", "index"):
        raise InputError(
            f"wavelength unit {units!r} is not supported: expected nanometres or micrometres "
            "(e.g. 'Nanometers', 'Micrometers', 'nm', 'um')"
        )
    if arr.size and float(np.max(arr)) < MICROMETRE_THRESHOLD:
        return arr * 1000.0
    return arr.copy()


def available_memory_bytes() -> int:
    """Bytes of memory this process could allocate now: ``MemAvailable`` from ``/proc/meminfo`` on Linux,
    else the free physical pages, else the total physical memory, else 16 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for name in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            pages = os.sysconf(name)
            size = os.sysconf("SC_PAGE_SIZE")
            if pages > 0 and size > 0:
                return int(pages) * int(size)
        except (ValueError, OSError, AttributeError):
            continue
    return 16 * 1024**3


#: A read is refused when it would need more than this many times the available memory.
MEMORY_MARGIN = 2.0


def check_allocation(shape: Sequence[int], itemsize: int, what: str) -> int:
    """Refuse, before allocating, an array that could not possibly fit in memory.

    Args:
        shape: the array's declared shape (from a file header).
        itemsize: bytes per element of the array that would be allocated.
        what: names the array in the message (e.g. the file path).

    Returns:
        The number of bytes the array needs.

    Raises:
        InputError: if the array would need more than ``MEMORY_MARGIN`` (2) times the memory available now
            (:func:`available_memory_bytes`), or a dimension is negative; the message states the size.
    """
    dims = [int(s) for s in shape]
    if any(d < 0 for d in dims):
        raise InputError(f"{what}: declared shape {tuple(dims)} has a negative dimension")
    need = math.prod(dims) * int(itemsize)
    avail = available_memory_bytes()
    if need > MEMORY_MARGIN * avail:
        raise InputError(
            f"{what}: the declared shape {tuple(dims)} would need {_human_bytes(need)} of memory, but only "
            f"{_human_bytes(avail)} is available; check the header/array shape, or crop the file first"
        )
    return need


def _human_bytes(n: float) -> str:
    """Format a byte count with a binary unit, e.g. ``'1.5 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024.0 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} PiB"  # pragma: no cover


@dataclass
class GeoInfo:
    """Georeferencing carried from a GeoTIFF (or an ENVI "data ignore value") to a written file.

    Attributes:
        crs: the coordinate reference system as a WKT string (anything ``rasterio.crs.CRS.from_user_input``
            accepts, e.g. ``"EPSG:32633"``, also works for writing), or ``None`` if there is none.
        transform: the six affine coefficients in rasterio order ``(a, b, c, d, e, f)``: the map coordinates
            of pixel corner (col, row) are ``x = a col + b row + c``, ``y = d col + e row + f``.
        nodata: the value that marks missing pixels, or ``None``.
    """

    crs: str | None = None
    transform: tuple[float, float, float, float, float, float] = IDENTITY_TRANSFORM
    nodata: float | None = None

    def __post_init__(self) -> None:
        try:
            coeffs = tuple(float(v) for v in self.transform)
        except (TypeError, ValueError) as exc:
            raise InputError(f"geo transform must be 6 numbers, got {self.transform!r}") from exc
        if len(coeffs) != 6 or not all(math.isfinite(v) for v in coeffs):
            raise InputError(
                f"geo transform must be 6 finite numbers (a, b, c, d, e, f in rasterio order), got {coeffs!r}"
            )
        self.transform = (coeffs[0], coeffs[1], coeffs[2], coeffs[3], coeffs[4], coeffs[5])
        if self.nodata is not None:
            self.nodata = float(self.nodata)

    @property
    def is_georeferenced(self) -> bool:
        """True when there is a CRS or a transform other than the identity."""
        return self.crs is not None or self.transform != IDENTITY_TRANSFORM


@dataclass
class Cube:
    """One image cube with its metadata.

    Attributes:
        data: the image, shape ``(C, H, W)`` (bands first), floating point (float32 unless a reader was asked
            for another float type); integer or boolean input is converted to float32.
        wavelengths: band centre wavelengths in nanometres, float64, shape ``(C,)``, or ``None`` if unknown.
            Values given in micrometres (all below 20) are converted to nanometres on construction.
        band_names: one name per band, or ``None``.
        geo: georeferencing, or ``None``.
        source: the path the cube was read from (empty if built in memory).

    Raises:
        InputError: if ``data`` is not a 3-D numeric array with at least one band, row and column, or the
            wavelengths / band names do not have one entry per band.
    """

    data: np.ndarray
    wavelengths: np.ndarray | None = None
    band_names: list[str] | None = None
    geo: GeoInfo | None = None
    source: str = field(default="")

    def __post_init__(self) -> None:
        what = f"cube from {self.source}" if self.source else "cube"
        data = self.data
        if not isinstance(data, np.ndarray):
            try:
                data = np.asarray(data)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{what}: data must be a numeric array") from exc
        if data.dtype.kind not in "biuf":
            raise InputError(
                f"{what}: data has dtype {data.dtype}, expected a real numeric type (integer or float)"
            )
        if data.ndim != 3:
            raise InputError(
                f"{what}: data has {data.ndim} dimension(s) {data.shape}, expected 3: (bands, height, width)"
            )
        c, h, w = data.shape
        if c < 1:
            raise InputError(f"{what}: data has zero bands (shape {data.shape}), expected at least one")
        if h < 1 or w < 1:
            raise InputError(f"{what}: data is {h}x{w} pixels (shape {data.shape}), expected at least 1x1")
        if data.dtype.kind != "f":
            data = data.astype(np.float32)
        self.data = data
        if self.wavelengths is not None:
            wl = wavelengths_to_nm(self.wavelengths)
            if wl.shape != (c,):
                raise InputError(f"{what}: {wl.size} wavelengths given for {c} bands, expected one per band")
            self.wavelengths = wl
        if self.band_names is not None:
            names = [str(n) for n in self.band_names]
            if len(names) != c:
                raise InputError(
                    f"{what}: {len(names)} band names given for {c} bands, expected one per band"
                )
            self.band_names = names

    @property
    def bands(self) -> int:
        """Number of bands C."""
        return int(self.data.shape[0])

    @property
    def height(self) -> int:
        """Number of rows H."""
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        """Number of columns W."""
        return int(self.data.shape[2])

    def check_finite(self, name: str = "cube") -> None:
        """Raise if the data holds NaN or infinite values.

        Args:
            name: what to call the cube in the message (e.g. ``"lr_hsi"``).

        Raises:
            InputError: naming ``name``, the number of NaN and of infinite values, and the shape.
        """
        finite = np.isfinite(self.data)
        if bool(np.all(finite)):
            return
        n_nan = int(np.count_nonzero(np.isnan(self.data)))
        n_inf = int(np.count_nonzero(np.isinf(self.data)))
        where = f" (read from {self.source})" if self.source else ""
        raise InputError(
            f"{name}{where} has {n_nan + n_inf} non-finite value(s) ({n_nan} NaN, {n_inf} Inf) among "
            f"{self.data.size} in shape {self.data.shape}: expected finite values; fill or mask them first"
        )
