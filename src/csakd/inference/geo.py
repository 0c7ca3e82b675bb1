"""Geospatial checks and nodata handling for fusing files (numpy only: no PyTorch, rasterio imported lazily).

**Footprints.** :func:`check_footprint` refuses an LR-HSI / HR-MSI pair whose georeferencing says they do
not cover the same ground on grids ``scale`` apart: different CRS, a pixel-size ratio other than the model's
scale, different rotation or axis orientation, origins more than one HR pixel apart, or footprints that
differ by more than one LR pixel. The accepted origin convention: the LR-HSI's upper-left pixel corner is
the HR-MSI's upper-left pixel corner (each LR pixel covers an aligned block of ``scale x scale`` HR pixels,
as the model's degradation assumes), and an offset of up to **one HR pixel** along each axis is tolerated:
this covers pixel-is-point / pixel-is-area half-pixel confusions and LR images made by sampling one HR
pixel of each block (phase 0 or 1). Larger offsets, e.g. an LR origin placed on the centre of its first
``scale x scale`` block at ``scale >= 4``, misalign every LR pixel with the block it should summarise and
are refused: shift the LR transform, or crop the HR-MSI, first.

When only one input is georeferenced, a warning is logged and nothing is checked.

**Nodata.** :func:`prepare_nodata` finds the pixels equal to an input's nodata value (in any band; a NaN
nodata matches NaN) and replaces them, before normalisation, by the mean of that band's valid pixels (0 when
a band has none), so that a fill value such as -9999 or 65535 neither enters the per-image normalisation
factor nor produces extreme network activations; the network sees an ordinary, featureless value there.
The fused output is then set to the output nodata (:func:`output_nodata`: the HR-MSI's nodata, else NaN)
at every HR pixel where the HR-MSI is nodata in any band or the LR-HSI pixel covering it is
(:func:`apply_nodata`). Valid pixels next to a hole still see the filled values through the network's
receptive field: they are finite, but less reliable than pixels far from any hole.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from csakd.data.cube import Cube, GeoInfo
from csakd.errors import InputError

__all__ = [
    "NodataMasks",
    "apply_nodata",
    "check_footprint",
    "crs_equal",
    "fill_nodata",
    "nodata_mask",
    "output_geo",
    "output_nodata",
    "prepare_nodata",
]

log = logging.getLogger(__name__)

#: Relative tolerance on the pixel-size ratio (the footprint check catches what accumulates over the image).
RATIO_TOLERANCE = 1e-3
#: Origins may differ by this many HR pixels along each axis; footprints by this many LR pixels.
ORIGIN_TOLERANCE_HR = 1.0
EXTENT_TOLERANCE_LR = 1.0
_EPS = 1e-6


# ------------------------------------------------------------------------------------------------- CRS


def _normalise_wkt(text: str) -> str:
    return "".join(text.split()).upper()


def crs_equal(a: str, b: str) -> bool | None:
    """Whether two CRS strings name the same CRS: identical text, identical text after removing whitespace
    (case-insensitive), else rasterio's comparison if rasterio is installed; ``None`` when the texts differ and
    rasterio is not installed (or cannot parse either string), so that no verdict is possible."""
    if a == b or _normalise_wkt(a) == _normalise_wkt(b):
        return True
    try:
        from rasterio.crs import CRS
    except ImportError:
        return None
    try:
        return bool(CRS.from_user_input(a) == CRS.from_user_input(b))
    except Exception:  # rasterio raises CRSError (and others for odd input)
        return None


def _crs_name(crs: str) -> str:
    """A short name for a CRS in messages: ``EPSG:32633`` where rasterio can tell, else the start of the text."""
    try:
        from rasterio.crs import CRS

        parsed = CRS.from_user_input(crs)
        epsg = parsed.to_epsg()
        if epsg is not None:
            return f"EPSG:{epsg}"
    except Exception:  # not installed or not parsable: fall back to the text
        pass
    text = " ".join(crs.split())
    return text if len(text) <= 60 else text[:57] + "..."


def _unit(crs: str | None) -> str:
    """The CRS's linear unit for messages: ``" m"``, ``"°"`` or ``" map units"``."""
    if crs is None:
        return " map units"
    try:
        from rasterio.crs import CRS

        parsed = CRS.from_user_input(crs)
        if parsed.is_geographic:
            return "°"
        if str(parsed.linear_units).lower() in ("metre", "meter", "m"):
            return " m"
    except Exception:
        pass
    return " map units"


# ------------------------------------------------------------------------------------------- footprint


def _fmt(value: float) -> str:
    return f"{value:.6g}" if abs(value) < 1e-3 or abs(value) >= 1e6 else f"{round(value, 6):g}"


def _pixel_size(t: Sequence[float]) -> tuple[float, float]:
    """The lengths of a pixel's x and y edges: ``hypot(a, d)`` and ``hypot(b, e)``."""
    a, b, _, d, e, _ = t
    return math.hypot(a, d), math.hypot(b, e)


def check_footprint(
    lr: GeoInfo | None,
    msi: GeoInfo | None,
    lr_shape: Sequence[int],
    msi_shape: Sequence[int],
    scale: int,
) -> None:
    """Refuse a georeferenced LR-HSI / HR-MSI pair that does not cover the same ground on grids ``scale``
    apart (see the module docstring for the accepted origin convention).

    Args:
        lr, msi: the inputs' georeferencing (``Cube.geo``), or None.
        lr_shape: ``(h, w)`` of the LR-HSI (or ``(C, h, w)``: the last two are used).
        msi_shape: ``(H, W)`` of the HR-MSI (or ``(c, H, W)``).
        scale: the model's HR / LR ratio.

    Raises:
        InputError: the CRS differ, the pixel-size ratio is not ``scale``, the grids are rotated or flipped
            differently, the origins differ by more than one HR pixel, or the footprints by more than one LR
            pixel; the message says what differs, by how much.
    """
    lr_geo = lr is not None and lr.is_georeferenced
    msi_geo = msi is not None and msi.is_georeferenced
    if not lr_geo and not msi_geo:
        return
    if not (lr_geo and msi_geo):
        which, other = ("LR-HSI", "HR-MSI") if lr_geo else ("HR-MSI", "LR-HSI")
        log.warning("the %s is georeferenced but the %s is not: their footprints cannot be checked; the output "
                    "takes the HR-MSI's georeferencing", which, other)
        return
    assert lr is not None and msi is not None
    h, w = int(lr_shape[-2]), int(lr_shape[-1])
    H, W = int(msi_shape[-2]), int(msi_shape[-1])

    # CRS
    if lr.crs is not None and msi.crs is not None:
        same = crs_equal(lr.crs, msi.crs)
        if same is False:
            raise InputError(
                f"the LR-HSI and the HR-MSI are in different coordinate reference systems ({_crs_name(lr.crs)} "
                f"and {_crs_name(msi.crs)}): reproject one onto the other's grid first"
            )
        if same is None:
            raise InputError(
                f"the LR-HSI and the HR-MSI have different CRS texts ({_crs_name(lr.crs)} and {_crs_name(msi.crs)}) "
                "that could not be compared (rasterio is not installed, or cannot parse one of them): expected the "
                "same CRS"
            )
    elif (lr.crs is None) != (msi.crs is None):
        which = "LR-HSI" if lr.crs is not None else "HR-MSI"
        log.warning("only the %s has a CRS: the CRS cannot be compared; checking the transforms only", which)
    unit = _unit(msi.crs if msi.crs is not None else lr.crs)

    # pixel sizes
    lr_px, lr_py = _pixel_size(lr.transform)
    ms_px, ms_py = _pixel_size(msi.transform)
    if min(lr_px, lr_py, ms_px, ms_py) <= 0.0:
        raise InputError(
            f"a geo transform has a zero pixel size (LR-HSI {lr.transform}, HR-MSI {msi.transform}): "
            "expected a non-degenerate transform"
        )
    for axis, lr_size, ms_size in (("x", lr_px, ms_px), ("y", lr_py, ms_py)):
        ratio = lr_size / ms_size
        if abs(ratio - scale) > RATIO_TOLERANCE * scale:
            square = lr_px == lr_py and ms_px == ms_py
            size = "" if square else f" along {axis}"
            raise InputError(
                f"the LR-HSI's pixels are {_fmt(lr_size)}{unit} and the HR-MSI's {_fmt(ms_size)}{unit}{size}: "
                f"a ratio of {_fmt(ratio)}, but the model fuses at x{scale}"
            )

    # rotation / orientation: the LR's linear part must be ``scale`` times the HR's
    la, lb, lc, ld, le, lf = lr.transform
    ma, mb, mc, md, me, mf = msi.transform
    lin_lr = np.array([[la, lb], [ld, le]], dtype=np.float64) / scale
    lin_ms = np.array([[ma, mb], [md, me]], dtype=np.float64)
    if np.max(np.abs(lin_lr - lin_ms)) > RATIO_TOLERANCE * max(ms_px, ms_py):
        raise InputError(
            f"the LR-HSI's and the HR-MSI's grids are rotated or flipped differently (transforms (a, b, d, e) = "
            f"{tuple(_fmt(v) for v in (la, lb, ld, le))} and {tuple(_fmt(v) for v in (ma, mb, md, me))}): "
            "expected the same orientation"
        )

    if abs(float(np.linalg.det(lin_ms))) < 1e-12 * ms_px * ms_py:
        raise InputError(f"the HR-MSI's geo transform {msi.transform} is degenerate (its pixels have no area)")

    # origins, measured in HR pixels of the HR-MSI's grid
    inv_ms = np.linalg.inv(lin_ms)
    d_map = np.array([lc - mc, lf - mf], dtype=np.float64)
    d_hr = inv_ms @ d_map
    if np.max(np.abs(d_hr)) > ORIGIN_TOLERANCE_HR + _EPS:
        dist = float(np.hypot(*d_map))
        px = float(np.max(np.abs(d_hr)))
        raise InputError(
            f"the LR-HSI's and the HR-MSI's origins (upper-left corners) differ by {_fmt(dist)}{unit} "
            f"({_fmt(px)} HR pixels; {_fmt(float(d_hr[0]))} along columns, {_fmt(float(d_hr[1]))} along rows): "
            f"expected the same corner within {_fmt(ORIGIN_TOLERANCE_HR)} HR pixel; crop or shift one image first"
        )

    # footprints: the far (lower-right) corners, in LR pixels of the LR-HSI's grid
    far_lr = np.array([la * w + lb * h + lc, ld * w + le * h + lf], dtype=np.float64)
    far_ms = np.array([ma * W + mb * H + mc, md * W + me * H + mf], dtype=np.float64)
    d_lr = np.linalg.inv(lin_lr * scale) @ (far_lr - far_ms)
    if np.max(np.abs(d_lr)) > EXTENT_TOLERANCE_LR + _EPS:
        raise InputError(
            f"the footprints differ: the LR-HSI covers {_fmt(lr_px * w)} x {_fmt(lr_py * h)}{unit} and the HR-MSI "
            f"{_fmt(ms_px * W)} x {_fmt(ms_py * H)}{unit}; their lower-right corners are "
            f"{_fmt(float(np.hypot(*(far_lr - far_ms))))}{unit} ({_fmt(float(np.max(np.abs(d_lr))))} LR pixels) "
            "apart: expected the same extent within one LR pixel"
        )


# ---------------------------------------------------------------------------------------------- nodata


def nodata_mask(cube_data: np.ndarray, nodata: float | None) -> np.ndarray:
    """``(H, W)`` bool: True where any band of the ``(C, H, W)`` array equals ``nodata`` (NaN matches NaN).

    ``nodata`` None gives an all-False mask.
    """
    data = np.asarray(cube_data)
    if data.ndim != 3:
        raise InputError(f"nodata_mask expects a (C, H, W) array, got shape {data.shape}")
    if nodata is None:
        return np.zeros(data.shape[1:], dtype=bool)
    value = float(nodata)
    mask = np.zeros(data.shape[1:], dtype=bool)
    for band in data:  # band by band: no (C, H, W) temporary
        mask |= np.isnan(band) if math.isnan(value) else band == band.dtype.type(value)
    return mask


def fill_nodata(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace the masked pixels of every band of ``data`` (C, H, W) by the mean of that band's unmasked
    pixels (0 where a band has none). Writes in place when ``data`` is a writable array; returns it."""
    if not data.flags.writeable:
        data = np.array(data)
    if not mask.any():
        return data
    valid = ~mask
    n_valid = int(np.count_nonzero(valid))
    for band in data:
        fill = float(np.mean(band[valid], dtype=np.float64)) if n_valid else 0.0
        band[mask] = fill if math.isfinite(fill) else 0.0
    return data


def output_nodata(msi: GeoInfo | None) -> float:
    """The output's nodata value: the HR-MSI's nodata, else NaN (the output is floating point)."""
    if msi is not None and msi.nodata is not None:
        return float(msi.nodata)
    return float("nan")


def apply_nodata(fused: np.ndarray, mask: np.ndarray | None, value: float) -> np.ndarray:
    """Set every band of ``fused`` (C, H, W) to ``value`` where ``mask`` (H, W) is True; in place, returned."""
    if mask is not None and mask.any():
        fused[:, mask] = value
    return fused


@dataclass
class NodataMasks:
    """The inputs' nodata pixels: ``lr`` (h, w) and ``msi`` (H, W) bool masks, None where that input has no
    nodata value."""

    lr: np.ndarray | None
    msi: np.ndarray | None
    scale: int

    @property
    def active(self) -> bool:
        """True when either input declares a nodata value (the output then gets a nodata value too)."""
        return self.lr is not None or self.msi is not None

    def hr_window(self, rows: slice, cols: slice) -> np.ndarray | None:
        """The output mask over HR ``rows`` x ``cols``: HR-MSI nodata, or LR-HSI nodata in the covering LR pixel;
        None when there is no nodata at all."""
        if not self.active:
            return None
        s = self.scale
        out: np.ndarray | None = None
        if self.msi is not None:
            out = self.msi[rows, cols].copy()
        if self.lr is not None:
            r = np.arange(rows.start or 0, rows.stop, dtype=np.intp) // s
            c = np.arange(cols.start or 0, cols.stop, dtype=np.intp) // s
            lr_part = self.lr[np.ix_(r, c)]
            out = lr_part if out is None else out | lr_part
        return out


def prepare_nodata(lr: Cube, msi: Cube, scale: int) -> NodataMasks:
    """Find each input's nodata pixels and fill them in place (:func:`fill_nodata`); return the masks.

    Call before :meth:`Cube.check_finite` (a NaN nodata value is filled, so it passes) and before fusion.
    """
    masks: list[np.ndarray | None] = []
    for cube in (lr, msi):
        nodata = cube.geo.nodata if cube.geo is not None else None
        if nodata is None:
            masks.append(None)
            continue
        mask = nodata_mask(cube.data, nodata)
        n = int(np.count_nonzero(mask))
        if n:
            name = "LR-HSI" if cube is lr else "HR-MSI"
            log.info("%s: %d of %d pixels are nodata (%r): filled before fusion, nodata in the output", name, n,
                     mask.size, nodata)
            cube.data = fill_nodata(cube.data, mask)
        masks.append(mask)
    return NodataMasks(lr=masks[0], msi=masks[1], scale=int(scale))


def output_geo(msi: GeoInfo | None, masks: NodataMasks) -> GeoInfo | None:
    """The output's georeferencing: the HR-MSI's (CRS, transform, nodata); when only the LR-HSI declares a
    nodata value, the HR-MSI's with nodata NaN."""
    if not masks.active or (msi is not None and msi.nodata is not None):
        return msi
    if msi is None:
        return GeoInfo(nodata=float("nan"))
    return GeoInfo(crs=msi.crs, transform=msi.transform, nodata=float("nan"))
