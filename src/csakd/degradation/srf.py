"""Spectral response functions: the matrix ``R`` of the HR-MSI observation ``Z = R X``.

A spectral response maps the ``C`` bands of a hyperspectral image to the ``c`` bands of a
multispectral one. Row ``k`` of ``R`` holds the weights of the HSI bands in MSI band ``k``;
rows are normalised to sum to 1, so a spectrally flat scene keeps its value in every MSI band.

Responses come from a matrix (array or file), from a CSV of sampled curves, or from a named sensor
(a camera in colour-science, a satellite in pyrsr: :mod:`csakd.degradation.sensors`); matrix files are read by
:func:`csakd.degradation.matrix_file.read_matrix`. Sampled curves are resampled to the HSI band
centre wavelengths by linear interpolation (0 outside the curve's range), i.e. each HSI band is
treated as a narrow band at its centre wavelength.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csakd.degradation import sensors
from csakd.degradation.matrix_file import read_matrix
from csakd.errors import InputError

__all__ = ["SpectralResponse", "resolve_response"]

logger = logging.getLogger(__name__)

#: File suffixes read as a plain (c, C) matrix by :func:`resolve_response`.
MATRIX_SUFFIXES = (".npy", ".npz", ".mat", ".txt")


def _as_wavelengths(wavelengths: Any, what: str) -> np.ndarray:
    try:
        wl = np.asarray(wavelengths, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{what}: wavelengths must be a 1-D array of numbers in nm, got {wavelengths!r}"
        ) from exc
    if wl.ndim != 1 or wl.size == 0 or not np.all(np.isfinite(wl)):
        raise InputError(
            f"{what}: wavelengths must be a non-empty 1-D array of finite values in nm, got shape {wl.shape}"
        )
    return wl


def _resample_curves(
    curve_wl: np.ndarray, curves: np.ndarray, wavelengths: np.ndarray, band_names: Sequence[str], what: str
) -> np.ndarray:
    """Resample curves (n, c) sampled at ``curve_wl`` (n,) to ``wavelengths``; rows normalised to sum 1.

    Returns a (c, C) float64 matrix. Raises InputError when a curve is zero at every HSI wavelength.
    """
    order = np.argsort(curve_wl, kind="stable")
    curve_wl = curve_wl[order]
    curves = curves[order]
    rows = np.stack(
        [np.interp(wavelengths, curve_wl, curves[:, k], left=0.0, right=0.0) for k in range(curves.shape[1])]
    )
    sums = rows.sum(axis=1)
    empty = [k for k in range(rows.shape[0]) if not sums[k] > 0]
    if empty:
        described = []
        for k in empty:
            support = curve_wl[curves[:, k] > 0]
            where = f"{support.min():g}-{support.max():g} nm" if support.size else "nowhere (all zero)"
            described.append(f"{band_names[k]} (non-zero over {where})")
        raise InputError(
            f"{what}: band(s) {', '.join(described)} do not overlap the HSI wavelengths "
            f"{wavelengths.min():g}-{wavelengths.max():g} nm; choose bands inside the HSI range"
        )
    return rows / sums[:, None]


@dataclass(frozen=True, eq=False)
class SpectralResponse:
    """A spectral response matrix ``R`` (c MSI bands x C HSI bands).

    Attributes:
        matrix: (c, C) float64, read-only; row k holds the weights of the HSI bands in MSI band k.
            Each row sums to 1 unless built with ``from_matrix(..., normalize=False)``.
        band_names: the c MSI band names.
        source: where the response came from (a path or a sensor spec that :func:`resolve_response`
            accepts again), stored in checkpoints and reports.

    Example:
        >>> r = SpectralResponse.from_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]]))
        >>> r.matrix
        array([[0.5, 0.5, 0. ],
               [0. , 0. , 1. ]])
    """

    matrix: np.ndarray
    band_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=np.float64, copy=True)
        if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
            raise InputError(
                f"spectral response matrix must be 2-D (c MSI bands, C HSI bands), got shape {m.shape}"
            )
        if not np.all(np.isfinite(m)):
            raise InputError("spectral response matrix contains NaN or infinite values")
        names = tuple(str(n) for n in self.band_names)
        if len(names) != m.shape[0]:
            raise InputError(f"spectral response has {m.shape[0]} rows but {len(names)} band names")
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "band_names", names)
        object.__setattr__(self, "source", str(self.source))

    @property
    def msi_bands(self) -> int:
        """c: the number of MSI bands (rows)."""
        return int(self.matrix.shape[0])

    @property
    def hsi_bands(self) -> int:
        """C: the number of HSI bands (columns)."""
        return int(self.matrix.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpectralResponse):
            return NotImplemented
        return (
            self.band_names == other.band_names
            and self.source == other.source
            and self.matrix.shape == other.matrix.shape
            and bool(np.array_equal(self.matrix, other.matrix))
        )

    def __hash__(self) -> int:
        return hash((self.band_names, self.source, self.matrix.shape, self.matrix.tobytes()))

    def __repr__(self) -> str:
        return (
            f"SpectralResponse(c={self.msi_bands}, C={self.hsi_bands}, "
            f"band_names={self.band_names}, source={self.source!r})"
        )

    def apply(self, hr_hsi: torch.Tensor) -> torch.Tensor:
        """Project an HSI onto the MSI bands: ``Z[b, k] = sum_j R[k, j] X[b, j]``.

        Differentiable in ``hr_hsi``; computed in the input's dtype and device.

        Shape:
            - hr_hsi: (B, C, H, W) or (C, H, W)
            - output: (B, c, H, W) or (c, H, W), matching the input's rank
        """
        if not isinstance(hr_hsi, torch.Tensor) or hr_hsi.ndim not in (3, 4):
            shape = tuple(hr_hsi.shape) if isinstance(hr_hsi, torch.Tensor) else type(hr_hsi).__name__
            raise InputError(f"hr_hsi must be a (B, C, H, W) or (C, H, W) tensor, got {shape}")
        if not hr_hsi.is_floating_point():
            raise InputError(f"hr_hsi must be a floating-point tensor, got {hr_hsi.dtype}")
        bands = hr_hsi.shape[-3]
        if bands != self.hsi_bands:
            raise InputError(
                f"hr_hsi has {bands} bands but the spectral response ({self.source}) expects {self.hsi_bands}"
            )
        r = torch.tensor(self.matrix, dtype=hr_hsi.dtype, device=hr_hsi.device)
        return torch.einsum("kc,...chw->...khw", r, hr_hsi)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict ``{"matrix": [[...]], "band_names": [...], "source": str}``."""
        return {
            "matrix": self.matrix.tolist(),
            "band_names": list(self.band_names),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpectralResponse:
        """Rebuild a response written by :meth:`to_dict` (the matrix is kept as stored, not renormalised)."""
        if not isinstance(d, dict) or "matrix" not in d:
            raise InputError(
                "a stored spectral response must be a dict with keys 'matrix', 'band_names', 'source'; "
                f"got {type(d).__name__} with keys {sorted(d) if isinstance(d, dict) else []}"
            )
        matrix = np.asarray(d["matrix"], dtype=np.float64)
        names = d.get("band_names") or [
            f"band_{k}" for k in range(matrix.shape[0] if matrix.ndim == 2 else 0)
        ]
        return cls(matrix=matrix, band_names=tuple(names), source=str(d.get("source", "dict")))

    @classmethod
    def from_matrix(
        cls,
        m: np.ndarray | Sequence[Sequence[float]],
        *,
        normalize: bool = True,
        band_names: Sequence[str] | None = None,
        source: str = "matrix",
    ) -> SpectralResponse:
        """Build a response from a (c, C) matrix.

        Args:
            m: (c, C) weights, rows = MSI bands, columns = HSI bands.
            normalize: divide each row by its sum so that it sums to 1 (rows must then have a positive sum).
            band_names: c names; default ``band_0 .. band_{c-1}``.
            source: a description stored with the response.
        """
        try:
            arr = np.array(m, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"spectral response matrix must be numeric, got {type(m).__name__}") from exc
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InputError(
                f"spectral response matrix must be 2-D (c MSI bands, C HSI bands), got shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise InputError("spectral response matrix contains NaN or infinite values")
        if np.any(arr < 0):
            logger.warning(
                "spectral response matrix from %s has negative entries (min %g)", source, arr.min()
            )
        if normalize:
            sums = arr.sum(axis=1)
            bad = [int(k) for k in np.flatnonzero(~(sums > 0))]
            if bad:
                raise InputError(
                    f"spectral response rows {bad} sum to {sums[bad].tolist()}; "
                    "every row needs a positive sum to be normalised to 1"
                )
            arr = arr / sums[:, None]
        names = (
            tuple(band_names) if band_names is not None else tuple(f"band_{k}" for k in range(arr.shape[0]))
        )
        return cls(matrix=arr, band_names=names, source=source)

    @classmethod
    def from_csv(
        cls, path: str | os.PathLike[str], wavelengths: np.ndarray | Sequence[float]
    ) -> SpectralResponse:
        """Read sampled response curves from a CSV and resample them to the HSI wavelengths.

        The CSV has a header row; the first column is ``wavelength_nm`` (``wavelength_um`` is also read
        and converted), then one column per MSI band whose header is the band name. Each curve is
        linearly interpolated at ``wavelengths`` (0 outside the CSV's range) and each row normalised
        to sum 1.

        Args:
            path: the CSV file, e.g. ``srf/nikon_d700.csv`` (400-720 nm, R, G, B).
            wavelengths: (C,) HSI band centre wavelengths in nm.
        """
        p = Path(path)
        wl = _as_wavelengths(wavelengths, f"spectral response {p}")
        if not p.is_file():
            raise InputError(f"spectral response CSV {p} not found")
        with p.open(newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r and any(cell.strip() for cell in r)]
        if len(rows) < 3:
            raise InputError(f"{p}: expected a header and at least 2 rows of samples, got {len(rows)} rows")
        header = [h.strip() for h in rows[0]]
        first = header[0].lower()
        if first in ("wavelength_nm", "wavelength", "wl", "nm"):
            to_nm = 1.0
        elif first in ("wavelength_um", "um", "micrometers", "micrometres"):
            to_nm = 1000.0
        else:
            raise InputError(
                f"{p}: the first column must be 'wavelength_nm' (then one column per MSI band), "
                f"got {header[0]!r}"
            )
        if len(header) < 2:
            raise InputError(f"{p}: no band columns after {header[0]!r}")
        try:
            data = np.array([[float(c) for c in r] for r in rows[1:]], dtype=np.float64)
        except ValueError as exc:
            raise InputError(f"{p}: every value after the header must be a number ({exc})") from exc
        if data.ndim != 2 or data.shape[1] != len(header):
            raise InputError(f"{p}: every row must have {len(header)} values like the header")
        if not np.all(np.isfinite(data)):
            raise InputError(f"{p}: contains NaN or infinite values")
        names = tuple(header[1:])
        matrix = _resample_curves(data[:, 0] * to_nm, data[:, 1:], wl, names, str(p))
        return cls(matrix=matrix, band_names=names, source=str(p))

    @classmethod
    def from_sensor(cls, name: str, wavelengths: np.ndarray | Sequence[float]) -> SpectralResponse:
        """A named sensor's response, resampled to the HSI wavelengths.

        Names:
            - ``"colour:NAME"`` or ``"NAME"``: a camera of ``colour.MSDS_CAMERA_SENSITIVITIES``
              (e.g. ``"Nikon 5100 (NPL)"``), case-insensitive.
            - ``"pyrsr:SATELLITE[/SENSOR][:BANDS]"`` or ``"SATELLITE[/SENSOR][:BANDS]"``: a satellite
              from pyrsr (``pip install csakd[sensors]``), e.g. ``"Sentinel-2A"`` or
              ``"Sentinel-2A:B02,B03,B04,B08"``. SENSOR is needed only where the satellite carries
              several (``"Terra/MODIS"``). Without BANDS, all bands except thermal and panchromatic ones.

        Args:
            name: the sensor spec above.
            wavelengths: (C,) HSI band centre wavelengths in nm.
        """
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"sensor name must be a non-empty string, got {name!r}")
        wl = _as_wavelengths(wavelengths, f"sensor {name!r}")
        spec = name.strip()
        prefix, _, rest = spec.partition(":")
        kind = prefix.strip().lower()
        if kind == "colour" or kind == "color":
            found = sensors.colour_camera(rest.strip())
            if found is None:
                raise InputError(
                    f"unknown colour-science camera {rest.strip()!r}; known: {', '.join(sensors.colour_names())}"
                )
            return cls._from_curves(found, wl)
        if kind == "pyrsr":
            return cls._from_curves(sensors.pyrsr_sensor(rest.strip()), wl)
        found = sensors.colour_camera(spec)
        if found is not None:
            return cls._from_curves(found, wl)
        sats = sensors.pyrsr_satellites()
        if sats is not None and prefix.split("/")[0].strip().lower() in {s.lower() for s in sats}:
            return cls._from_curves(sensors.pyrsr_sensor(spec), wl)
        known = [f"colour:{n}" for n in sensors.colour_names()]
        if sats is None:
            hint = "satellites need pyrsr: pip install csakd[sensors]"
        else:
            hint = "pyrsr satellites: " + ", ".join(sats)
        raise InputError(
            f"unknown sensor {spec!r}; known cameras: {', '.join(known)}; {hint} "
            "(e.g. 'Sentinel-2A:B02,B03,B04,B08')"
        )

    @classmethod
    def _from_curves(cls, found: sensors.SensorCurves, wl: np.ndarray) -> SpectralResponse:
        matrix = _resample_curves(found.wavelengths, found.curves, wl, found.band_names, found.what)
        return cls(matrix=matrix, band_names=found.band_names, source=found.source)




def _is_matrix_file(spec: str | os.PathLike[str]) -> bool:
    return Path(spec).suffix.lower() in MATRIX_SUFFIXES


def _orient(m: np.ndarray, bands: int | None, where: str) -> np.ndarray:
    """Return m as (c, C): transpose a (C, c) matrix when the HSI band count says so."""
    rows, cols = m.shape
    if bands is not None:
        if cols == bands:
            return m
        if rows == bands:
            logger.info(
                "%s: transposing the (%d, %d) matrix to (c, C) = (%d, %d)", where, rows, cols, cols, rows
            )
            return m.T
        raise InputError(
            f"{where}: the matrix is {rows}x{cols} but the HSI has {bands} bands; "
            f"expected a (c, {bands}) matrix (MSI bands x HSI bands)"
        )
    if rows > cols:  # an MSI has fewer bands than the HSI it is simulated from
        logger.info("%s: transposing the (%d, %d) matrix to (c, C) = (%d, %d)", where, rows, cols, cols, rows)
        return m.T
    return m


def resolve_response(
    spec: str | os.PathLike[str] | np.ndarray | SpectralResponse,
    wavelengths: np.ndarray | Sequence[float] | None,
    *,
    bands: int | None = None,
) -> SpectralResponse:
    """Turn a user's spectral-response spec into a :class:`SpectralResponse` for C HSI bands.

    Args:
        spec: one of
            - a CSV of curves (``*.csv`` with a ``wavelength_nm`` header): resampled to ``wavelengths``;
            - a matrix file (``.npy``, ``.npz``, ``.mat``, ``.txt``): (c, C), or (C, c) which is
              transposed when the band count (``bands`` or ``len(wavelengths)``) tells which axis is C,
              or, without a count, when it has more rows than columns; rows normalised to sum 1;
            - a sensor name (see :meth:`SpectralResponse.from_sensor`): resampled to ``wavelengths``;
            - an array (c, C) (oriented like a matrix file), or a ready SpectralResponse.
        wavelengths: (C,) HSI band centre wavelengths in nm, or None when the data has none (then only
            matrices can be used).
        bands: the HSI band count C, checked against the response.

    Raises:
        InputError: curves or a sensor without wavelengths; a band-count mismatch (naming both counts);
            a response band that does not overlap the HSI wavelengths; unreadable files; unknown names.
    """
    wl = None if wavelengths is None else _as_wavelengths(wavelengths, "HSI")
    if bands is not None and (not isinstance(bands, (int, np.integer)) or bands < 1):
        raise InputError(f"bands must be a positive integer, got {bands!r}")
    if wl is not None and bands is not None and wl.size != bands:
        raise InputError(
            f"{wl.size} wavelengths were given for an HSI of {bands} bands; expected one per band"
        )
    count = bands if bands is not None else (None if wl is None else int(wl.size))

    response: SpectralResponse
    if isinstance(spec, SpectralResponse):
        response = spec
    elif isinstance(spec, np.ndarray):
        if spec.ndim != 2:
            raise InputError(f"a spectral response array must be 2-D (c, C), got shape {spec.shape}")
        response = SpectralResponse.from_matrix(
            _orient(np.asarray(spec, np.float64), count, "array"), source="array"
        )
    elif isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        path = Path(text)
        suffix = path.suffix.lower()
        if suffix == ".csv" and _csv_has_header(path):
            if wl is None:
                raise InputError(
                    f"spectral response {text} holds curves over wavelength and needs the HSI band "
                    "wavelengths in nm, but the data has none; give them with --wavelengths FILE (a text or CSV "
                    "file of the band centres in nm; wavelengths= in Python) or use a (c, C) matrix file"
                )
            response = SpectralResponse.from_csv(path, wl)
        elif _is_matrix_file(path) or suffix == ".csv" or path.is_file():
            m = read_matrix(path, what="spectral response")
            response = SpectralResponse.from_matrix(_orient(m, count, str(path)), source=str(path))
        else:
            if wl is None:
                raise InputError(
                    f"spectral response {text!r} is a sensor name and needs the HSI band wavelengths in nm, "
                    "but the data has none; give them with --wavelengths FILE (a text or CSV file of the band "
                    "centres in nm; wavelengths= in Python) or use a (c, C) matrix file"
                )
            response = SpectralResponse.from_sensor(text, wl)
    else:
        raise InputError(
            f"spectral response spec must be a path, a sensor name or an array, got {type(spec).__name__}"
        )
    if count is not None and response.hsi_bands != count:
        raise InputError(
            f"spectral response {response.source} expects {response.hsi_bands} HSI bands "
            f"but the HSI has {count}"
        )
    return response


def _csv_has_header(path: Path) -> bool:
    """True when the file's first non-empty line is not all numbers (a header row)."""
    if not path.is_file():
        return True  # let from_csv say "not found"
    with path.open(encoding="utf-8-sig") as fh:
        for line in fh:
            if line.strip():
                try:
                    [float(c) for c in line.strip().split(",")]
                except ValueError:
                    return True
                return False
    return True
