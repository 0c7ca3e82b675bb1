"""The CAVE multispectral database layout: one PNG per band.

A scene directory holds ``<scene>_ms_NN.png`` (NN = 01, 02, ...), either directly or one level down (the
database's own layout is ``<scene>_ms/<scene>_ms/<scene>_ms_NN.png``). Each PNG is one band: 16-bit grey
in most scenes; 8-bit grey, or 8-bit RGB(A) whose channel 0 is the band (CAVE's ``watercolors_ms``, where
R = G = B), is also accepted. Bands are ordered by NN. Values are returned raw (0..65535 for 16-bit PNGs,
0..255 for 8-bit), not rescaled. With 31 bands the wavelengths are CAVE's 400, 410, ..., 700 nm; with any
other count they are unknown (None).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from csakd.data.cube import Cube, check_allocation
from csakd.errors import InputError

__all__ = ["CAVE_WAVELENGTHS", "find_cave_bands", "read_cave"]

logger = logging.getLogger(__name__)

#: CAVE's 31 band centres, 400 to 700 nm in 10 nm steps.
CAVE_WAVELENGTHS: np.ndarray = np.arange(400.0, 701.0, 10.0)

_BAND_PNG = re.compile(r"^(?P<scene>.+)_ms_(?P<index>\d+)\.png$", re.IGNORECASE)


def _band_files(directory: Path) -> dict[str, dict[int, Path]]:
    """{scene: {index: path}} for the band PNGs directly in ``directory``."""
    out: dict[str, dict[int, Path]] = {}
    for p in directory.iterdir():
        m = _BAND_PNG.match(p.name)
        if m and p.is_file():
            out.setdefault(m.group("scene"), {})[int(m.group("index"))] = p
    return out


def find_cave_bands(directory: Path) -> list[Path]:
    """The band PNGs of the one scene in ``directory`` (or in its only sub-directory that has any),
    sorted by band number.

    Raises:
        InputError: no band PNGs, several scenes, or missing band numbers (1..N must all be present).
    """
    found = _band_files(directory)
    where = directory
    if not found:
        subs = [d for d in sorted(directory.iterdir()) if d.is_dir() and _band_files(d)]
        if len(subs) > 1:
            raise InputError(
                f"{directory} holds several CAVE scene folders ({', '.join(d.name for d in subs[:5])}"
                f"{', ...' if len(subs) > 5 else ''}): give one scene folder"
            )
        if subs:
            where = subs[0]
            found = _band_files(where)
    if not found:
        scenes = [
            d.name
            for d in sorted(directory.iterdir())
            if d.is_dir() and any(s.is_dir() and _band_files(s) for s in d.iterdir())
        ]
        if scenes:
            raise InputError(
                f"{directory} holds {len(scenes)} CAVE scene folders ({', '.join(scenes[:5])}"
                f"{', ...' if len(scenes) > 5 else ''}): give one scene folder, e.g. {directory / scenes[0]}"
            )
        raise InputError(
            f"{directory} is a directory without CAVE band images: expected PNGs named <scene>_ms_NN.png "
            "in it or in one sub-folder (give a file path for other formats)"
        )
    if len(found) > 1:
        raise InputError(
            f"{where} holds band PNGs of several scenes ({', '.join(sorted(found))}): expected one"
        )
    ((scene, bands),) = found.items()
    n = max(bands)
    if set(bands) != set(range(1, n + 1)):
        missing = [f"{i:02d}" for i in range(1, n + 1) if i not in bands][:10]
        raise InputError(
            f"{where}: scene {scene!r} has band numbers {min(bands)}..{n} with gaps (missing: "
            f"{', '.join(missing) or 'none'}{'; 00 is not a band number' if 0 in bands else ''}): "
            f"expected {scene}_ms_01.png .. {scene}_ms_{n:02d}.png"
        )
    return [bands[i] for i in range(1, n + 1)]


def _bomb_error(path: Path, exc: Exception) -> InputError:
    """The error for a PNG whose header declares more pixels than Pillow agrees to decode."""
    return InputError(
        f"{path} declares an image too large to decode safely ({exc}): a damaged header, or not a band image"
    )


def _band_size(path: Path) -> tuple[int, int]:
    """(height, width) from a band PNG's header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError as exc:
        raise _bomb_error(path, exc) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path} is not a readable PNG (damaged or truncated): {exc}") from exc
    return int(h), int(w)


def _read_band(path: Path) -> np.ndarray:
    """One band PNG as a 2-D array of raw values (channel 0 of a multi-channel image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except Image.DecompressionBombError as exc:
        raise _bomb_error(path, exc) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path} is not a readable PNG (damaged or truncated): {exc}") from exc
    if arr.ndim == 3:
        arr = arr[..., 0]
    elif arr.ndim != 2:
        raise InputError(f"{path} decodes to shape {arr.shape} (mode {mode}): expected a 2-D grey image")
    if arr.dtype.kind not in "uif":
        raise InputError(f"{path} has mode {mode}: expected 8- or 16-bit grey (or RGB(A), channel 0)")
    return arr


def read_cave(directory: Path, dtype: np.dtype) -> Cube:
    """Read a CAVE scene directory into a ``(C, H, W)`` cube of raw values.

    Raises:
        InputError: see :func:`find_cave_bands`; unreadable PNGs; bands of different sizes; a cube too large
            for memory (checked from the first PNG's header before any pixel is decoded).
    """
    files = find_cave_bands(directory)
    h, w = _band_size(files[0])  # from the header: the whole cube is checked before any pixel is decoded
    check_allocation((len(files), h, w), dtype.itemsize, str(directory))
    data = np.empty((len(files), h, w), dtype=dtype)
    for i, f in enumerate(files):
        size = _band_size(f) if i else (h, w)  # the header first: no decoding of a band of the wrong size
        band = _read_band(f) if size == (h, w) else None
        if band is None or band.shape != (h, w):
            bh, bw = size if band is None else band.shape
            raise InputError(
                f"{f} is {bh}x{bw} but {files[0].name} is {h}x{w}: every band must have the same size"
            )
        data[i] = band
    wl = CAVE_WAVELENGTHS.copy() if len(files) == CAVE_WAVELENGTHS.size else None
    names = [f.stem for f in files]
    logger.debug("read CAVE scene %s: %d bands of %dx%d", directory, len(files), h, w)
    return Cube(data=data, wavelengths=wl, band_names=names, source=str(directory))
