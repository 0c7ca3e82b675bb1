"""Hostile and damaged files for every reader, and untrusted checkpoints: each ends in csakd's own error.

Every case runs inside :func:`tests.conftest.fuzz_case` (counted in the "fuzz: N cases tried" summary, with a
time limit and a limit on traced allocations) and checks one property:

* ``read_cube`` returns a valid :class:`~csakd.data.Cube` or raises a :class:`~csakd.errors.CsakdError`; never
  another exception, a hang, or an allocation for what a header merely declares;
* a *truncated* file is refused or read back exactly (never a silently shorter or reinterpreted cube);
* headers that declare absurd sizes are refused up front with the size they would need;
* a checkpoint that would run code when unpickled is refused, and the code does not run.
"""

from __future__ import annotations

import builtins
import logging
import os
import pickle
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import csakd.data.io_tiff as io_tiff
from csakd.checkpoint import LoadedModel, check_compatible, load_checkpoint, model_payload, save_payload
from csakd.data import Cube, read_cube, read_wavelengths, write_cube
from csakd.degradation import load_psf
from csakd.errors import CheckpointError, CsakdError, InputError
from csakd.inference.fuse import check_grids
from csakd.models import create_model
from csakd.normalization import Normalization
from tests.conftest import fuzz_case

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None)

BANDS, H, W = 5, 6, 7
WAVELENGTHS = np.linspace(400.0, 700.0, BANDS)


def reference_cube() -> Cube:
    rng = np.random.default_rng(0)
    return Cube(rng.random((BANDS, H, W), dtype=np.float32), wavelengths=WAVELENGTHS,
                band_names=[f"b{i}" for i in range(BANDS)])


# ------------------------------------------------------------------------------------------ valid files
def _png(path: Path, arr: np.ndarray | None = None, *, size: tuple[int, int] | None = None) -> None:
    """A grey PNG: 16-bit pixels of ``arr``, or only a header declaring ``size`` = (width, height)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    if arr is not None:
        h, w = arr.shape
        rows = b"".join(b"\0" + arr[r].astype(">u2").tobytes() for r in range(h))
        ihdr, idat = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0), zlib.compress(rows)
    else:
        assert size is not None
        ihdr, idat = struct.pack(">IIBBBBB", size[0], size[1], 16, 0, 0, 0, 0), zlib.compress(b"\0" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _mat73(path: Path, variables: dict[str, np.ndarray], classes: dict[str, str] | None = None) -> None:
    """A MATLAB v7.3 file (HDF5 with a 512-byte user block); arrays given in MATLAB (H, W, C) order."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in variables.items():
            ds = f.create_dataset(name, data=np.asarray(arr).T)
            cls = (classes or {}).get(name, {"f": "single" if arr.dtype == np.float32 else "double"}.get(
                arr.dtype.kind, "uint16"))
            ds.attrs["MATLAB_class"] = np.bytes_(cls)


class Valid:
    """One valid file per reader path: ``target`` is what read_cube gets, ``mutable`` the file to damage."""

    def __init__(self, name: str, folder: Path, target: str, mutable: str, header_len: int,
                 no_rasterio: bool = False) -> None:
        self.name, self.folder, self.target, self.mutable = name, folder, target, mutable
        self.header_len = header_len
        self.no_rasterio = no_rasterio

    def copy_with(self, root: Path, content: bytes) -> Path:
        """A fresh copy of the file set with the mutable file replaced by ``content``; returns the target."""
        dest = Path(tempfile.mkdtemp(dir=root))
        for p in self.folder.iterdir():
            shutil.copy(p, dest / p.name)
        (dest / self.mutable).write_bytes(content)
        return dest / self.target if self.target else dest

    def read(self, target: Path) -> Cube:
        if self.no_rasterio:
            with mock.patch.object(io_tiff, "import_rasterio", lambda: None):
                return read_cube(target)
        return read_cube(target)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Valid]:
    root = tmp_path_factory.mktemp("valid")
    cube = reference_cube()
    out: dict[str, Valid] = {}

    def folder(name: str) -> Path:
        d = root / name
        d.mkdir()
        return d

    for name, fname, hlen in (("npy", "c.npy", 128), ("npz", "c.npz", 200), ("mat5", "c.mat", 300),
                              ("tif-rasterio", "c.tif", 400)):
        d = folder(name)
        write_cube(d / fname, cube)
        out[name] = Valid(name, d, fname, fname, hlen)
    d = folder("tif-tifffile")
    with mock.patch.object(io_tiff, "import_rasterio", lambda: None):
        write_cube(d / "c.tif", cube)
    out["tif-tifffile"] = Valid("tif-tifffile", d, "c.tif", "c.tif", 400, no_rasterio=True)
    d = folder("tif-stack")
    tifffile.imwrite(d / "c.tif", cube.data)
    out["tif-stack"] = Valid("tif-stack", d, "c.tif", "c.tif", 400)
    d = folder("mat73")
    _mat73(d / "c.mat", {"cube": np.transpose(cube.data, (1, 2, 0)), "wavelength": WAVELENGTHS[None]})
    out["mat73"] = Valid("mat73", d, "c.mat", "c.mat", 1400)
    d = folder("envi")
    write_cube(d / "c.hdr", cube)
    out["envi-header"] = Valid("envi-header", d, "c.hdr", "c.hdr", (d / "c.hdr").stat().st_size)
    out["envi-data"] = Valid("envi-data", d, "c.hdr", "c.img", 0)
    d = folder("cave")
    scene = d / "scene_ms"
    scene.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        _png(scene / f"scene_ms_{i + 1:02d}.png", (rng.random((H, W)) * 65535).astype(np.uint16))
    out["cave"] = Valid("cave", scene, "", "scene_ms_02.png", 33)
    for v in out.values():  # every valid file reads
        assert v.read(v.folder / v.target if v.target else v.folder).bands in (BANDS, 3)
    return out


def read_or_error(v: Valid, target: Path) -> Cube | CsakdError:
    """read_cube's result, or the CsakdError it raised; any other exception propagates (a failure)."""
    try:
        cube = v.read(target)
    except CsakdError as exc:
        assert str(exc).strip(), "an error without a message"
        return exc
    assert isinstance(cube, Cube) and cube.data.ndim == 3 and cube.data.dtype == np.float32
    assert cube.data.flags.writeable, "the cube must be an in-memory array, not a read-only map of the file"
    return cube


# ------------------------------------------------------------------------------------------ truncation and bit flips
@pytest.mark.parametrize("fmt", ["npy", "npz", "mat5", "mat73", "tif-rasterio", "tif-tifffile", "tif-stack",
                                 "envi-header", "envi-data", "cave"])
@FUZZ
@given(data=st.data())
def test_truncated_files_are_refused_or_read_exactly(fmt: str, valid: dict[str, Valid], data: st.DataObject,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    v = valid[fmt]
    whole = (v.folder / v.mutable).read_bytes()
    cut = data.draw(st.integers(0, len(whole) - 1), label="cut")
    target = v.copy_with(tmp_path_factory.getbasetemp(), whole[:cut])
    original = v.read(v.folder / v.target if v.target else v.folder)
    with fuzz_case(f"{fmt} truncated to {cut} of {len(whole)} bytes", max_bytes=64 * 2**20):
        result = read_or_error(v, target)
        if isinstance(result, Cube):  # only a cut that leaves a complete file (e.g. an ENVI header's last lines)
            assert result.data.shape == original.data.shape
            np.testing.assert_array_equal(result.data, original.data)


@pytest.mark.parametrize("fmt", ["npy", "npz", "mat5", "mat73", "tif-rasterio", "tif-tifffile", "tif-stack",
                                 "envi-header", "cave"])
@FUZZ
@given(data=st.data())
def test_flipped_bytes_are_refused_or_read_as_a_valid_cube(fmt: str, valid: dict[str, Valid], data: st.DataObject,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    v = valid[fmt]
    content = bytearray((v.folder / v.mutable).read_bytes())
    where = st.integers(0, min(v.header_len, len(content)) - 1) | st.integers(0, len(content) - 1)
    flips = data.draw(st.lists(st.tuples(where, st.integers(0, 7)), min_size=1, max_size=4), label="flips")
    for pos, bit in flips:
        content[pos] ^= 1 << bit
    target = v.copy_with(tmp_path_factory.getbasetemp(), bytes(content))
    with fuzz_case(f"{fmt} with bits flipped at {flips}", max_bytes=64 * 2**20):
        read_or_error(v, target)


@FUZZ
@given(data=st.data())
def test_mat5_with_damage_inside_intact_compression_is_refused_or_read(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Well-formed zlib streams around damaged MATLAB elements: what a crafted file looks like (scipy's compiled
    reader crashes the process on some of these unless csakd checks the structure first)."""
    root = tmp_path_factory.getbasetemp()
    src = root / "compressed.mat"
    if not src.exists():
        cube = reference_cube()
        names = np.empty((BANDS,), dtype=object)
        names[:] = cube.band_names
        scipy.io.savemat(src, {"data": np.transpose(cube.data, (1, 2, 0)), "wavelengths": WAVELENGTHS[None],
                               "band_names": names}, do_compression=True)
    raw = src.read_bytes()
    elements, pos = [], 128
    while pos < len(raw):
        _, n = struct.unpack("<II", raw[pos: pos + 8])
        elements.append(zlib.decompress(raw[pos + 8: pos + 8 + n]))
        pos += 8 + n
    which = data.draw(st.integers(0, len(elements) - 1), label="variable")
    inner = bytearray(elements[which])
    where = st.integers(0, min(200, len(inner)) - 1) | st.integers(0, len(inner) - 1)
    flips = data.draw(st.lists(st.tuples(where, st.integers(0, 7)), min_size=1, max_size=3), label="flips")
    for i, bit in flips:
        inner[i] ^= 1 << bit
    parts = [raw[:128]]
    for j, element in enumerate(elements):
        z = zlib.compress(bytes(inner) if j == which else element)
        parts.append(struct.pack("<II", 15, len(z)) + z)
    path = Path(tempfile.mkdtemp(dir=root)) / "c.mat"
    path.write_bytes(b"".join(parts))
    with fuzz_case(f"mat5 variable {which} with bits flipped at {flips} inside its zlib stream"):
        try:
            cube = read_cube(path)
        except CsakdError:
            return
        assert cube.data.ndim == 3


@pytest.mark.parametrize("name", ["x.npy", "x.npz", "x.mat", "x.tif", "x.hdr", "x.img", "scene_ms/scene_ms_01.png"])
@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(content=st.binary(max_size=600))
def test_random_bytes_under_every_name(name: str, content: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    d = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = d / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if name == "x.img":
        (d / "x.hdr").write_text("ENVI\nsamples = 7\nlines = 6\nbands = 5\ndata type = 4\ninterleave = bil\n")
    if name == "x.hdr":
        (d / "x.img").write_bytes(bytes(1000))
    target = d / "scene_ms" if name.endswith(".png") else path
    with fuzz_case(f"random {len(content)} bytes as {name}", max_bytes=64 * 2**20):
        try:
            cube = read_cube(target)
        except CsakdError:
            return
        assert cube.data.ndim == 3


# ------------------------------------------------------------------------------------------ absurd declared sizes
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def absurd_envi(d: Path) -> Path:
    (d / "x.hdr").write_text("ENVI\nsamples = 1000000\nlines = 1000000\nbands = 1000\nheader offset = 0\n"
                             "data type = 4\ninterleave = bsq\nbyte order = 0\n")
    (d / "x.img").write_bytes(bytes(16))
    return d / "x.hdr"


def absurd_npy(d: Path) -> Path:
    (d / "x.npy").write_bytes(_npy_header((1000, 10**6, 10**6)) + bytes(16))
    return d / "x.npy"


def absurd_npz(d: Path) -> Path:
    with zipfile.ZipFile(d / "x.npz", "w") as z:
        z.writestr("data.npy", _npy_header((1000, 10**6, 10**6)) + bytes(16))
    return d / "x.npz"


def absurd_mat5(d: Path) -> Path:
    scipy.io.savemat(d / "x.mat", {"x": np.ones((2, 3, 4), np.float32)}, do_compression=False)
    raw = bytearray((d / "x.mat").read_bytes())
    at = raw.find(struct.pack("<2i3i", 5, 12, 2, 3, 4))
    assert at > 0, "the dims element of the test file was not found"
    raw[at + 8: at + 20] = struct.pack("<3i", 10**6, 10**6, 1000)
    (d / "x.mat").write_bytes(bytes(raw))
    return d / "x.mat"


def absurd_mat73(d: Path) -> Path:
    with h5py.File(d / "x.mat", "w", userblock_size=512) as f:  # chunked, never written: a tiny file
        ds = f.create_dataset("x", shape=(1000, 10**6, 10**6), dtype="f4", chunks=(1, 64, 64))
        ds.attrs["MATLAB_class"] = np.bytes_("single")
    assert (d / "x.mat").stat().st_size < 10_000
    return d / "x.mat"


def absurd_tif(d: Path) -> Path:
    tifffile.imwrite(d / "x.tif", np.ones((5, 6, 7), np.float32), photometric="minisblack", planarconfig="separate",
                     metadata=None)
    raw = bytearray((d / "x.tif").read_bytes())
    with tifffile.TiffFile(d / "x.tif") as tf:
        tags = tf.pages[0].tags
        for code in (256, 257, 278):  # width, length, rows per strip: one strip per band, as in the file
            tag = tags[code]
            assert tag.dtype == 4, "expected LONG tags"
            raw[tag.valueoffset: tag.valueoffset + 4] = struct.pack("<I", 10**6)
    (d / "x.tif").write_bytes(bytes(raw))
    return d / "x.tif"


def absurd_cave(d: Path) -> Path:
    scene = d / "big_ms"
    scene.mkdir()
    for i in range(1, 601):  # 600 bands declared 9000 x 9000 (each under Pillow's bomb limit)
        _png(scene / f"big_ms_{i:02d}.png", size=(9000, 9000))
    return scene


@pytest.mark.parametrize(("build", "declared"), [
    (absurd_envi, 10**6 * 10**6 * 1000 * 4), (absurd_npy, 10**6 * 10**6 * 1000 * 4),
    (absurd_npz, 10**6 * 10**6 * 1000 * 4), (absurd_mat5, 10**6 * 10**6 * 1000 * 4),
    (absurd_mat73, 10**6 * 10**6 * 1000 * 4), (absurd_tif, 10**6 * 10**6 * 5 * 4),
    (absurd_cave, 600 * 9000 * 9000 * 4),
], ids=lambda x: getattr(x, "__name__", ""))
def test_absurd_declared_sizes_are_refused_up_front_with_the_size(build: Callable[[Path], Path], declared: int,
                                                                 tmp_path: Path) -> None:
    path = build(tmp_path)
    with fuzz_case(f"{build.__name__}: declares {declared} bytes", seconds=20, max_bytes=32 * 2**20):
        with pytest.raises(InputError) as info:
            read_cube(path)
    m = re.search(r"would need ([\d.]+) (B|KiB|MiB|GiB|TiB|PiB)", str(info.value))
    assert m, str(info.value)
    stated = float(m.group(1)) * _UNITS[m.group(2)]
    assert stated == pytest.approx(declared, rel=0.05), str(info.value)


def test_a_png_that_declares_billions_of_pixels_is_refused(tmp_path: Path) -> None:
    scene = tmp_path / "bomb_ms"
    scene.mkdir()
    _png(scene / "bomb_ms_01.png", size=(100_000, 100_000))
    with fuzz_case("PNG header declaring 1e10 pixels", max_bytes=32 * 2**20):
        with pytest.raises(InputError, match=r"bomb_ms_01\.png declares an image too large"):
            read_cube(scene)


@pytest.mark.parametrize("reader", ["read_cube", "load_psf"])
def test_a_mat_file_that_crashes_scipys_compiled_reader_is_refused(reader: str, tmp_path: Path) -> None:
    """One invalid data-type byte in an uncompressed v5 file makes scipy.io.loadmat crash the process
    (SIGSEGV, scipy 1.17); csakd checks the structure first and refuses the file naming the problem."""
    arr = np.ones((3, 3, 2)) if reader == "read_cube" else np.ones((3, 3)) / 9
    scipy.io.savemat(tmp_path / "x.mat", {"x": arr}, do_compression=False)
    raw = bytearray((tmp_path / "x.mat").read_bytes())
    at = raw.find(struct.pack("<II", 9, arr.size * 8))  # the real part: miDOUBLE, 8 bytes a value
    assert at > 0
    raw[at] = 0x47
    (tmp_path / "x.mat").write_bytes(bytes(raw))
    with fuzz_case(f"scipy-crashing .mat through {reader}"), pytest.raises(InputError, match="data type 71"):
        (read_cube if reader == "read_cube" else load_psf)(tmp_path / "x.mat")


# ------------------------------------------------------------------------------------------ dtypes, zero bands
def _save(d: Path, name: str, arr: np.ndarray) -> Path:
    np.save(d / name, arr, allow_pickle=True)
    return d / name


BAD_DTYPES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("npy object", lambda d: _save(d, "o.npy", np.empty((2, 3, 4), dtype=object)), r"object|pickle|not a real"),
    ("npy complex", lambda d: _save(d, "c.npy", np.ones((2, 3, 4), np.complex64)), "complex"),
    ("npy unicode", lambda d: _save(d, "u.npy", np.full((2, 3, 4), "ab")), "<U2|not a real"),
    ("npy structured", lambda d: _save(d, "s.npy", np.zeros((2, 3, 4), dtype=[("a", "<f4")])), "not a real"),
    ("npy datetime", lambda d: _save(d, "t.npy", np.zeros((2, 3, 4), dtype="datetime64[s]")), "datetime64"),
    ("npz complex only", lambda d: (np.savez(d / "c.npz", x=np.ones((2, 3, 4), np.complex64)), d / "c.npz")[1],
     "no 3-D numeric array"),
    ("mat5 complex", lambda d: (scipy.io.savemat(d / "c.mat", {"x": np.ones((2, 3, 4), np.complex128)}),
                                d / "c.mat")[1], "no 3-D numeric|complex"),
    ("mat5 cell", lambda d: (scipy.io.savemat(d / "c.mat", {"x": _cell((2, 3, 4))}), d / "c.mat")[1],
     "no 3-D numeric|cell"),
    ("mat73 char", lambda d: (_mat73(d / "c.mat", {"x": np.ones((2, 3, 4), np.uint16)}, {"x": "char"}),
                              d / "c.mat")[1], "no 3-D numeric|char"),
    ("envi complex", lambda d: _envi(d, "data type = 6"), "complex"),
    ("envi unknown type", lambda d: _envi(d, "data type = 99"), "99"),
    ("envi byte order", lambda d: _envi(d, "data type = 4\nbyte order = 7"), "byte order 7"),
    ("envi interleave", lambda d: _envi(d, "data type = 4\ninterleave = xyz"), "xyz"),
    ("tif complex", lambda d: (tifffile.imwrite(d / "c.tif", np.ones((2, 3, 4), np.complex64),
                                                photometric="minisblack"), d / "c.tif")[1],
     "complex|not a real|unsupported"),
]


def _cell(shape: tuple[int, ...]) -> np.ndarray:
    """A MATLAB cell array (numpy object array) of small numeric arrays."""
    cell = np.empty(int(np.prod(shape)), dtype=object)
    for i in range(cell.size):
        cell[i] = np.ones(1)
    return cell.reshape(shape)


def _envi(d: Path, extra: str, dims: str = "samples = 4\nlines = 3\nbands = 2") -> Path:
    (d / "e.hdr").write_text(f"ENVI\n{dims}\n{extra}\n")
    (d / "e.img").write_bytes(bytes(2 * 3 * 4 * 16))
    return d / "e.hdr"


ZERO_BANDS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("npy (0, 4, 4)", lambda d: _save(d, "z.npy", np.zeros((0, 4, 4), np.float32)), "zero bands"),
    ("npz (0, 4, 4)", lambda d: (np.savez(d / "z.npz", x=np.zeros((0, 4, 4), np.float32)), d / "z.npz")[1],
     "zero bands"),
    ("mat5 (4, 4, 0)", lambda d: (scipy.io.savemat(d / "z.mat", {"x": np.zeros((4, 4, 0), np.float32)}),
                                  d / "z.mat")[1], "zero bands|no 3-D|empty"),
    ("mat73 (4, 4, 0)", lambda d: (_mat73(d / "z.mat", {"x": np.zeros((4, 4, 0), np.float32)}), d / "z.mat")[1],
     "zero bands|no pixels"),
    ("envi bands = 0", lambda d: _envi(d, "data type = 4", "samples = 4\nlines = 3\nbands = 0"), "0 bands"),
    ("envi lines = 0", lambda d: _envi(d, "data type = 4", "samples = 4\nlines = 0\nbands = 2"), "0 lines"),
    ("cave without bands", lambda d: (d / "empty_ms").mkdir() or d / "empty_ms", "without CAVE band images"),
]


@pytest.mark.parametrize(("label", "build", "message"), BAD_DTYPES + ZERO_BANDS,
                         ids=[c[0] for c in BAD_DTYPES + ZERO_BANDS])
def test_wrong_dtypes_and_zero_bands_are_refused(label: str, build: Callable[[Path], Path], message: str,
                                                 tmp_path: Path) -> None:
    path = build(tmp_path)
    with fuzz_case(label, max_bytes=32 * 2**20):
        with pytest.raises(InputError, match=message):
            read_cube(path)


@pytest.mark.parametrize("dtype", ["uint8", "int16", ">f8", "float16", "uint32", "int8"])
def test_other_numeric_dtypes_read_as_their_values(dtype: str, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(2)
    arr = (rng.random((3, 4, 5)) * 100).astype(dtype)
    np.save(tmp_path / "a.npy", arr)
    with fuzz_case(f"npy of {dtype}"), caplog.at_level(logging.INFO, logger="csakd"):
        cube = read_cube(tmp_path / "a.npy")
    np.testing.assert_array_equal(cube.data, arr.astype(np.float32))
    integer = np.dtype(dtype).kind in "iu"
    said = [r.getMessage() for r in caplog.records if "read as plain numbers" in r.getMessage()]
    assert bool(said) == integer, said  # integers: the log line states how their values are taken
    if integer:
        info = np.iinfo(np.dtype(dtype))
        assert f"{tmp_path / 'a.npy'} holds {np.dtype(dtype)} integers (range {info.min}..{info.max})" in said[0]


BOOLEAN_FILES: dict[str, Callable[[Path, np.ndarray], Path]] = {
    "npy": lambda d, a: (np.save(d / "b.npy", a), d / "b.npy")[1],
    "npz": lambda d, a: (np.savez(d / "b.npz", data=a), d / "b.npz")[1],
    "mat v5 logical": lambda d, a: (scipy.io.savemat(d / "b.mat", {"x": a.transpose(1, 2, 0)}), d / "b.mat")[1],
    "mat v7.3 logical": lambda d, a: (_mat73(d / "b.mat", {"x": a.transpose(1, 2, 0).astype(np.uint8)},
                                            {"x": "logical"}), d / "b.mat")[1],
    "tif": lambda d, a: (tifffile.imwrite(d / "b.tif", a), d / "b.tif")[1],
}


@pytest.mark.parametrize("kind", list(BOOLEAN_FILES))
def test_boolean_arrays_are_refused_naming_the_file_and_the_type(kind: str, tmp_path: Path) -> None:
    """A mask (a MATLAB logical, a numpy bool array) is not an image: read as 0/1 it would fuse silently."""
    path = BOOLEAN_FILES[kind](tmp_path, np.random.default_rng(0).random((3, 4, 5)) > 0.5)
    with fuzz_case(f"boolean {kind}"), pytest.raises(InputError, match="boolean") as info:
        read_cube(path)
    assert str(path) in str(info.value) and re.search(r"bool|logical", str(info.value).split("boolean", 1)[1])


# ------------------------------------------------------------------------------------------ NaN / Inf, wavelengths
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".mat", ".tif", ".hdr"])
def test_nan_and_inf_are_read_raw_and_refused_by_check_finite(suffix: str, tmp_path: Path) -> None:
    data = reference_cube().data.copy()
    rng = np.random.default_rng(3)
    flat = data.reshape(-1)
    idx = rng.choice(flat.size, size=7, replace=False)
    flat[idx[:3]] = np.nan
    flat[idx[3:5]] = np.inf
    flat[idx[5:]] = -np.inf
    write_cube(tmp_path / f"n{suffix}", Cube(data))
    with fuzz_case(f"NaN/Inf in {suffix}"):
        cube = read_cube(tmp_path / f"n{suffix}")
        np.testing.assert_array_equal(np.isnan(cube.data), np.isnan(data))
        np.testing.assert_array_equal(np.isposinf(cube.data), np.isposinf(data))
        with pytest.raises(InputError, match=r"7 non-finite value\(s\) \(3 NaN, 4 Inf\)"):
            cube.check_finite("lr_hsi")


def _npz_with_wavelengths(d: Path, wl: np.ndarray) -> Path:
    np.savez(d / "w.npz", data=reference_cube().data, wavelengths=wl)
    return d / "w.npz"


def _envi_with_wavelengths(d: Path, wl: np.ndarray) -> Path:
    write_cube(d / "w.hdr", Cube(reference_cube().data))
    text = (d / "w.hdr").read_text() + "wavelength = {" + ", ".join(str(v) for v in wl) + "}\n"
    (d / "w.hdr").write_text(text)
    return d / "w.hdr"


def _mat_with_wavelengths(d: Path, wl: np.ndarray) -> Path:
    scipy.io.savemat(d / "w.mat", {"cube": np.transpose(reference_cube().data, (1, 2, 0)), "wavelength": wl[None]})
    return d / "w.mat"


@pytest.mark.parametrize("build", [_npz_with_wavelengths, _envi_with_wavelengths, _mat_with_wavelengths])
@pytest.mark.parametrize("count", [BANDS - 1, BANDS + 2, 1])
def test_wavelengths_that_do_not_match_the_band_count_are_dropped_with_a_warning(
    build: Callable[[Path, np.ndarray], Path], count: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wl = np.linspace(420.0, 680.0, count)
    path = build(tmp_path, wl)
    with fuzz_case(f"{count} wavelengths for {BANDS} bands ({build.__name__})"), caplog.at_level(logging.WARNING):
        cube = read_cube(path)
    assert cube.wavelengths is None
    assert any(str(BANDS) in r.getMessage() and "ignoring" in r.getMessage() for r in caplog.records), caplog.text
    with pytest.raises(InputError, match=f"{count} wavelengths given for {BANDS} bands"):
        Cube(cube.data, wavelengths=wl)


@pytest.mark.parametrize(("text", "message"), [
    ("400\nnan\n500\n", "NaN"), ("400\ninf\n", "NaN/Inf"), ("400, 500\n600\n", "line 1 has 2 values"),
    ("wavelength_nm\n", "holds no values"), ("400\nfour\n", "'four' is not a number"),
    ("\x00\xff\xfe", "could not be read as text|not a number"),
])
def test_bad_wavelength_files_are_refused(text: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "wl.txt").write_bytes(text.encode("latin-1"))
    with fuzz_case(f"wavelength file {text!r}"), pytest.raises(InputError, match=message):
        read_wavelengths(tmp_path / "wl.txt")


@pytest.mark.parametrize(("lr", "msi", "scale", "message"), [
    ((8, 8), (30, 32), 4, "hr_msi is 30x32 but lr_hsi is 8x8"),
    ((8, 8), (32, 16), 4, "hr_msi is 32x16 but lr_hsi is 8x8"),
    ((8, 8), (16, 16), 4, "a ratio of 2, but the model fuses at x4"),
    ((8, 8), (4, 4), 4, "hr_msi is 4x4 but lr_hsi is 8x8"),
])
def test_grids_that_disagree_are_refused_naming_both(lr: tuple[int, int], msi: tuple[int, int], scale: int,
                                                     message: str) -> None:
    with fuzz_case(f"grids {lr} and {msi} at x{scale}"), pytest.raises(InputError, match=re.escape(message)):
        check_grids((6, *lr), (3, *msi), scale)


# ------------------------------------------------------------------------------------------ untrusted checkpoints
class _RunsCode:
    """Unpickling this calls ``func(*args)``: what a hostile checkpoint would do."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


def _tiny_model_payload() -> dict[str, Any]:
    model = create_model("student", bands=6, msi_bands=3, nf=8, gc=4, blocks=(1, 1, 1, 1))
    return model_payload(model, role="student", normalization=Normalization("per_image"),
                         wavelengths=list(np.linspace(420, 680, 6)))


def _hostile(kind: str, path: Path, marker: Path) -> None:
    touch = _RunsCode(os.system, f"touch {marker}")
    exec_ = _RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()")
    if kind == "torch.save zip":
        torch.save({"state_dict": touch}, path)
    elif kind == "torch.save legacy":
        torch.save({"x": exec_}, path, _use_new_zipfile_serialization=False)
    elif kind in ("raw pickle 2", "raw pickle 5"):
        path.write_bytes(pickle.dumps(touch, protocol=int(kind[-1])))
    elif kind == "inside a csakd payload":
        payload = _tiny_model_payload()
        payload["metrics"] = {"psnr": exec_}
        torch.save(payload, path)
    elif kind == "inside a reference state dict":
        torch.save({"hconv1.weight": torch.zeros(8, 6, 3, 3), "mconv1.weight": torch.zeros(8, 3, 3, 3),
                    "extra": touch}, path)
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["torch.save zip", "torch.save legacy", "raw pickle 2", "raw pickle 5",
                                  "inside a csakd payload", "inside a reference state dict"])
def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pt"
    _hostile(kind, path, marker)
    assert not marker.exists()
    with fuzz_case(f"hostile checkpoint: {kind}"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
    message = str(info.value)
    assert not marker.exists(), "unpickling ran the checkpoint's code"
    assert "\n" not in message and str(path) in message
    assert re.search(r"refused|without running code", message), message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message


def test_the_refusal_names_the_forbidden_object(tmp_path: Path) -> None:
    _hostile("torch.save zip", tmp_path / "h.pt", tmp_path / "pwned")
    with pytest.raises(CheckpointError, match=r"\(posix\.system\)|\(nt\.system\)"):
        load_checkpoint(tmp_path / "h.pt")


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(bands=st.integers(1, 9), msi_bands=st.integers(1, 5), scale=st.sampled_from([None, 1, 2, 4, 8]))
def test_check_compatible_refuses_other_band_counts_and_scales_naming_both(
    tiny_loaded: LoadedModel, bands: int, msi_bands: int, scale: int | None
) -> None:
    loaded = tiny_loaded  # 6 bands, 3 MSI bands, x4
    with fuzz_case(f"check_compatible({bands}, {msi_bands}, {scale})", max_bytes=None):
        fits = bands == 6 and msi_bands == 3 and scale in (None, 4)
        if fits:
            check_compatible(loaded, bands=bands, msi_bands=msi_bands, scale=scale)
            return
        with pytest.raises(CheckpointError) as info:
            check_compatible(loaded, bands=bands, msi_bands=msi_bands, scale=scale)
        message = str(info.value)
        if bands != 6:
            assert f"{bands} HSI bands (the checkpoint expects 6)" in message
        if msi_bands != 3:
            assert f"{msi_bands} MSI bands (the checkpoint expects 3)" in message
        if scale not in (None, 4):
            assert f"scale {scale} (the checkpoint was trained at x4)" in message


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_payload(path, _tiny_model_payload())
    return path


@pytest.fixture(scope="module")
def tiny_loaded(tiny_checkpoint: Path) -> LoadedModel:
    return load_checkpoint(tiny_checkpoint)


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_damaged_checkpoints_are_refused_or_load_the_same_model(
    tiny_checkpoint: Path, tiny_loaded: LoadedModel, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    whole = bytearray(tiny_checkpoint.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        content = bytes(whole[: data.draw(st.integers(0, len(whole) - 1), label="cut")])
        label = f"checkpoint truncated to {len(content)} of {len(whole)} bytes"
    else:
        for pos in data.draw(st.lists(st.integers(0, len(whole) - 1), min_size=1, max_size=3), label="flips"):
            whole[pos] ^= 0x5A
        content, label = bytes(whole), "checkpoint with flipped bytes"
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "c.pt"
    path.write_bytes(content)
    with fuzz_case(label, max_bytes=64 * 2**20):
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            assert "\n" not in str(exc)
            return
        assert loaded.config == tiny_loaded.config


_WRONG_VALUES = [None, "x", -1.5, [1, "a"], {"nf": "wide"}, torch.zeros(2)]


@pytest.mark.parametrize("key", ["model_config", "state_dict", "normalization", "wavelengths", "response",
                                 "degradation", "role", "epoch", "metrics"])
def test_checkpoint_fields_of_the_wrong_type_end_in_checkpoint_errors(key: str, tmp_path: Path) -> None:
    for i, value in enumerate(_WRONG_VALUES):
        payload = _tiny_model_payload()
        payload[key] = value
        torch.save(payload, tmp_path / f"{i}.pt")
        with fuzz_case(f"checkpoint with {key} = {value!r}", max_bytes=None):
            try:
                load_checkpoint(tmp_path / f"{i}.pt")
            except CheckpointError as exc:
                assert "\n" not in str(exc) and str(tmp_path / f"{i}.pt") in str(exc)


def test_a_checkpoint_declaring_a_huge_model_is_refused_before_building_it(tmp_path: Path) -> None:
    payload = _tiny_model_payload()
    payload["model_config"] = {**payload["model_config"], "nf": 20_000, "gc": 10_000, "bands": 10_000}
    torch.save(payload, tmp_path / "huge.pt")
    with fuzz_case("checkpoint declaring a huge model", max_bytes=64 * 2**20):
        with pytest.raises(CheckpointError, match=r"declares a model of \d+ parameters .* the file holds only"):
            load_checkpoint(tmp_path / "huge.pt")
