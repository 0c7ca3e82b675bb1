"""Geospatial inputs: footprint checks (CRS, pixel ratio, origin) and nodata handling in the three file paths."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from csakd.data import Cube, read_cube, write_cube
from csakd.data.cube import GeoInfo
from csakd.errors import InputError
from csakd.inference.fuse import fuse_files
from csakd.inference.geo import apply_nodata, check_footprint, fill_nodata, nodata_mask
from csakd.inference.tiled import fuse_files_tiled
from csakd.models import create_model
from csakd.normalization import Normalization

rasterio = pytest.importorskip("rasterio")

BANDS, MSI_BANDS = 8, 3
PX = 7.5  # HR pixel size, metres
X0, Y0 = 500000.0, 4000000.0
WAVELENGTHS = np.linspace(450.0, 800.0, BANDS)


pytestmark = pytest.mark.usefixtures("one_thread")


def _wkt(epsg: int) -> str:
    return str(rasterio.crs.CRS.from_epsg(epsg).to_wkt())


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    from csakd.checkpoint import model_payload, save_payload

    torch.manual_seed(0)
    net = create_model("student", bands=BANDS, msi_bands=MSI_BANDS, nf=8, gc=4, blocks=(1, 1, 1, 1))
    path = tmp_path_factory.mktemp("geo_model") / "m.pt"
    save_payload(path, model_payload(net, role="student", normalization=Normalization("per_image")))
    return path, int(net.config.scale)


def _geo(pixel: float, *, epsg: int = 32633, dx: float = 0.0, nodata: float | None = None) -> GeoInfo:
    return GeoInfo(crs=_wkt(epsg), transform=(pixel, 0.0, X0 + dx, 0.0, -pixel, Y0), nodata=nodata)


def _data(scale: int, seed: int = 0, h: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lr = rng.uniform(0.1, 1.0, (BANDS, h, h)).astype(np.float32)
    msi = rng.uniform(0.1, 1.0, (MSI_BANDS, h * scale, h * scale)).astype(np.float32)
    return lr, msi


def _write(tmp: Path, name: str, data: np.ndarray, geo: GeoInfo | None, wl: np.ndarray | None = None) -> Path:
    return write_cube(tmp / name, Cube(data, wavelengths=wl, geo=geo))


def _fusers(model: tuple[Path, int]) -> dict[str, Callable[[Path, Path, Path], Path]]:
    ckpt, _ = model
    return {
        "whole": lambda lr, msi, out: fuse_files(lr, msi, ckpt, out, device="cpu"),
        "tiled": lambda lr, msi, out: fuse_files_tiled(lr, msi, ckpt, out, tile=16, overlap=8, device="cpu"),
    }


# -------------------------------------------------------------------------------------------- footprints


@pytest.mark.parametrize("how", ["whole", "tiled"])
def test_matching_footprints_carry_georeferencing(model: tuple[Path, int], tmp_path: Path, how: str) -> None:
    _, s = model
    lr, msi = _data(s)
    lr_p = _write(tmp_path, "lr.tif", lr, _geo(PX * s), WAVELENGTHS)
    msi_p = _write(tmp_path, "msi.tif", msi, _geo(PX, nodata=-9999.0))
    out = _fusers(model)[how](lr_p, msi_p, tmp_path / "out.tif")
    cube = read_cube(out)
    assert cube.data.shape == (BANDS, 16 * s, 16 * s)
    assert np.all(np.isfinite(cube.data))
    assert cube.geo is not None
    assert rasterio.crs.CRS.from_user_input(cube.geo.crs) == rasterio.crs.CRS.from_epsg(32633)
    assert cube.geo.transform == pytest.approx((PX, 0.0, X0, 0.0, -PX, Y0))
    assert cube.geo.nodata == -9999.0
    assert cube.wavelengths is not None
    np.testing.assert_allclose(np.asarray(cube.wavelengths, dtype=np.float64), WAVELENGTHS)


@pytest.mark.parametrize(
    ("lr_geo", "message"),
    [
        (lambda s: _geo(PX * s, epsg=32634), "different coordinate reference systems"),
        (lambda s: _geo(PX * s * 2), "a ratio of"),
        (lambda s: _geo(PX * s, dx=5 * PX), r"origins .* differ by 37\.5 m \(5 HR pixels"),
    ],
    ids=["crs", "ratio", "origin"],
)
@pytest.mark.parametrize("how", ["whole", "tiled"])
def test_mismatched_footprints_are_refused(
    model: tuple[Path, int], tmp_path: Path, lr_geo: Callable[[int], GeoInfo], message: str, how: str
) -> None:
    _, s = model
    lr, msi = _data(s)
    lr_p = _write(tmp_path, "lr.tif", lr, lr_geo(s))
    msi_p = _write(tmp_path, "msi.tif", msi, _geo(PX))
    out = tmp_path / "out.tif"
    with pytest.raises(InputError, match=message):
        _fusers(model)[how](lr_p, msi_p, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.tif", "msi.tif"]


def test_check_footprint_messages() -> None:
    wkt = _wkt(32633)
    hr = GeoInfo(crs=wkt, transform=(7.5, 0, X0, 0, -7.5, Y0))
    with pytest.raises(InputError, match=r"pixels are 30 m and the HR-MSI's 7\.5 m: a ratio of 4, but the model fuses "
                                         r"at x2"):
        check_footprint(GeoInfo(crs=wkt, transform=(30, 0, X0, 0, -30, Y0)), hr, (4, 4), (8, 8), 2)
    # whitespace-only differences in the WKT are the same CRS; a sub-HR-pixel origin offset is accepted
    lr = GeoInfo(crs=",\n  ".join(wkt.split(",")), transform=(15, 0, X0 + 7.0, 0, -15, Y0 - 3.0))
    check_footprint(lr, hr, (4, 4), (8, 8), 2)
    # a flipped axis
    with pytest.raises(InputError, match="rotated or flipped"):
        check_footprint(GeoInfo(crs=wkt, transform=(15, 0, X0, 0, 15, Y0)), hr, (4, 4), (8, 8), 2)
    # a ratio within tolerance per pixel, but accumulating over the image: the footprints differ
    with pytest.raises(InputError, match="footprints differ"):
        check_footprint(GeoInfo(crs=wkt, transform=(15.01, 0, X0, 0, -15.01, Y0)), hr, (4000, 4000), (8000, 8000), 2)


def test_one_georeferenced_input_warns(
    model: tuple[Path, int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, s = model
    lr, msi = _data(s)
    lr_p = _write(tmp_path, "lr.tif", lr, None)
    msi_p = _write(tmp_path, "msi.tif", msi, _geo(PX))
    with caplog.at_level(logging.WARNING, logger="csakd.inference.geo"):
        out = fuse_files(lr_p, msi_p, model[0], tmp_path / "out.tif", device="cpu")
    assert "footprints cannot be checked" in caplog.text
    geo = read_cube(out).geo
    assert geo is not None and geo.transform == pytest.approx((PX, 0.0, X0, 0.0, -PX, Y0))


# ------------------------------------------------------------------------------------------------ nodata


def test_nodata_helpers() -> None:
    data = np.ones((2, 3, 4), np.float32)
    data[1, 0, 0] = -9999.0
    data[0, 2, 3] = np.nan
    assert nodata_mask(data, None).sum() == 0
    assert np.argwhere(nodata_mask(data, -9999.0)).tolist() == [[0, 0]]
    assert np.argwhere(nodata_mask(data, math.nan)).tolist() == [[2, 3]]
    data[0, 2, 3] = 3.0
    filled = fill_nodata(data.copy(), nodata_mask(data, -9999.0))
    assert filled[1, 0, 0] == 1.0 and filled[0, 0, 0] == pytest.approx(1.0 + 2.0 / 11)  # the valid pixels' mean
    out = apply_nodata(np.zeros((2, 3, 4), np.float32), nodata_mask(data, -9999.0), -1.0)
    assert out[:, 0, 0].tolist() == [-1.0, -1.0] and out.sum() == -2.0


@pytest.mark.parametrize("how", ["whole", "tiled"])
def test_msi_nodata_is_nodata_in_the_output(model: tuple[Path, int], tmp_path: Path, how: str) -> None:
    _, s = model
    lr, msi = _data(s, seed=1)
    hole = (slice(12, 20), slice(14, 19))  # across a core boundary and its blending ramp when tiled
    msi_nd = msi.copy()
    msi_nd[1][hole] = -9999.0  # one band is enough
    lr_p = _write(tmp_path, "lr.tif", lr, _geo(PX * s))
    out = _fusers(model)[how](lr_p, _write(tmp_path, "msi.tif", msi_nd, _geo(PX, nodata=-9999.0)),
                              tmp_path / "out.tif")
    fused = read_cube(out)
    assert fused.geo is not None and fused.geo.nodata == -9999.0
    mask = np.zeros(msi.shape[1:], bool)
    mask[hole] = True
    assert np.all(fused.data[:, mask] == -9999.0)
    assert np.all(np.isfinite(fused.data[:, ~mask])) and np.all(np.abs(fused.data[:, ~mask]) < 10)
    # the same as fusing an image whose hole holds the band means (the documented fill), without nodata
    msi_ref = msi.copy()
    for b in range(MSI_BANDS):
        msi_ref[b][mask] = msi_nd[b][~mask].mean(dtype=np.float64)
    ref = _fusers(model)[how](lr_p, _write(tmp_path, "msi_ref.tif", msi_ref, _geo(PX)), tmp_path / "ref.tif")
    np.testing.assert_allclose(fused.data[:, ~mask], read_cube(ref).data[:, ~mask], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("how", ["whole", "tiled"])
def test_lr_nodata_masks_its_hr_block_with_nan(model: tuple[Path, int], tmp_path: Path, how: str) -> None:
    _, s = model
    lr, msi = _data(s, seed=2)
    lr[:, 4, 3] = 65535.0  # would dominate the per-image normalisation if it were not filled
    lr_p = _write(tmp_path, "lr.tif", lr, _geo(PX * s, nodata=65535.0))
    out = _fusers(model)[how](lr_p, _write(tmp_path, "msi.tif", msi, _geo(PX)), tmp_path / "out.tif")
    fused = read_cube(out)
    assert fused.geo is not None and fused.geo.nodata is not None and math.isnan(fused.geo.nodata)
    mask = np.zeros(msi.shape[1:], bool)
    mask[4 * s:5 * s, 3 * s:4 * s] = True
    assert np.all(np.isnan(fused.data[:, mask]))
    assert np.all(np.isfinite(fused.data[:, ~mask])) and float(np.max(fused.data[:, ~mask])) < 10


def test_onnx_path_checks_footprints_and_nodata(model: tuple[Path, int], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from csakd.inference.export import export_onnx
    from csakd.inference.onnx_runtime import fuse_files_onnx

    ckpt, s = model
    onnx_path = tmp_path / "m.onnx"
    export_onnx(ckpt, onnx_path, check=False)
    lr, msi = _data(s, seed=3)
    msi[:, 0, 0] = -1.0
    lr_p = _write(tmp_path, "lr.tif", lr, _geo(PX * s))
    msi_p = _write(tmp_path, "msi.tif", msi, _geo(PX, nodata=-1.0))
    out = fuse_files_onnx(lr_p, msi_p, onnx_path, tmp_path / "out.tif", threads=1)
    fused = read_cube(out)
    assert fused.geo is not None and fused.geo.nodata == -1.0
    assert np.all(fused.data[:, 0, 0] == -1.0) and np.all(fused.data[:, 1:, :] != -1.0)
    bad = _write(tmp_path, "lr_shifted.tif", lr, _geo(PX * s, dx=5 * PX))
    with pytest.raises(InputError, match="origins"):
        fuse_files_onnx(bad, msi_p, onnx_path, tmp_path / "out2.tif")
    assert not (tmp_path / "out2.tif").exists()
