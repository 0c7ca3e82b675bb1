"""Tests of the evaluation figures (false colour, error maps, comparison PNGs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from csakd.errors import InputError
from csakd.figures import (
    default_pixels,
    error_map,
    false_colour,
    false_colour_bands,
    save_comparison_figure,
    save_spectra_figure,
)

WL31 = np.arange(400.0, 701.0, 10.0)


def _index_cube(bands: int, height: int = 4, width: int = 5) -> np.ndarray:
    """Band b is constant, equal to b."""
    return np.broadcast_to(np.arange(bands, dtype=np.float64)[:, None, None], (bands, height, width)).copy()


def _ramp_reference(bands: int, top: float) -> np.ndarray:
    """Every band holds the values 0..top evenly spread, so percentiles 0 and 100 are 0 and top."""
    ramp = np.linspace(0.0, top, 20).reshape(4, 5)
    return np.broadcast_to(ramp, (bands, 4, 5)).copy()


def _scene(bands: int = 8, size: int = 24, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    spectra = np.linspace(0.2, 1.0, bands)[:, None, None]
    truth = spectra * (0.5 + 0.4 * np.sin(6 * xx) * np.cos(4 * yy))[None]
    fused = {
        "good": truth + 0.01 * rng.standard_normal(truth.shape),
        "poor": truth + 0.05 * rng.standard_normal(truth.shape),
    }
    return truth, fused


# --- false colour ----------------------------------------------------------------------------------------


def test_false_colour_picks_nearest_bands() -> None:
    cube = _index_cube(31)
    out = false_colour(cube, WL31, reference=_ramp_reference(31, 30.0), percentiles=(0.0, 100.0))
    assert out.shape == (4, 5, 3)
    assert out.dtype == np.float32
    # 640 nm -> band 24, 550 nm -> band 15, 460 nm -> band 6; stretch 0..30.
    np.testing.assert_allclose(out[0, 0], [24 / 30, 15 / 30, 6 / 30], rtol=1e-6)
    assert false_colour_bands(31, WL31) == (24, 15, 6)


def test_false_colour_uneven_wavelengths_and_custom_targets() -> None:
    wl = np.array([450.0, 520.0, 600.0, 700.0])
    assert false_colour_bands(4, wl) == (2, 1, 0)
    assert false_colour_bands(4, wl, rgb_nm=(710.0, 600.0, 400.0)) == (3, 2, 0)


def test_false_colour_without_wavelengths_uses_band_fractions() -> None:
    assert false_colour_bands(9, None) == (6, 4, 2)
    assert false_colour_bands(1, None) == (0, 0, 0)
    out = false_colour(_index_cube(9), None, reference=_ramp_reference(9, 8.0), percentiles=(0.0, 100.0))
    np.testing.assert_allclose(out[2, 3], [6 / 8, 4 / 8, 2 / 8], rtol=1e-6)


def test_false_colour_shared_stretch() -> None:
    truth, _ = _scene()
    own = false_colour(truth, None)
    half = truth * 0.5
    # Stretched on itself, a scaled copy looks the same; on the truth's stretch it is darker.
    np.testing.assert_allclose(false_colour(half, None), own, atol=1e-6)
    assert false_colour(half, None, reference=truth).mean() < own.mean() - 0.2
    np.testing.assert_allclose(false_colour(truth, None, reference=truth), own)
    assert 0.0 <= own.min() and own.max() <= 1.0


def test_false_colour_percentile_clipping() -> None:
    ref = _ramp_reference(3, 99.0)
    cube = np.full((3, 2, 2), 200.0)
    out = false_colour(cube, None, reference=ref)
    np.testing.assert_array_equal(out, 1.0)
    out = false_colour(-cube, None, reference=ref)
    np.testing.assert_array_equal(out, 0.0)


def test_false_colour_constant_band_is_mid_grey() -> None:
    out = false_colour(_index_cube(5), None)
    np.testing.assert_allclose(out, 0.5)


def test_false_colour_errors() -> None:
    with pytest.raises(InputError, match=r"\(C, H, W\)"):
        false_colour(np.zeros((4, 4)), None)
    with pytest.raises(InputError, match="one value per band"):
        false_colour(np.zeros((5, 4, 4)), WL31)
    with pytest.raises(InputError, match="reference has 4 bands"):
        false_colour(np.zeros((5, 4, 4)), None, reference=np.zeros((4, 4, 4)))
    with pytest.raises(InputError, match="percentiles"):
        false_colour(np.zeros((5, 4, 4)), None, percentiles=(99.0, 1.0))


# --- error maps and pixels -------------------------------------------------------------------------------


def test_error_map_values() -> None:
    truth = np.ones((4, 3, 3))
    np.testing.assert_allclose(error_map(truth, 2 * truth, "rmse"), 1.0)
    np.testing.assert_allclose(error_map(truth, 2 * truth, "sam"), 0.0, atol=1e-5)
    a = np.zeros((2, 1, 1))
    b = np.zeros((2, 1, 1))
    a[0] = 1.0
    b[1] = 3.0
    np.testing.assert_allclose(error_map(a, b, "sam"), 90.0)
    np.testing.assert_allclose(error_map(a, b, "rmse"), np.sqrt((1 + 9) / 2))
    with pytest.raises(InputError, match="must match"):
        error_map(truth, truth[:, :2])
    with pytest.raises(InputError, match="'rmse' or 'sam'"):
        error_map(truth, truth, "mae")  # type: ignore[arg-type]


def test_default_pixels_spread_and_deterministic() -> None:
    pixels = default_pixels(64, 48, 4)
    assert pixels == default_pixels(64, 48, 4)
    assert len(set(pixels)) == 4
    assert all(0 <= r < 64 and 0 <= c < 48 for r, c in pixels)
    rows = {r for r, _ in pixels}
    cols = {c for _, c in pixels}
    assert len(rows) >= 2 and len(cols) >= 2
    assert len(default_pixels(1, 1, 4)) == 1


# --- figures ---------------------------------------------------------------------------------------------


def test_save_comparison_figure(tmp_path: Path) -> None:
    truth, fused = _scene()
    wl = np.linspace(420.0, 680.0, truth.shape[0])
    out = save_comparison_figure(tmp_path / "sub" / "cmp.png", truth, fused, wl, title="test scene")
    assert out == tmp_path / "sub" / "cmp.png"
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
    # Three image columns of ~2.5 in at 110 dpi, plus the error row and the spectra row.
    assert 600 < width < 3000
    assert 600 < height < 3000
    pixels = np.asarray(Image.open(out).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10  # not a blank canvas


def test_save_comparison_figure_options(tmp_path: Path) -> None:
    truth, fused = _scene(bands=5, size=16)
    out = save_comparison_figure(
        tmp_path / "sam.png", truth, {"only": fused["good"]}, None, pixels=[(0, 0), (15, 15)], error="sam"
    )
    with Image.open(out) as image:
        assert image.size[0] > 300 and image.size[1] > 300


def test_save_comparison_figure_rejects_before_writing(tmp_path: Path) -> None:
    truth, fused = _scene()
    target = tmp_path / "bad.png"
    with pytest.raises(InputError, match="must match"):
        save_comparison_figure(target, truth, {"x": truth[:, :10]}, None)
    with pytest.raises(InputError, match="outside"):
        save_comparison_figure(target, truth, fused, None, pixels=[(0, 99)])
    with pytest.raises(InputError, match="empty"):
        save_comparison_figure(target, truth, {}, None)
    with pytest.raises(InputError, match="error must be"):
        save_comparison_figure(target, truth, fused, None, error="mae")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"\.png"):
        save_comparison_figure(tmp_path / "bad.jpg", truth, fused, None)
    assert not any(tmp_path.iterdir())


def test_save_spectra_figure(tmp_path: Path) -> None:
    truth, fused = _scene()
    out = save_spectra_figure(tmp_path / "spectra.png", truth, fused, None, title="spectra")
    with Image.open(out) as image:
        width, height = image.size
    assert width > 500 and height > 200
    out = save_spectra_figure(tmp_path / "truth_only.png", truth, {}, None, pixels=[(1, 2)])
    assert out.exists()


def test_does_not_touch_global_matplotlib_state(tmp_path: Path) -> None:
    import sys

    import matplotlib

    backend = matplotlib.get_backend()
    truth, fused = _scene(bands=3, size=8)
    save_spectra_figure(tmp_path / "s.png", truth, fused, None)
    assert matplotlib.get_backend() == backend
    if "matplotlib.pyplot" in sys.modules:  # imported by something else: no figure of ours is left open
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
