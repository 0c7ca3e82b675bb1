"""ENVI raster files: a text header (``.hdr``) beside a raw binary data file.

Reading understands the header keys ``samples`` (W), ``lines`` (H), ``bands`` (C), ``header offset``
(bytes to skip), ``data type`` (1 uint8, 2 int16, 3 int32, 4 float32, 5 float64, 12 uint16, 13 uint32,
14 int64, 15 uint64; the complex types 6 and 9 are refused), ``interleave`` (``bsq`` = ``(C, H, W)``,
``bil`` = ``(H, C, W)``, ``bip`` = ``(H, W, C)`` on disk), ``byte order`` (0 little-endian, 1 big-endian),
``wavelength`` with ``wavelength units``, ``band names`` and ``data ignore value`` (returned as
``cube.geo.nodata``). Values are returned raw: gains such as ``reflectance scale factor`` are not applied.

Either file may be given: for ``x.hdr`` the data file is the first of ``x``, ``x.img``, ``x.dat``,
``x.raw``, ``x.bsq``, ``x.bil``, ``x.bip``, ``x.bin`` that exists; for a data file ``x.dat`` the header is
``x.dat.hdr`` or ``x.hdr``.

Writing produces a float32, little-endian, band-sequential pair: the header ``<stem>.hdr`` and the data
file ``<stem>.img`` (or the ``.dat`` / ``.img`` name given), with wavelengths in nanometres, band names and
``data ignore value`` from ``cube.geo.nodata``. Map information is not written.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csakd.data.cube import Cube, GeoInfo, check_allocation, wavelengths_to_nm
from csakd.data.io_common import check_image_dtype
from csakd.errors import InputError

__all__ = [
    "ENVI_DATA_SUFFIXES",
    "EnviHeader",
    "envi_pair_for_writing",
    "find_envi_pair",
    "parse_envi_header",
    "read_envi",
    "write_envi",
    "write_envi_header",
]

logger = logging.getLogger(__name__)

#: Suffixes tried, in order, for the data file next to a header.
ENVI_DATA_SUFFIXES: tuple[str, ...] = ("", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin")

_DTYPES: dict[int, str] = {
    1: "u1",
    2: "i2",
    3: "i4",
    4: "f4",
    5: "f8",
    12: "u2",
    13: "u4",
    14: "i8",
    15: "u8",
}
_COMPLEX = {6: "complex64", 9: "complex128"}


@dataclass
class EnviHeader:
    """The parts of an ENVI header needed to read the data.

    Attributes:
        samples, lines, bands: W, H, C.
        data_type: the ENVI type code.
        interleave: ``"bsq"``, ``"bil"`` or ``"bip"``.
        byte_order: 0 little-endian, 1 big-endian.
        header_offset: bytes before the data in the data file.
        wavelengths: nm, or None.
        band_names: or None.
        ignore_value: the ``data ignore value``, or None.
        raw: every key (lower case, single spaces) with its text value (braces removed).
    """

    samples: int
    lines: int
    bands: int
    data_type: int
    interleave: str
    byte_order: int
    header_offset: int
    wavelengths: np.ndarray | None
    band_names: list[str] | None
    ignore_value: float | None
    raw: dict[str, str]

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the stored samples, with the header's byte order."""
        return np.dtype(("<" if self.byte_order == 0 else ">") + _DTYPES[self.data_type])

    @property
    def disk_shape(self) -> tuple[int, int, int]:
        """The array shape in file order for the interleave."""
        c, h, w = self.bands, self.lines, self.samples
        return {"bsq": (c, h, w), "bil": (h, c, w), "bip": (h, w, c)}[self.interleave]


def parse_envi_header(text: str, what: str) -> dict[str, str]:
    """Split ENVI header text into ``{key: value}``.

    Keys are lower-cased with runs of spaces collapsed; values are stripped, and a value in braces (which
    may span lines) is returned without its braces. Lines without ``=`` and ``;`` comments are skipped.

    Raises:
        InputError: if the text does not start with ``ENVI`` or a brace is never closed.
    """
    text = text.lstrip("\ufeff")
    lines = text.splitlines()
    if not lines or not lines[0].strip().upper().startswith("ENVI"):
        raise InputError(f"{what} is not an ENVI header: its first line must be 'ENVI'")
    out: dict[str, str] = {}
    i = 1
    while i < len(lines):
        line = lines[i]
        i += 1
        if "=" not in line or line.lstrip().startswith(";"):
            continue
        key, value = line.split("=", 1)
        key = " ".join(key.strip().lower().split())
        value = value.strip()
        if value.startswith("{"):
            parts = [value]
            while "}" not in parts[-1]:
                if i >= len(lines):
                    raise InputError(f"{what}: the value of {key!r} opens '{{' but never closes it")
                parts.append(lines[i].strip())
                i += 1
            joined = " ".join(parts)
            value = joined[joined.index("{") + 1 : joined.rindex("}")].strip()
        out[key] = value
    return out


def _int_field(raw: dict[str, str], key: str, what: str, default: int | None = None) -> int:
    """An integer header value; raises InputError if absent (without default) or not an integer."""
    if key not in raw:
        if default is None:
            raise InputError(f"{what}: the header has no {key!r} (required): expected e.g. '{key} = 100'")
        return default
    try:
        return int(raw[key].split()[0])
    except (ValueError, IndexError) as exc:
        raise InputError(f"{what}: header value {key} = {raw[key]!r} is not an integer") from exc


def read_header(path: Path) -> EnviHeader:
    """Parse and check an ENVI header file.

    Raises:
        InputError: unreadable/empty header, missing or invalid dimensions, unsupported data type or
            interleave.
    """
    what = str(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{what} could not be read: {exc}") from exc
    if not text.strip():
        raise InputError(f"{what} is empty: expected an ENVI header starting with 'ENVI'")
    raw = parse_envi_header(text, what)
    samples = _int_field(raw, "samples", what)
    lines = _int_field(raw, "lines", what)
    bands = _int_field(raw, "bands", what)
    if bands < 1:
        raise InputError(f"{what}: the header declares {bands} bands, expected at least one")
    if samples < 1 or lines < 1:
        raise InputError(
            f"{what}: the header declares {lines} lines x {samples} samples, expected at least 1x1"
        )
    data_type = _int_field(raw, "data type", what)
    if data_type in _COMPLEX:
        raise InputError(
            f"{what}: data type {data_type} ({_COMPLEX[data_type]}) is complex; expected a real type"
        )
    if data_type not in _DTYPES:
        raise InputError(
            f"{what}: data type {data_type} is not an ENVI type this reader knows: expected one of "
            f"{sorted(_DTYPES)}"
        )
    interleave = raw.get("interleave", "bsq").strip().lower()
    if "interleave" not in raw:
        logger.warning("%s: no 'interleave' in the header; assuming bsq", what)
    if interleave not in ("bsq", "bil", "bip"):
        raise InputError(f"{what}: interleave {interleave!r} is not supported: expected bsq, bil or bip")
    byte_order = _int_field(raw, "byte order", what, default=0)
    if byte_order not in (0, 1):
        raise InputError(f"{what}: byte order {byte_order} is invalid: expected 0 (little) or 1 (big endian)")
    offset = _int_field(raw, "header offset", what, default=0)
    if offset < 0:
        raise InputError(f"{what}: header offset {offset} is negative")

    wavelengths = None
    if "wavelength" in raw:
        try:
            values = [float(v) for v in raw["wavelength"].replace(",", " ").split()]
            wl = wavelengths_to_nm(values, raw.get("wavelength units"))
        except (ValueError, InputError) as exc:
            logger.warning("%s: ignoring unreadable wavelengths: %s", what, exc)
        else:
            if wl.size == bands:
                wavelengths = wl
            else:
                logger.warning("%s: ignoring %d wavelengths for %d bands", what, wl.size, bands)
    band_names = None
    if "band names" in raw:
        names = [n.strip() for n in raw["band names"].split(",")]
        if len(names) == bands:
            band_names = names
        else:
            logger.warning("%s: ignoring %d band names for %d bands", what, len(names), bands)
    ignore = None
    if "data ignore value" in raw:
        try:
            ignore = float(raw["data ignore value"])
        except ValueError:
            logger.warning("%s: ignoring unreadable data ignore value %r", what, raw["data ignore value"])
    return EnviHeader(
        samples=samples,
        lines=lines,
        bands=bands,
        data_type=data_type,
        interleave=interleave,
        byte_order=byte_order,
        header_offset=offset,
        wavelengths=wavelengths,
        band_names=band_names,
        ignore_value=ignore,
        raw=raw,
    )


def _case_variants(p: Path) -> list[Path]:
    """``p`` and the same name with an upper-case suffix (``x.HDR``)."""
    if not p.suffix:
        return [p]
    return [p, p.with_suffix(p.suffix.upper())]


def find_envi_pair(path: Path) -> tuple[Path, Path] | None:
    """Return (header, data file) for either file of an ENVI pair, or None if no header is found.

    Raises:
        InputError: if a header is given but no data file exists beside it (the names tried are listed).
    """
    if path.suffix.lower() == ".hdr":
        base = path.with_suffix("")
        for suf in ENVI_DATA_SUFFIXES:
            for c in _case_variants(Path(str(base) + suf)):
                if c.is_file():
                    return path, c
        names = ", ".join(Path(str(base) + suf).name for suf in ENVI_DATA_SUFFIXES)
        raise InputError(f"ENVI header {path} has no data file beside it: tried {names}")
    for hdr in (Path(str(path) + ".hdr"), path.with_suffix(".hdr")):
        for c in _case_variants(hdr):
            if c.is_file():
                return c, path
    return None


def read_envi(header_path: Path, data_path: Path, dtype: np.dtype) -> Cube:
    """Read an ENVI pair into a ``(C, H, W)`` cube.

    Raises:
        InputError: a bad header (see :func:`read_header`), a cube too large for memory, or a data file
            shorter than the header declares (naming the expected and actual byte counts).
    """
    hdr = read_header(header_path)
    what = str(data_path)
    disk = hdr.dtype
    check_allocation((hdr.bands, hdr.lines, hdr.samples), max(disk.itemsize, np.dtype(dtype).itemsize), what)
    n = hdr.bands * hdr.lines * hdr.samples
    expected = hdr.header_offset + n * disk.itemsize
    actual = data_path.stat().st_size
    if actual < expected:
        raise InputError(
            f"{what} is truncated: the header {header_path.name} declares {hdr.bands} bands x "
            f"{hdr.lines} lines x {hdr.samples} samples of {disk.name} + {hdr.header_offset} header bytes "
            f"= {expected} bytes, but the file has {actual} bytes"
        )
    if actual > expected:
        logger.warning(
            "%s has %d bytes more than its header declares; they are ignored", what, actual - expected
        )
    try:
        mm = np.memmap(data_path, dtype=disk, mode="r", offset=hdr.header_offset, shape=hdr.disk_shape)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} could not be mapped: {exc}") from exc
    check_image_dtype(disk, what)
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (2, 0, 1)}[hdr.interleave]
    data = np.ascontiguousarray(np.transpose(mm, order), dtype=dtype)
    if not data.flags.writeable:  # still the read-only map of the file: read it into memory
        data = data.copy()
    del mm
    geo = GeoInfo(nodata=hdr.ignore_value) if hdr.ignore_value is not None else None
    return Cube(data=data, wavelengths=hdr.wavelengths, band_names=hdr.band_names, geo=geo, source=what)


def envi_pair_for_writing(path: Path) -> tuple[Path, Path]:
    """(header, data file) to write for ``path``: ``x.hdr`` -> (``x.hdr``, ``x.img``); ``x.img`` or ``x.dat``
    -> (``x.hdr``, ``x.img`` / ``x.dat``)."""
    if path.suffix.lower() == ".hdr":
        return path, path.with_suffix(".img")
    return path.with_suffix(".hdr"), path


_NAME_UNSAFE = re.compile(r"[{},]")


def format_envi_header(cube: Cube, description: str = "written by csakd") -> str:
    """The text of a float32 little-endian bsq ENVI header for ``cube``."""
    lines = [
        "ENVI",
        f"description = {{{_NAME_UNSAFE.sub(' ', description)}}}",
        f"samples = {cube.width}",
        f"lines = {cube.height}",
        f"bands = {cube.bands}",
        "header offset = 0",
        "file type = ENVI Standard",
        "data type = 4",
        "interleave = bsq",
        "byte order = 0",
    ]
    if cube.wavelengths is not None:
        lines.append("wavelength units = Nanometers")
        lines.append("wavelength = {" + ", ".join(repr(float(v)) for v in cube.wavelengths) + "}")
    if cube.band_names is not None:
        safe = [_NAME_UNSAFE.sub("_", n) for n in cube.band_names]
        if safe != list(cube.band_names):
            logger.warning(
                "band names with ',', '{' or '}' are written with '_' in their place (ENVI syntax)"
            )
        lines.append("band names = {" + ", ".join(safe) + "}")
    if cube.geo is not None and cube.geo.nodata is not None:
        lines.append(f"data ignore value = {cube.geo.nodata!r}")
    return "\n".join(lines) + "\n"


def write_envi_header(header_path: Path, header_tmp: Path, cube: Cube) -> None:
    """Write ``cube``'s header text (:func:`format_envi_header`) to the (temporary) path ``header_tmp`` of
    ``header_path``, warning that map information is not kept when ``cube`` is georeferenced."""
    if cube.geo is not None and cube.geo.is_georeferenced:
        logger.warning(
            "%s: the ENVI writer keeps no map information; write .tif to keep crs/transform", header_path
        )
    header_tmp.write_text(format_envi_header(cube), encoding="ascii", errors="replace")


def write_envi(header_path: Path, data_path: Path, header_tmp: Path, data_tmp: Path, cube: Cube) -> None:
    """Write the header text and the float32 bsq data to the given (temporary) paths."""
    write_envi_header(header_path, header_tmp, cube)
    np.ascontiguousarray(cube.data, dtype="<f4").tofile(data_tmp)
