"""File I/O: the Cube container, every reader (each on a tiny file in the real format built here), the
writers' round trips, the error messages for bad input, and the real files in ../shared/data."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

import csakd.data.cube as cube_mod
import csakd.data.io_tiff as io_tiff
from csakd.data import Cube, GeoInfo, read_cube, read_wavelengths, write_cube
from csakd.data.io_envi import parse_envi_header
from csakd.errors import InputError, OutputExistsError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or a clean skip."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: ../shared/data is absent")
    return path


def rng_cube(c: int = 5, h: int = 4, w: int = 6, seed: int = 0) -> np.ndarray:
    """A (C, H, W) float32 cube of distinct values, so any axis mix-up changes it."""
    return np.random.default_rng(seed).standard_normal((c, h, w)).astype(np.float32)


# --------------------------------------------------------------------------------------------- Cube
class TestCube:
    def test_properties_and_int_data_become_float32(self) -> None:
        c = Cube(np.arange(24, dtype=np.uint16).reshape(2, 3, 4))
        assert (c.bands, c.height, c.width) == (2, 3, 4)
        assert c.data.dtype == np.float32
        assert c.data[1, 2, 3] == 23.0

    @pytest.mark.parametrize(
        ("shape", "match"),
        [
            ((3, 4), "2 dimension"),
            ((0, 3, 4), "zero bands"),
            ((2, 0, 4), "0x4 pixels"),
            ((1, 2, 3, 4), "4 dim"),
        ],
    )
    def test_bad_shapes(self, shape: tuple[int, ...], match: str) -> None:
        with pytest.raises(InputError, match=match):
            Cube(np.zeros(shape, np.float32))

    def test_non_numeric_and_complex_refused(self) -> None:
        with pytest.raises(InputError, match="real numeric"):
            Cube(np.zeros((1, 2, 2), np.complex64))
        with pytest.raises(InputError, match="real numeric"):
            Cube(np.array([[["a"]]]))

    def test_wavelength_checks_and_micrometres(self) -> None:
        c = Cube(np.zeros((3, 2, 2), np.float32), wavelengths=[0.45, 0.55, 0.65])
        np.testing.assert_allclose(c.wavelengths, [450.0, 550.0, 650.0])  # type: ignore[arg-type]
        c = Cube(np.zeros((3, 2, 2), np.float32), wavelengths=[450, 550, 650])
        np.testing.assert_allclose(c.wavelengths, [450.0, 550.0, 650.0])  # type: ignore[arg-type]
        with pytest.raises(InputError, match="2 wavelengths given for 3 bands"):
            Cube(np.zeros((3, 2, 2), np.float32), wavelengths=[450, 550])
        with pytest.raises(InputError, match="NaN"):
            Cube(np.zeros((2, 2, 2), np.float32), wavelengths=[450, np.nan])
        with pytest.raises(InputError, match="1 band names given for 2 bands"):
            Cube(np.zeros((2, 2, 2), np.float32), band_names=["a"])

    def test_check_finite_counts(self) -> None:
        d = np.ones((2, 3, 3), np.float32)
        Cube(d.copy()).check_finite("ok")
        d[0, 0, 0] = np.nan
        d[1, 2, 2] = np.inf
        d[1, 1, 1] = np.nan
        with pytest.raises(InputError, match=r"lr_hsi has 3 non-finite value\(s\) \(2 NaN, 1 Inf\)"):
            Cube(d).check_finite("lr_hsi")


# --------------------------------------------------------------------------------------------- CAVE
def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png(path: Path, arr: np.ndarray) -> None:
    """A PNG written by hand (no Pillow): 16-bit grey for uint16 (H, W), 8-bit RGBA for uint8 (H, W, 4)."""
    if arr.dtype == np.uint16 and arr.ndim == 2:
        depth, colour, rows = 16, 0, [r.astype(">u2").tobytes() for r in arr]
    elif arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 4:
        depth, colour, rows = 8, 6, [r.tobytes() for r in arr]
    else:
        raise AssertionError("unsupported test PNG")
    raw = b"".join(b"\x00" + r for r in rows)  # filter type 0 on every row
    ihdr = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], depth, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


class TestCave:
    def make_scene(self, root: Path, bands: int, nested: bool = True, pad: int = 2) -> np.ndarray:
        where = root / "toy_ms" / "toy_ms" if nested else root / "toy_ms"
        where.mkdir(parents=True)
        cube = np.random.default_rng(1).integers(0, 65536, size=(bands, 3, 5), dtype=np.uint16)
        cube[0, 0, 0], cube[-1, -1, -1] = 0, 65535
        for i in reversed(range(bands)):  # written out of order
            write_png(where / f"toy_ms_{i + 1:0{pad}d}.png", cube[i])
        (where / "toy_RGB.bmp").write_bytes(b"not a band")
        return cube

    def test_sixteen_bit_exact_and_sorted_with_wavelengths(self, tmp_path: Path) -> None:
        truth = self.make_scene(tmp_path, 31)
        for path in (tmp_path / "toy_ms", tmp_path / "toy_ms" / "toy_ms"):
            c = read_cube(path)
            np.testing.assert_array_equal(c.data, truth.astype(np.float32))
            np.testing.assert_array_equal(c.wavelengths, np.arange(400, 701, 10))  # type: ignore[arg-type]
            assert c.band_names is not None and c.band_names[10] == "toy_ms_11"

    def test_numeric_band_order_and_no_wavelengths_unless_31(self, tmp_path: Path) -> None:
        truth = self.make_scene(tmp_path, 12, nested=False, pad=1)  # toy_ms_10 sorts before toy_ms_2 as text
        c = read_cube(tmp_path / "toy_ms")
        np.testing.assert_array_equal(c.data, truth.astype(np.float32))
        assert c.wavelengths is None

    def test_rgba_takes_channel_zero(self, tmp_path: Path) -> None:
        d = tmp_path / "wc_ms"
        d.mkdir()
        rgba = np.random.default_rng(2).integers(0, 256, size=(2, 3, 4, 4), dtype=np.uint8)
        for i in range(2):
            write_png(d / f"wc_ms_{i + 1:02d}.png", rgba[i])
        c = read_cube(d)
        np.testing.assert_array_equal(c.data, rgba[..., 0].astype(np.float32))

    def test_gap_in_band_numbers(self, tmp_path: Path) -> None:
        self.make_scene(tmp_path, 4, nested=False)
        (tmp_path / "toy_ms" / "toy_ms_03.png").unlink()
        with pytest.raises(InputError, match="missing: 03"):
            read_cube(tmp_path / "toy_ms")

    def test_directory_without_bands_and_root_of_scenes(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match="without CAVE band images"):
            read_cube(tmp_path)
        self.make_scene(tmp_path, 2)
        other = tmp_path / "b_ms" / "b_ms"
        other.mkdir(parents=True)
        write_png(other / "b_ms_01.png", np.zeros((3, 5), np.uint16))
        with pytest.raises(InputError, match="2 CAVE scene folders"):
            read_cube(tmp_path)

    def test_damaged_png_and_size_mismatch(self, tmp_path: Path) -> None:
        self.make_scene(tmp_path, 3, nested=False)
        write_png(tmp_path / "toy_ms" / "toy_ms_02.png", np.zeros((4, 4), np.uint16))
        with pytest.raises(InputError, match="same size"):
            read_cube(tmp_path / "toy_ms")
        (tmp_path / "toy_ms" / "toy_ms_02.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
        with pytest.raises(InputError, match="not a readable PNG"):
            read_cube(tmp_path / "toy_ms")

    def test_layout_override_refused(self, tmp_path: Path) -> None:
        self.make_scene(tmp_path, 2)
        with pytest.raises(InputError, match="layout must be 'auto'"):
            read_cube(tmp_path / "toy_ms", layout="hwc")


# ---------------------------------------------------------------------------------------------- .mat
def write_mat73(path: Path, variables: dict[str, np.ndarray], classes: dict[str, str] | None = None) -> None:
    """A MATLAB v7.3 file as MATLAB lays it out: a 512-byte user block with the text header, and each
    variable stored with its axes reversed (h5py sees the transpose of the MATLAB array)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in variables.items():
            ds = f.create_dataset(name, data=np.asarray(arr).T)
            cls = (classes or {}).get(
                name, {"float64": "double", "float32": "single"}.get(arr.dtype.name, arr.dtype.name)
            )
            ds.attrs["MATLAB_class"] = np.bytes_(cls)
    with open(path, "r+b") as fh:
        text = (
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
        )
        fh.write(text.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")  # text, subsystem offset, version, endian


class TestMat:
    def test_v5_hwc_with_wavelength_row_vector(self, tmp_path: Path) -> None:
        chw = rng_cube(4, 3, 5)
        p = tmp_path / "a.mat"
        scipy.io.savemat(
            p,
            {"img": chw.transpose(1, 2, 0), "wl": np.array([[0.4, 0.5, 0.6, 0.7]]), "mask": np.ones((3, 5))},
        )
        c = read_cube(p)
        np.testing.assert_array_equal(c.data, chw)
        np.testing.assert_allclose(c.wavelengths, [400, 500, 600, 700])  # type: ignore[arg-type]
        np.testing.assert_array_equal(read_cube(p, layout="chw").data, chw.transpose(1, 2, 0))  # as stored

    def test_v73_matches_v5_of_the_same_matlab_array(self, tmp_path: Path) -> None:
        hwc = rng_cube(6, 4, 3).transpose(1, 2, 0).astype(np.float64)  # MATLAB (H=4, W=3, C=6)
        scipy.io.savemat(tmp_path / "v5.mat", {"X": hwc})
        write_mat73(tmp_path / "v73.mat", {"X": hwc, "wavelengths": np.linspace(400, 900, 6)[:, None].T})
        assert h5py.is_hdf5(tmp_path / "v73.mat")
        with pytest.raises(NotImplementedError):
            scipy.io.loadmat(tmp_path / "v73.mat")  # it really is what scipy calls v7.3
        a, b = read_cube(tmp_path / "v5.mat"), read_cube(tmp_path / "v73.mat")
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(b.data, hwc.transpose(2, 0, 1).astype(np.float32))
        np.testing.assert_allclose(b.wavelengths, np.linspace(400, 900, 6))  # type: ignore[arg-type]

    def test_v73_char_and_candidates_listed(self, tmp_path: Path) -> None:
        p = tmp_path / "x.mat"
        write_mat73(
            p,
            {"A": np.zeros((2, 3, 4)), "B": np.zeros((5, 5, 2)), "name": np.array([65, 66], np.uint16)},
            classes={"name": "char"},
        )
        with pytest.raises(InputError, match=r"2 3-D arrays: A 2x3x4, B 5x5x2; choose one with variable="):
            read_cube(p)
        assert read_cube(p, variable="B").data.shape == (2, 5, 5)
        with pytest.raises(InputError, match="of class char"):
            read_cube(p, variable="name")

    def test_several_none_and_unknown_variable(self, tmp_path: Path) -> None:
        p = tmp_path / "two.mat"
        scipy.io.savemat(p, {"hyprImg": np.zeros((4, 4, 3)), "rgbImg": np.zeros((8, 8, 3), np.uint8)})
        with pytest.raises(InputError, match=r"hyprImg 4x4x3, rgbImg 8x8x3"):
            read_cube(p)
        assert read_cube(p, variable="rgbImg").data.shape == (3, 8, 8)
        with pytest.raises(InputError, match=r"no variable 'nope'; it holds: hyprImg 4x4x3 double"):
            read_cube(p, variable="nope")
        scipy.io.savemat(tmp_path / "flat.mat", {"R": np.zeros((4, 10))})
        with pytest.raises(InputError, match=r"no 3-D numeric array.*R 4x10"):
            read_cube(tmp_path / "flat.mat")
        with pytest.raises(InputError, match="has shape"):
            read_cube(tmp_path / "flat.mat", variable="R")

    def test_complex_and_cell_refused(self, tmp_path: Path) -> None:
        p = tmp_path / "c.mat"
        scipy.io.savemat(p, {"z": np.zeros((2, 2, 2), np.complex128)})
        with pytest.raises(InputError, match="real"):
            read_cube(p)

    def test_empty_truncated_and_garbage(self, tmp_path: Path) -> None:
        (tmp_path / "e.mat").write_bytes(b"")
        with pytest.raises(InputError, match="empty"):
            read_cube(tmp_path / "e.mat")
        (tmp_path / "g.mat").write_bytes(b"hello, this is not matlab" * 10)
        with pytest.raises(InputError, match="not a readable MATLAB"):
            read_cube(tmp_path / "g.mat")
        good = tmp_path / "good.mat"
        scipy.io.savemat(good, {"X": rng_cube(8, 8, 8).astype(np.float64)})
        cut = tmp_path / "cut.mat"
        cut.write_bytes(good.read_bytes()[:1000])
        with pytest.raises(InputError, match=r"cut\.mat"):
            read_cube(cut)
        write_mat73(tmp_path / "h.mat", {"X": np.zeros((20, 20, 20))})
        h = tmp_path / "h73cut.mat"
        h.write_bytes((tmp_path / "h.mat").read_bytes()[:3000])
        with pytest.raises(InputError, match=r"h73cut\.mat"):
            read_cube(h)


# -------------------------------------------------------------------------------------------- numpy
class TestNumpy:
    def test_npy_chw_default_and_hwc(self, tmp_path: Path) -> None:
        chw = rng_cube()
        np.save(tmp_path / "a.npy", chw)
        np.testing.assert_array_equal(read_cube(tmp_path / "a.npy").data, chw)
        np.save(tmp_path / "b.npy", chw.transpose(1, 2, 0).astype(np.int16))
        got = read_cube(tmp_path / "b.npy", layout="hwc", dtype=np.float64)
        assert got.data.dtype == np.float64
        np.testing.assert_array_equal(got.data, chw.astype(np.int16).astype(np.float64))

    def test_npy_fortran_order(self, tmp_path: Path) -> None:
        chw = rng_cube()
        np.save(tmp_path / "f.npy", np.asfortranarray(chw))
        np.testing.assert_array_equal(read_cube(tmp_path / "f.npy").data, chw)

    @pytest.mark.parametrize(
        ("arr", "match"),
        [
            (np.zeros((3, 4), np.float32), "2-D array"),
            (np.zeros((0, 3, 4), np.float32), "zero bands"),
            (np.zeros((2, 2, 2), np.complex64), "not a real number type"),
            (np.array([[["a"]]]), "not a real number type"),
        ],
    )
    def test_npy_bad_arrays(self, tmp_path: Path, arr: np.ndarray, match: str) -> None:
        np.save(tmp_path / "x.npy", arr)
        with pytest.raises(InputError, match=match):
            read_cube(tmp_path / "x.npy")

    def test_npy_object_empty_truncated(self, tmp_path: Path) -> None:
        obj = np.empty((1, 1, 1), dtype=object)
        np.save(tmp_path / "o.npy", obj, allow_pickle=True)
        with pytest.raises(InputError, match="dtype object"):
            read_cube(tmp_path / "o.npy")
        (tmp_path / "e.npy").write_bytes(b"")
        with pytest.raises(InputError, match="empty"):
            read_cube(tmp_path / "e.npy")
        np.save(tmp_path / "t.npy", rng_cube(4, 8, 8))
        full = (tmp_path / "t.npy").read_bytes()
        (tmp_path / "t.npy").write_bytes(full[:-10])
        with pytest.raises(InputError, match=rf"truncated.*{len(full)} bytes.*{len(full) - 10} bytes"):
            read_cube(tmp_path / "t.npy")
        (tmp_path / "h.npy").write_bytes(full[:20])
        with pytest.raises(InputError, match="damaged or truncated header"):
            read_cube(tmp_path / "h.npy")

    def test_npz_selection_and_wavelengths(self, tmp_path: Path) -> None:
        chw = rng_cube(3)
        p = tmp_path / "a.npz"
        np.savez(p, cube=chw, wavelengths=np.array([1.0, 1.5, 2.0]), mask=np.zeros((4, 6)))
        c = read_cube(p)
        np.testing.assert_array_equal(c.data, chw)
        np.testing.assert_allclose(c.wavelengths, [1000.0, 1500.0, 2000.0])  # type: ignore[arg-type]
        np.savez(tmp_path / "two.npz", a=chw, b=chw[:2])
        with pytest.raises(InputError, match=r"2 3-D arrays: a 3x4x6, b 2x4x6"):
            read_cube(tmp_path / "two.npz")
        np.testing.assert_array_equal(read_cube(tmp_path / "two.npz", variable="b").data, chw[:2])
        np.savez(tmp_path / "hwc.npz", x=chw.transpose(1, 2, 0))
        np.testing.assert_array_equal(read_cube(tmp_path / "hwc.npz", layout="hwc").data, chw)

    def test_npz_damaged(self, tmp_path: Path) -> None:
        np.savez(tmp_path / "a.npz", x=rng_cube())
        (tmp_path / "cut.npz").write_bytes((tmp_path / "a.npz").read_bytes()[:200])
        with pytest.raises(InputError, match=r"not a readable \.npz"):
            read_cube(tmp_path / "cut.npz")
        (tmp_path / "e.npz").write_bytes(b"")
        with pytest.raises(InputError, match="empty"):
            read_cube(tmp_path / "e.npz")


# --------------------------------------------------------------------------------------------- ENVI
def write_envi_by_hand(
    base: Path, chw: np.ndarray, interleave: str, code: int, byteorder: int, offset: int = 0, extra: str = ""
) -> None:
    """An ENVI pair made without the library: the cube laid out per interleave, after ``offset`` bytes."""
    c, h, w = chw.shape
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    np_type = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}[code]
    dt = np.dtype(("<" if byteorder == 0 else ">") + np_type)
    base.with_suffix(".dat").write_bytes(
        b"\xab" * offset + np.ascontiguousarray(chw.transpose(order), dt).tobytes()
    )
    base.with_suffix(".hdr").write_text(
        f"ENVI\ndescription = {{tiny\n test}}\nsamples = {w}\nlines   = {h}\nbands = {c}\n"
        f"header offset = {offset}\nfile type = ENVI Standard\ndata type = {code}\n"
        f"interleave = {interleave}\n"
        f"byte order = {byteorder}\n{extra}"
    )


class TestEnvi:
    @pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
    @pytest.mark.parametrize(("code", "byteorder"), [(12, 0), (2, 1), (4, 1), (5, 0), (1, 0), (15, 1)])
    def test_interleaves_types_and_byte_orders(
        self, tmp_path: Path, interleave: str, code: int, byteorder: int
    ) -> None:
        chw = np.random.default_rng(3).integers(0, 200, size=(3, 4, 5)).astype(np.float32)
        write_envi_by_hand(tmp_path / "img", chw, interleave, code, byteorder, offset=7)
        for p in (tmp_path / "img.hdr", tmp_path / "img.dat"):
            np.testing.assert_array_equal(read_cube(p).data, chw)

    def test_header_fields(self, tmp_path: Path) -> None:
        extra = (
            " wavelength = {\n 0.45, 0.55,\n 0.65}\nwavelength units = Micrometers\n"
            "band names = {b one, b two, b three}\ndata ignore value = -9999\n"
        )
        write_envi_by_hand(tmp_path / "img", rng_cube(3, 2, 2), "bsq", 4, 0, extra=extra)
        c = read_cube(tmp_path / "img.hdr")
        np.testing.assert_allclose(c.wavelengths, [450, 550, 650])  # type: ignore[arg-type]
        assert c.band_names == ["b one", "b two", "b three"]
        assert c.geo is not None and c.geo.nodata == -9999.0
        raw = parse_envi_header((tmp_path / "img.hdr").read_text(), "x")
        assert raw["description"] == "tiny test"

    def test_data_file_without_extension_and_img(self, tmp_path: Path) -> None:
        chw = rng_cube(2, 3, 3)
        write_envi_by_hand(tmp_path / "scene", chw, "bsq", 4, 0)
        (tmp_path / "scene.dat").rename(tmp_path / "scene")
        np.testing.assert_array_equal(read_cube(tmp_path / "scene").data, chw)
        np.testing.assert_array_equal(read_cube(tmp_path / "scene.hdr").data, chw)

    def test_truncated_names_bytes(self, tmp_path: Path) -> None:
        write_envi_by_hand(tmp_path / "img", rng_cube(3, 4, 5), "bsq", 4, 0)
        (tmp_path / "img.dat").write_bytes((tmp_path / "img.dat").read_bytes()[:100])
        with pytest.raises(InputError, match=r"truncated.*= 240 bytes, but the file has 100 bytes"):
            read_cube(tmp_path / "img.hdr")
        (tmp_path / "img.dat").write_bytes(b"")
        with pytest.raises(InputError, match="the file has 0 bytes"):
            read_cube(tmp_path / "img.dat")

    @pytest.mark.parametrize(
        ("header", "match"),
        [
            ("ENVI\nsamples = 2\nlines = 2\ndata type = 4\n", "no 'bands'"),
            ("ENVI\nsamples = 2\nlines = 2\nbands = 0\ndata type = 4\n", "0 bands"),
            ("ENVI\nsamples = 2\nlines = 2\nbands = 2\ndata type = 6\n", "complex"),
            ("ENVI\nsamples = 2\nlines = 2\nbands = 2\ndata type = 7\n", "data type 7"),
            ("ENVI\nsamples = x\nlines = 2\nbands = 2\ndata type = 4\n", "not an integer"),
            ("ENVI\nsamples = 2\nlines = 2\nbands = 2\ndata type = 4\ninterleave = bxq\n", "bxq"),
            ("ENVI\nsamples = 2\nlines = 2\nbands = 2\ndata type = 4\nband names = {a,\n", "never closes"),
            ("PNG\nsamples = 2\n", "first line must be 'ENVI'"),
            ("", "empty"),
        ],
    )
    def test_bad_headers(self, tmp_path: Path, header: str, match: str) -> None:
        (tmp_path / "x.hdr").write_text(header)
        (tmp_path / "x.img").write_bytes(b"\x00" * 64)
        with pytest.raises(InputError, match=match):
            read_cube(tmp_path / "x.hdr")

    def test_absurd_size_refused_before_reading(self, tmp_path: Path) -> None:
        (tmp_path / "x.hdr").write_text(
            "ENVI\nsamples = 1000000\nlines = 1000000\nbands = 10000\ndata type = 12\n"
        )
        (tmp_path / "x.img").write_bytes(b"\x00" * 64)
        with pytest.raises(InputError, match=r"would need 35\.5 PiB of memory, but only"):
            read_cube(tmp_path / "x.img")

    def test_header_without_data_and_data_without_header(self, tmp_path: Path) -> None:
        (tmp_path / "x.hdr").write_text("ENVI\nsamples = 1\nlines = 1\nbands = 1\ndata type = 4\n")
        with pytest.raises(InputError, match=r"no data file beside it: tried x, x\.img, x\.dat"):
            read_cube(tmp_path / "x.hdr")
        (tmp_path / "y.img").write_bytes(b"\x00" * 4)
        with pytest.raises(InputError, match=r"unknown \(and no ENVI \.hdr"):
            read_cube(tmp_path / "y.img")


# --------------------------------------------------------------------------------------------- TIFF
@pytest.fixture(params=["rasterio", "tifffile"])
def tiff_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with rasterio, then as if rasterio were not installed."""
    if request.param == "rasterio":
        pytest.importorskip("rasterio")
    else:
        monkeypatch.setattr(io_tiff, "import_rasterio", lambda: None)
    return str(request.param)


class TestTiff:
    def test_planar_separate_is_chw(self, tmp_path: Path, tiff_backend: str) -> None:
        chw = rng_cube(5, 4, 6)
        tifffile.imwrite(tmp_path / "s.tif", chw, photometric="minisblack", planarconfig="separate")
        np.testing.assert_array_equal(read_cube(tmp_path / "s.tif").data, chw)

    def test_contiguous_samples_are_hwc(self, tmp_path: Path, tiff_backend: str) -> None:
        hwc = np.random.default_rng(4).integers(0, 60000, size=(4, 6, 3), dtype=np.uint16)
        tifffile.imwrite(tmp_path / "rgb.tif", hwc, photometric="rgb", planarconfig="contig")
        np.testing.assert_array_equal(
            read_cube(tmp_path / "rgb.tif").data, hwc.transpose(2, 0, 1).astype(np.float32)
        )

    def test_page_stack_is_one_band_per_page(self, tmp_path: Path, tiff_backend: str) -> None:
        chw = rng_cube(7, 4, 6)  # tifffile writes 7 pages of 4x6
        tifffile.imwrite(tmp_path / "stack.tif", chw)
        with tifffile.TiffFile(tmp_path / "stack.tif") as tf:
            assert len(tf.pages) == 7
        np.testing.assert_array_equal(read_cube(tmp_path / "stack.tif").data, chw)
        np.testing.assert_array_equal(
            read_cube(tmp_path / "stack.tif", layout="hwc").data, chw.transpose(2, 0, 1)
        )

    def test_single_band_2d(self, tmp_path: Path, tiff_backend: str) -> None:
        img = rng_cube(1)[0]
        tifffile.imwrite(tmp_path / "g.tif", img)
        np.testing.assert_array_equal(read_cube(tmp_path / "g.tif").data, img[None])

    def test_damaged(self, tmp_path: Path, tiff_backend: str) -> None:
        (tmp_path / "e.tif").write_bytes(b"")
        with pytest.raises(InputError, match="empty"):
            read_cube(tmp_path / "e.tif")
        (tmp_path / "g.tif").write_bytes(b"II*\x00garbage" * 5)
        with pytest.raises(InputError, match=r"g\.tif"):
            read_cube(tmp_path / "g.tif")
        tifffile.imwrite(
            tmp_path / "a.tif", rng_cube(4, 32, 32), photometric="minisblack", planarconfig="separate"
        )
        full = (tmp_path / "a.tif").read_bytes()
        (tmp_path / "cut.tif").write_bytes(full[: len(full) // 2])
        with pytest.raises(InputError, match=r"cut\.tif"):
            read_cube(tmp_path / "cut.tif")

    def test_wavelengths_from_band_descriptions(self, tmp_path: Path) -> None:
        rasterio = pytest.importorskip("rasterio")
        p = tmp_path / "d.tif"
        transform = rasterio.Affine(2.0, 0.0, 100.0, 0.0, -2.0, 200.0)
        with rasterio.open(
            p, "w", driver="GTiff", width=3, height=2, count=2, dtype="float32", transform=transform
        ) as ds:
            ds.write(rng_cube(2, 2, 3))
            ds.set_band_description(1, "wavelength=0.5")
            ds.set_band_description(2, "612.5 nm")
        c = read_cube(p)
        np.testing.assert_allclose(c.wavelengths, [500.0, 612.5])  # type: ignore[arg-type]
        assert (
            c.geo is not None and c.geo.transform == (2.0, 0.0, 100.0, 0.0, -2.0, 200.0) and c.geo.crs is None
        )


# ------------------------------------------------------------------------------------------ writers
FORMATS = [".npy", ".npz", ".mat", ".tif", ".hdr", ".img", ".dat"]


def full_cube() -> Cube:
    return Cube(
        data=rng_cube(4, 5, 3),
        wavelengths=np.array([401.5, 500.25, 600.0, 2400.125]),
        band_names=["blue", "green", "red", "swir"],
        geo=GeoInfo(nodata=-9999.0),
    )


class TestWriters:
    @pytest.mark.parametrize("suffix", FORMATS)
    def test_round_trip(self, tmp_path: Path, suffix: str) -> None:
        cube = full_cube()
        out = write_cube(tmp_path / f"x{suffix}", cube)
        back = read_cube(out)
        np.testing.assert_array_equal(back.data, cube.data)
        if suffix == ".npy":
            return
        np.testing.assert_array_equal(back.wavelengths, cube.wavelengths)  # type: ignore[arg-type]
        assert back.band_names == cube.band_names
        if suffix in (".tif", ".hdr", ".img", ".dat"):
            assert back.geo is not None and back.geo.nodata == -9999.0
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left

    def test_tif_geo_round_trip(self, tmp_path: Path) -> None:
        rasterio = pytest.importorskip("rasterio")
        wkt = rasterio.crs.CRS.from_epsg(32633).to_wkt()
        geo = GeoInfo(crs="EPSG:32633", transform=(30.0, 0.0, 500000.0, 0.0, -30.0, 4200000.0), nodata=0.0)
        cube = Cube(rng_cube(3, 4, 5), wavelengths=[450, 550, 650], geo=geo)
        back = read_cube(write_cube(tmp_path / "g.tiff", cube))
        assert back.geo is not None
        assert back.geo.transform == geo.transform and back.geo.nodata == 0.0
        assert rasterio.crs.CRS.from_wkt(back.geo.crs) == rasterio.crs.CRS.from_wkt(wkt)
        with rasterio.open(tmp_path / "g.tiff") as ds:  # what other GDAL tools see
            assert ds.count == 3 and ds.dtypes[0] == "float32" and ds.crs.to_epsg() == 32633
            assert ds.tags(2) == {"wavelength": "550.0", "wavelength_units": "nm"}

    def test_tif_backends_agree(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        pytest.importorskip("rasterio")
        cube = full_cube()
        write_cube(tmp_path / "rio.tif", cube)
        monkeypatch.setattr(io_tiff, "import_rasterio", lambda: None)
        write_cube(tmp_path / "tf.tif", cube)
        from_tf_by_tf = read_cube(tmp_path / "tf.tif")
        from_rio_by_tf = read_cube(tmp_path / "rio.tif")
        monkeypatch.undo()
        from_tf_by_rio = read_cube(tmp_path / "tf.tif")
        for back in (from_tf_by_tf, from_rio_by_tf, from_tf_by_rio):
            np.testing.assert_array_equal(back.data, cube.data)
            np.testing.assert_array_equal(back.wavelengths, cube.wavelengths)  # type: ignore[arg-type]
            assert back.band_names == cube.band_names
            assert back.geo is not None and back.geo.nodata == -9999.0

    def test_tifffile_refuses_georeferenced(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(io_tiff, "import_rasterio", lambda: None)
        cube = Cube(rng_cube(), geo=GeoInfo(crs="EPSG:4326"))
        with pytest.raises(InputError, match="needs rasterio"):
            write_cube(tmp_path / "g.tif", cube)
        assert list(tmp_path.iterdir()) == []

    def test_mat_layout_is_matlab(self, tmp_path: Path) -> None:
        cube = full_cube()
        write_cube(tmp_path / "m.mat", cube)
        m = scipy.io.loadmat(tmp_path / "m.mat")
        np.testing.assert_array_equal(m["data"], cube.data.transpose(1, 2, 0))
        assert m["wavelengths"].shape == (1, 4)

    def test_envi_files_and_header(self, tmp_path: Path) -> None:
        cube = full_cube()
        write_cube(tmp_path / "e.hdr", cube)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["e.hdr", "e.img"]
        raw = np.fromfile(tmp_path / "e.img", "<f4").reshape(4, 5, 3)  # bsq float32 little-endian
        np.testing.assert_array_equal(raw, cube.data)
        hdr = parse_envi_header((tmp_path / "e.hdr").read_text(), "e")
        assert (
            hdr["interleave"] == "bsq" and hdr["data type"] == "4" and hdr["wavelength units"] == "Nanometers"
        )

    @pytest.mark.parametrize("suffix", FORMATS)
    def test_existing_output(self, tmp_path: Path, suffix: str) -> None:
        cube = full_cube()
        p = tmp_path / f"x{suffix}"
        write_cube(p, cube)
        before = {q.name: q.read_bytes() for q in tmp_path.iterdir()}
        with pytest.raises(OutputExistsError, match=r"already exists: pass --overwrite"):
            write_cube(p, Cube(np.zeros((1, 2, 2), np.float32)))
        assert {q.name: q.read_bytes() for q in tmp_path.iterdir()} == before
        write_cube(p, Cube(np.full((1, 2, 2), 7.0, np.float32)), overwrite=True)
        np.testing.assert_array_equal(read_cube(p).data, np.full((1, 2, 2), 7.0))

    def test_envi_partner_file_counts_as_existing(self, tmp_path: Path) -> None:
        (tmp_path / "e.img").write_bytes(b"keep")
        with pytest.raises(OutputExistsError, match=r"e\.img"):
            write_cube(tmp_path / "e.hdr", full_cube())
        assert not (tmp_path / "e.hdr").exists()

    def test_unknown_suffix_and_failed_write_leaves_nothing(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match=r"cannot write '\.png' files: expected one of \.npy"):
            write_cube(tmp_path / "x.png", full_cube())
        with pytest.raises(InputError, match="not a CRS"):
            write_cube(tmp_path / "x.tif", Cube(rng_cube(), geo=GeoInfo(crs="no such crs")))
        assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ dispatch & wavelengths
class TestDispatch:
    def test_missing_unknown_and_bad_arguments(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match="does not exist"):
            read_cube(tmp_path / "nope.mat")
        (tmp_path / "a.xyz").write_bytes(b"1")
        with pytest.raises(InputError, match=r"'\.xyz' files is unknown"):
            read_cube(tmp_path / "a.xyz")
        np.save(tmp_path / "a.npy", rng_cube())
        with pytest.raises(InputError, match="layout 'whc'"):
            read_cube(tmp_path / "a.npy", layout="whc")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="not a floating type"):
            read_cube(tmp_path / "a.npy", dtype=np.int32)  # type: ignore[arg-type]

    def test_memory_guard(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        np.save(tmp_path / "a.npy", np.zeros((10, 10, 10), np.float32))
        monkeypatch.setattr(cube_mod, "available_memory_bytes", lambda: 1000)
        with pytest.raises(InputError, match=r"would need 3\.9 KiB of memory, but only 1000 B is available"):
            read_cube(tmp_path / "a.npy")


class TestReadWavelengths:
    def test_formats(self, tmp_path: Path) -> None:
        (tmp_path / "a.txt").write_text("# comment\nwavelength_nm\n400\n410.5\n\n420\n")
        np.testing.assert_allclose(read_wavelengths(tmp_path / "a.txt"), [400, 410.5, 420])
        (tmp_path / "b.csv").write_text("0.4, 0.5,0.6\n")
        np.testing.assert_allclose(read_wavelengths(tmp_path / "b.csv"), [400, 500, 600])
        (tmp_path / "c.csv").write_text("400,\n500,\n")
        np.testing.assert_allclose(read_wavelengths(tmp_path / "c.csv"), [400, 500])

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match="does not exist"):
            read_wavelengths(tmp_path / "none.txt")
        (tmp_path / "t.csv").write_text("400,1\n500,2\n")
        with pytest.raises(InputError, match="line 1 has 2 values"):
            read_wavelengths(tmp_path / "t.csv")
        (tmp_path / "x.txt").write_text("400\nabc\n")
        with pytest.raises(InputError, match="line 2: 'abc' is not a number"):
            read_wavelengths(tmp_path / "x.txt")
        (tmp_path / "e.txt").write_text("# nothing\n")
        with pytest.raises(InputError, match="holds no values"):
            read_wavelengths(tmp_path / "e.txt")
        (tmp_path / "n.txt").write_text("400\nnan\n")
        with pytest.raises(InputError, match="NaN"):
            read_wavelengths(tmp_path / "n.txt")


# ----------------------------------------------------------------------------------------- real data
CAVE_SCENES = [
    "balloons",
    "beads",
    "cd",
    "chart_and_stuffed_toy",
    "clay",
    "egyptian_statue",
    "face",
    "feathers",
    "flowers",
    "watercolors",
]
ABU = [
    ("abu-airport-1", 205, 100, 100),
    ("abu-airport-2", 205, 100, 100),
    ("abu-airport-3", 205, 100, 100),
    ("abu-airport-4", 191, 100, 100),
    ("abu-beach-1", 188, 150, 150),
    ("abu-beach-2", 193, 100, 100),
    ("abu-beach-3", 188, 100, 100),
    ("abu-urban-1", 204, 100, 100),
    ("abu-urban-2", 207, 100, 100),
    ("abu-urban-3", 191, 100, 100),
    ("abu-urban-4", 205, 100, 100),
    ("abu-urban-5", 205, 100, 100),
    ("hydice", 162, 80, 100),
    ("sandiego", 189, 100, 100),
]
REAL_OK: list[tuple[str, dict[str, str], tuple[int, int, int]]] = [
    *[(f"cave/{s}_ms", {}, (31, 512, 512)) for s in CAVE_SCENES],
    *[(f"abu_aviris/{n}.mat", {}, (c, h, w)) for n, c, h, w in ABU],
    ("samson/Samson.mat", {"variable": "SamSon"}, (156, 95, 95)),
    ("pavia_muufl/pavia.mat", {}, (102, 100, 100)),
    ("pavia_muufl/MUUFL.mat", {}, (64, 100, 100)),
    ("dc_mall/data_dc50.mat", {}, (191, 50, 50)),
    ("dc_mall/matlab_dc5.tif", {}, (191, 100, 100)),
    ("fenix_envi/image.hdr", {}, (450, 38, 23)),
    ("fenix_envi/image.dat", {}, (450, 38, 23)),
    ("houston_pair/houston_dataset.mat", {"variable": "hyprImg"}, (48, 128, 128)),
    ("houston_pair/houston_dataset.mat", {"variable": "rgbImg"}, (3, 512, 512)),
]
REAL_ERR = [
    (
        "houston_pair/houston_dataset.mat",
        r"2 3-D arrays: hyprImg 128x128x48, rgbImg 512x512x3; choose one with variable=",
    ),
    ("samson/Samson.mat", r"2 3-D arrays: A 95x95x3, SamSon 95x95x156"),
    ("dc_mall/data_R.mat", r"no 3-D numeric array .*R 4x191 double"),
    ("cave", r"10 CAVE scene folders"),
    ("srf/nikon_d700.csv", r"'\.csv' files is unknown"),
]


@pytest.mark.parametrize(("rel", "kwargs", "shape"), REAL_OK, ids=[f"{r}{k}" for r, k, _ in REAL_OK])
def test_real_files_load(rel: str, kwargs: dict[str, str], shape: tuple[int, int, int]) -> None:
    c = read_cube(shared_data(rel), **kwargs)  # type: ignore[arg-type]
    assert c.data.shape == shape and c.data.dtype == np.float32
    c.check_finite(rel)
    assert float(c.data.max()) > float(c.data.min())


@pytest.mark.parametrize(("rel", "match"), REAL_ERR, ids=[r for r, _ in REAL_ERR])
def test_real_files_clear_errors(rel: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        read_cube(shared_data(rel))


def test_real_fenix_matches_independent_decoding() -> None:
    c = read_cube(shared_data("fenix_envi", "image.hdr"))
    raw = np.fromfile(shared_data("fenix_envi", "image.dat"), "<u2").reshape(450, 38, 23)  # per the README
    np.testing.assert_array_equal(c.data, raw.astype(np.float32))
    assert c.wavelengths is not None
    assert c.wavelengths[0] == pytest.approx(378.19) and c.wavelengths[-1] == pytest.approx(2503.73)
    assert c.geo is not None and c.geo.nodata == 0.0


def test_real_tif_and_mat_match_other_decoders() -> None:
    tif = read_cube(shared_data("dc_mall", "matlab_dc5.tif"))
    np.testing.assert_array_equal(
        tif.data, tifffile.imread(shared_data("dc_mall", "matlab_dc5.tif")).astype(np.float32)
    )
    hou = read_cube(shared_data("houston_pair", "houston_dataset.mat"), variable="hyprImg")
    ref = scipy.io.loadmat(shared_data("houston_pair", "houston_dataset.mat"))["hyprImg"]
    np.testing.assert_array_equal(hou.data, ref.transpose(2, 0, 1).astype(np.float32))
    with h5py.File(shared_data("pavia_muufl", "MUUFL.mat"), "r") as f:
        h5 = f["data"][()]  # h5py shows MATLAB's (H, W, C) as (C, W, H)
    np.testing.assert_array_equal(
        read_cube(shared_data("pavia_muufl", "MUUFL.mat")).data, h5.transpose(0, 2, 1)
    )


def test_real_cave_16bit_and_rgba_values() -> None:
    from PIL import Image

    cd = read_cube(shared_data("cave", "cd_ms"))
    band = np.asarray(Image.open(shared_data("cave", "cd_ms", "cd_ms", "cd_ms_15.png")))
    assert band.dtype == np.uint16
    np.testing.assert_array_equal(cd.data[14], band.astype(np.float32))
    wc = read_cube(shared_data("cave", "watercolors_ms"))
    assert float(wc.data.max()) <= 255.0
    rgba = np.asarray(
        Image.open(shared_data("cave", "watercolors_ms", "watercolors_ms", "watercolors_ms_01.png"))
    )
    np.testing.assert_array_equal(wc.data[0], rgba[..., 0].astype(np.float32))
