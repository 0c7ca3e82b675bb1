"""TIFF and GeoTIFF cubes, through rasterio (GDAL) when it is installed, else tifffile.

**Wavelength convention.** Each band carries GDAL metadata items (default domain) ``wavelength`` (the
value) and ``wavelength_units`` (``nm`` when written here; ``Micrometers``/``um`` are also understood;
absent means nanometres, or micrometres if every value is below 20). The band description is the band
name. This is what GDAL itself writes when converting an ENVI file to GeoTIFF. When reading, a band without
a ``wavelength`` item may instead give its wavelength through the GDAL ``IMAGERY`` domain item
``CENTRAL_WAVELENGTH_UM`` or through a description of the form ``wavelength=<value>`` or ``<value> nm``
(or ``um``). Wavelengths are kept only if every band has one. Both backends use the same items: tifffile
reads and writes them through the ``GDAL_METADATA`` TIFF tag (42112), and ``nodata`` through
``GDAL_NODATA`` (42113).

**Layout rule.** With ``layout="auto"``:

* a file whose first image series spans several pages (a stack of 2-D pages, as ``tifffile.imwrite``
  makes from a 3-D array that is not RGB-like) is read with tifffile, one band per page (``(C, H, W)``);
  GDAL would only see the first page;
* a single-page file is read with rasterio when importable (``(count, H, W)`` with crs, transform,
  nodata, band descriptions); without rasterio, with tifffile: a 2-D page is one band; a page with several
  samples per pixel is ``(C, H, W)`` when its planar configuration is *separate* and ``(H, W, C)`` when it is
  *contiguous* (pixel-interleaved, as RGB images are), whatever the sizes of the axes.

``layout="chw"`` or ``"hwc"`` reads the first series with tifffile as a 3-D array in that order and drops
georeferencing (logged).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from csakd.data.cube import Cube, GeoInfo, check_allocation, wavelengths_to_nm
from csakd.data.io_common import check_numeric_dtype, to_chw
from csakd.errors import InputError

__all__ = ["import_rasterio", "open_rasterio_writer", "rasterio_profile", "read_tiff", "tifffile_extratags",
           "write_tiff_rasterio", "write_tiff_tifffile"]

logger = logging.getLogger(__name__)

_GDAL_METADATA_TAG = 42112
_GDAL_NODATA_TAG = 42113
_DESC_WAVELENGTH = re.compile(
    r"^\s*(?:wavelength\s*[=:]\s*([-+0-9.eE]+)\s*([a-zµμ]*)|([-+0-9.eE]+)\s*(nm|um|µm|μm|micrometers?|"
    r"nanometers?))\s*$",
    re.IGNORECASE,
)


GDAL_CACHE_MB = 64
"""GDAL's block cache while csakd reads or writes a GeoTIFF, in MB (GDAL's own default is 5% of the RAM). A
whole-image read of a tiled file goes through that cache: at the default, reading a 688 MB cube peaked at
1455 MB and held 1449 MB after the read; at 64 MB, 748 and 747 (rasterio 1.4, 24 GB machine). Whole scenes
are read once and written window by window, so the cache buys nothing. A ``GDAL_CACHEMAX`` set in the
environment is used instead."""


def gdal_env(rio: ModuleType) -> Any:
    """A ``rasterio.Env`` with csakd's GDAL block cache, unless the environment sets ``GDAL_CACHEMAX``."""
    if os.environ.get("GDAL_CACHEMAX"):
        return rio.Env()
    return rio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def import_rasterio() -> ModuleType | None:
    """rasterio if it can be imported, else None (tests replace this to exercise the tifffile path)."""
    try:
        import rasterio
    except ImportError:
        return None
    return rasterio


class _TifffileProblems(logging.Handler):
    """Collects what tifffile logs while it parses a file: it reports damage it works around (an IFD past the
    end of the file, a tag whose value is cut off, a strip count that disagrees with the image size) as log
    records and carries on with what it could read: fewer pages, default sample formats, no metadata."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())
        if record.levelno >= logging.ERROR:
            self.errors.append(message)
        else:
            logger.warning("tifffile: %s", message)


@contextlib.contextmanager
def _refuse_tifffile_damage(what: str) -> Iterator[None]:
    """Raise InputError (after the block) if tifffile logged an error while parsing or reading ``what``.

    tifffile's records go to this handler only (not to the root logger) for the duration of the block."""
    tlog = logging.getLogger("tifffile")
    handler = _TifffileProblems()
    propagate = tlog.propagate
    tlog.addHandler(handler)
    tlog.propagate = False
    try:
        yield
    finally:
        tlog.removeHandler(handler)
        tlog.propagate = propagate
    if handler.errors:
        more = f" (and {len(handler.errors) - 1} more problem(s))" if len(handler.errors) > 1 else ""
        raise InputError(
            f"{what} is a damaged or truncated TIFF: {handler.errors[0][:200]}{more}; expected a complete file"
        )


def _check_extents(what: str, page: Any, size: int) -> None:
    """Raise InputError if the image data of ``page`` reach beyond the end of the file (``size`` bytes)."""
    ends = [int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
    if ends and max(ends) > size:
        raise InputError(
            f"{what} is truncated: its image data run to byte {max(ends)} but the file has {size} bytes"
        )


def read_tiff(path: Path, layout: Literal["auto", "chw", "hwc"], dtype: np.dtype) -> Cube:
    """Read a (Geo)TIFF cube; see the module docstring for the layout and wavelength rules.

    Raises:
        InputError: empty, damaged or truncated file, non-numeric or complex samples, arrays that are not
            2-D/3-D, or a cube too large for memory.
    """
    import tifffile

    what = str(path)
    if path.stat().st_size == 0:
        raise InputError(f"{what} is empty (0 bytes): expected a TIFF file")
    size = path.stat().st_size
    try:
        with _refuse_tifffile_damage(what), tifffile.TiffFile(str(path)) as tf:
            series = tf.series[0]
            shape = tuple(int(s) for s in series.shape)
            n_pages = len(series.pages)
            page = series.keyframe
            planar_separate = int(page.planarconfig) == 2
            samples = int(page.samplesperpixel)
            _check_extents(what, page, size)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{what} is not a readable TIFF file (damaged or truncated): {exc}") from exc

    if layout != "auto":
        logger.info("%s: layout=%s given; reading with tifffile, georeferencing is not kept", what, layout)
        return _read_tifffile(path, layout, dtype)
    if n_pages > 1:
        if len(shape) != 3:
            raise InputError(
                f"{what}: a stack of {n_pages} pages of shape {shape[1:]} is not a cube; expected 2-D pages "
                "(one band per page)"
            )
        return _read_tifffile(path, "chw", dtype)
    rio = import_rasterio()
    if rio is not None:
        return _read_rasterio(rio, path, dtype)
    if len(shape) == 2:
        return _read_tifffile(path, "chw", dtype)
    if samples > 1 and not planar_separate:
        return _read_tifffile(path, "hwc", dtype)
    return _read_tifffile(path, "chw", dtype)


def _band_wavelengths(
    what: str, tags: list[dict[str, str]], imagery: list[dict[str, str]], descriptions: list[str | None]
) -> np.ndarray | None:
    """Wavelengths (nm) from per-band metadata following the module's convention, or None."""
    values: list[float] = []
    for i, t in enumerate(tags):
        low = {k.lower(): v for k, v in t.items()}
        wl: float | None = None
        try:
            if "wavelength" in low:
                wl = float(wavelengths_to_nm([float(low["wavelength"])], low.get("wavelength_units"))[0])
            elif "central_wavelength_um" in {k.lower() for k in imagery[i]}:
                um = {k.lower(): v for k, v in imagery[i].items()}["central_wavelength_um"]
                wl = float(um) * 1000.0
            elif descriptions[i]:
                m = _DESC_WAVELENGTH.match(descriptions[i] or "")
                if m:
                    value = m.group(1) or m.group(3)
                    unit = m.group(2) or m.group(4) or None
                    wl = float(wavelengths_to_nm([float(value)], unit)[0])
        except (ValueError, InputError) as exc:
            logger.warning("%s: band %d has an unreadable wavelength: %s", what, i + 1, exc)
            wl = None
        if wl is None:
            if values:
                logger.warning("%s: band %d has no wavelength; wavelengths are not kept", what, i + 1)
            return None
        values.append(wl)
    return np.asarray(values, dtype=np.float64) if values else None


def _band_names(descriptions: list[str | None]) -> list[str] | None:
    """Band descriptions as names, unless none is set."""
    if not any(descriptions):
        return None
    return [d or "" for d in descriptions]


def _read_rasterio(rio: ModuleType, path: Path, dtype: np.dtype) -> Cube:
    """Read every band with rasterio, keeping crs, transform, nodata, descriptions and wavelengths."""
    what = str(path)
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with gdal_env(rio), rio.open(str(path)) as ds:
                count, h, w = int(ds.count), int(ds.height), int(ds.width)
                if count < 1:
                    raise InputError(f"{what} has zero bands: expected at least one")
                for dt in set(ds.dtypes):
                    check_numeric_dtype(np.dtype(dt), what)
                itemsize = max(np.dtype(dt).itemsize for dt in ds.dtypes)
                check_allocation((count, h, w), max(itemsize, dtype.itemsize), what)
                data = np.ascontiguousarray(ds.read(), dtype=dtype)
                crs = ds.crs.to_wkt() if ds.crs else None
                transform = tuple(float(v) for v in tuple(ds.transform)[:6])
                nodata = ds.nodata
                descriptions = list(ds.descriptions)
                tags = [dict(ds.tags(i)) for i in range(1, count + 1)]
                imagery = [dict(ds.tags(i, ns="IMAGERY")) for i in range(1, count + 1)]
    except InputError:
        raise
    except Exception as exc:  # RasterioIOError, CPLE_* errors for damaged / truncated files
        raise InputError(
            f"{what} could not be read as a GeoTIFF (damaged, truncated or unsupported): {exc}"
        ) from exc
    geo: GeoInfo | None = GeoInfo(crs=crs, transform=transform, nodata=nodata)  # type: ignore[arg-type]
    if geo is not None and not geo.is_georeferenced and nodata is None:
        geo = None
    return Cube(
        data=data,
        wavelengths=_band_wavelengths(what, tags, imagery, descriptions),
        band_names=_band_names(descriptions),
        geo=geo,
        source=what,
    )


def _parse_gdal_metadata(
    xml_text: str, bands: int, what: str
) -> tuple[list[dict[str, str]], list[str | None]]:
    """Per-band items and descriptions from a GDAL_METADATA XML tag (bands indexed by ``sample``)."""
    tags: list[dict[str, str]] = [{} for _ in range(bands)]
    descriptions: list[str | None] = [None] * bands
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        logger.warning("%s: ignoring an unreadable GDAL_METADATA tag: %s", what, exc)
        return tags, descriptions
    for item in root.iter("Item"):
        sample = item.get("sample")
        if sample is None or item.get("domain") not in (None, ""):
            continue
        try:
            b = int(sample)
        except ValueError:
            continue
        if not 0 <= b < bands:
            continue
        text = item.text or ""
        if item.get("role") == "description":
            descriptions[b] = text
        elif item.get("name"):
            tags[b][str(item.get("name"))] = text
    return tags, descriptions


def _read_tifffile(path: Path, layout: Literal["chw", "hwc"], dtype: np.dtype) -> Cube:
    """Read the first series with tifffile; the GDAL_METADATA / GDAL_NODATA tags give wavelengths,
    names and nodata."""
    import tifffile

    what = str(path)
    try:
        with _refuse_tifffile_damage(what), tifffile.TiffFile(str(path)) as tf:
            series = tf.series[0]
            shape = tuple(int(s) for s in series.shape)
            check_numeric_dtype(np.dtype(series.dtype), what)
            check_allocation(shape, max(np.dtype(series.dtype).itemsize, dtype.itemsize), what)
            arr = series.asarray()
            page_tags = series.keyframe.tags
            gdal_md = page_tags.get(_GDAL_METADATA_TAG)
            gdal_nodata = page_tags.get(_GDAL_NODATA_TAG)
            md_text = str(gdal_md.value) if gdal_md is not None else None
            nodata_text = str(gdal_nodata.value) if gdal_nodata is not None else None
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{what} could not be read as TIFF (damaged, truncated or unsupported): {exc}"
        ) from exc
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    data = to_chw(arr, layout, dtype, what)
    c = data.shape[0]
    tags: list[dict[str, str]] = [{} for _ in range(c)]
    descriptions: list[str | None] = [None] * c
    if md_text:
        tags, descriptions = _parse_gdal_metadata(md_text, c, what)
    nodata = None
    if nodata_text:
        try:
            nodata = float(nodata_text.strip("\x00 "))
        except ValueError:
            logger.warning("%s: ignoring an unreadable GDAL_NODATA tag %r", what, nodata_text)
    return Cube(
        data=data,
        wavelengths=_band_wavelengths(what, tags, [{} for _ in range(c)], descriptions),
        band_names=_band_names(descriptions),
        geo=GeoInfo(nodata=nodata) if nodata is not None else None,
        source=what,
    )


def _band_items(cube: Cube, i: int) -> dict[str, str]:
    """The GDAL metadata items of band ``i`` under this module's convention."""
    if cube.wavelengths is None:
        return {}
    return {"wavelength": repr(float(cube.wavelengths[i])), "wavelength_units": "nm"}


def rasterio_profile(rio: ModuleType, cube: Cube) -> dict[str, Any]:
    """The rasterio ``open(..., "w")`` profile of a float32 band-interleaved GeoTIFF of ``cube``'s shape: crs,
    transform and nodata from ``cube.geo``.

    Raises:
        InputError: if ``cube.geo.crs`` is not a CRS rasterio understands.
    """
    from affine import Affine

    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": cube.width,
        "height": cube.height,
        "count": cube.bands,
        "dtype": "float32",
        "interleave": "band",
        "BIGTIFF": "IF_SAFER",
    }
    if cube.geo is not None:
        if cube.geo.crs is not None:
            try:
                profile["crs"] = rio.crs.CRS.from_user_input(cube.geo.crs)
            except Exception as exc:
                raise InputError(
                    f"geo crs {cube.geo.crs!r:.200} is not a CRS rasterio understands: {exc}"
                ) from exc
        profile["transform"] = Affine(*cube.geo.transform)
        if cube.geo.nodata is not None:
            profile["nodata"] = cube.geo.nodata
    return profile


def open_rasterio_writer(rio: ModuleType, tmp: Path, cube: Cube, **options: Any) -> Any:
    """An open rasterio dataset for writing ``cube`` (:func:`rasterio_profile` updated with ``options``) into
    ``tmp``, its band descriptions (the band names) and band items (the wavelengths) already set. The caller
    writes the data and closes it (within :func:`gdal_env`)."""
    from rasterio.errors import NotGeoreferencedWarning

    profile = rasterio_profile(rio, cube) | options
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        dst = rio.open(str(tmp), "w", **profile)
    for i in range(cube.bands):
        if cube.band_names is not None:
            dst.set_band_description(i + 1, cube.band_names[i])
        items = _band_items(cube, i)
        if items:
            dst.update_tags(i + 1, **items)
    return dst


def write_tiff_rasterio(rio: ModuleType, tmp: Path, cube: Cube) -> None:
    """Write a float32 band-interleaved GeoTIFF with rasterio: crs/transform/nodata from ``cube.geo``,
    band descriptions from the band names, wavelengths as band items.

    Raises:
        InputError: if ``cube.geo.crs`` is not a CRS rasterio understands.
    """
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with gdal_env(rio), open_rasterio_writer(rio, tmp, cube) as dst:
            dst.write(np.ascontiguousarray(cube.data, dtype=np.float32))


def tifffile_extratags(cube: Cube) -> list[tuple[int, str, int, str, bool]]:
    """The GDAL_METADATA (wavelengths, band names) and GDAL_NODATA tags of a tifffile-written TIFF of ``cube``.

    Raises:
        InputError: if the cube is georeferenced (crs or transform), which needs rasterio.
    """
    if cube.geo is not None and cube.geo.is_georeferenced:
        raise InputError(
            "writing a georeferenced GeoTIFF (crs/transform) needs rasterio: pip install 'csakd[geo]'"
        )
    items: list[str] = []
    for i in range(cube.bands):
        for name, value in _band_items(cube, i).items():
            items.append(f'<Item name={quoteattr(name)} sample="{i}">{escape(value)}</Item>')
        if cube.band_names is not None:
            items.append(
                f'<Item name="DESCRIPTION" sample="{i}" role="description">'
                f"{escape(cube.band_names[i])}</Item>"
            )
    extratags: list[tuple[int, str, int, str, bool]] = []
    if items:
        extratags.append(
            (_GDAL_METADATA_TAG, "s", 0, "<GDALMetadata>" + "".join(items) + "</GDALMetadata>", True)
        )
    if cube.geo is not None and cube.geo.nodata is not None:
        extratags.append((_GDAL_NODATA_TAG, "s", 0, repr(cube.geo.nodata), True))
    return extratags


def write_tiff_tifffile(tmp: Path, cube: Cube) -> None:
    """Write a float32 single-page planar-separate TIFF with tifffile; wavelengths, names and nodata go in
    the GDAL_METADATA / GDAL_NODATA tags, so GDAL and this reader see the same convention.

    Raises:
        InputError: if the cube is georeferenced (crs or transform), which needs rasterio.
    """
    import tifffile

    extratags = tifffile_extratags(cube)
    data = np.ascontiguousarray(cube.data, dtype=np.float32)
    tifffile.imwrite(
        str(tmp),
        data if cube.bands > 1 else data[0],
        photometric="minisblack",
        planarconfig="separate" if cube.bands > 1 else None,
        metadata=None,
        extratags=extratags,
        bigtiff=data.nbytes > 2**32 - 2**25,
    )
