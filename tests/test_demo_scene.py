"""Tests of the embedded demo scene (real photo structure + real reflectance spectra)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from csakd.demo_scene import (
    SPECTRAL_RANGE_NM,
    default_wavelengths,
    demo_photo,
    demo_response,
    demo_scene,
    srgb_to_linear,
)
from csakd.errors import InputError


@pytest.fixture(scope="module")
def scene128() -> tuple[np.ndarray, np.ndarray]:
    return demo_scene(128)


def _gradient_energy(cube: np.ndarray) -> float:
    return float((np.diff(cube, axis=1) ** 2).mean() + (np.diff(cube, axis=2) ** 2).mean())


def test_shape_range_and_wavelengths(scene128: tuple[np.ndarray, np.ndarray]) -> None:
    cube, wl = scene128
    assert cube.shape == (31, 128, 128)
    assert cube.dtype == np.float32
    assert wl.dtype == np.float64
    np.testing.assert_allclose(wl, np.arange(400.0, 701.0, 10.0))
    np.testing.assert_allclose(wl, default_wavelengths())
    assert np.all(np.isfinite(cube))
    assert cube.min() >= 0.0
    assert cube.max() == pytest.approx(1.0)
    # Not an almost-empty image: a fair share of the pixels is well above zero.
    assert np.mean(cube.max(axis=0) > 0.05) > 0.3


def test_deterministic_and_seed_changes_only_the_metamers(scene128: tuple[np.ndarray, np.ndarray]) -> None:
    cube, wl = scene128
    again, wl_again = demo_scene(128)
    np.testing.assert_array_equal(cube, again)
    np.testing.assert_array_equal(wl, wl_again)
    other, _ = demo_scene(128, seed=1)
    assert not np.array_equal(cube, other)
    # Same photo underneath: the two seeds' images are strongly correlated.
    assert np.corrcoef(cube.mean(axis=0).ravel(), other.mean(axis=0).ravel())[0, 1] > 0.95


@pytest.mark.parametrize("size", [8, 64, 96])
def test_other_sizes(size: int) -> None:
    cube, _ = demo_scene(size)
    assert cube.shape == (31, size, size)
    assert cube.max() == pytest.approx(1.0)
    assert cube.min() >= 0.0


def test_custom_wavelengths() -> None:
    wl_in = np.array([420.0, 470.0, 530.0, 590.0, 650.0, 700.0, 760.0])
    cube, wl = demo_scene(32, wl_in)
    assert cube.shape == (7, 32, 32)
    np.testing.assert_array_equal(wl, wl_in)
    assert wl is not wl_in  # a copy, not the caller's array


def test_has_spatial_edges(scene128: tuple[np.ndarray, np.ndarray]) -> None:
    cube, _ = scene128
    smoothed = gaussian_filter(cube, sigma=(0, 2, 2))
    assert _gradient_energy(cube) > 4.0 * _gradient_energy(smoothed)


def test_spectra_are_smooth_and_not_noise(scene128: tuple[np.ndarray, np.ndarray]) -> None:
    cube, _ = scene128
    second = np.abs(np.diff(cube, n=2, axis=0)).mean()
    assert second < 0.05 * cube.mean()
    # The same statistic on white noise of the same mean is far larger: the test can fail.
    noise = np.random.default_rng(0).random(cube.shape) * 2 * cube.mean()
    assert np.abs(np.diff(noise, n=2, axis=0)).mean() > 10 * second


def test_spectrally_rich(scene128: tuple[np.ndarray, np.ndarray]) -> None:
    cube, _ = scene128
    singular = np.linalg.svd(cube.reshape(cube.shape[0], -1), compute_uv=False)
    relative = singular / singular[0]
    # More than 3 (RGB-like) significant components, but a decaying spectrum like real scenes.
    assert np.sum(relative > 0.01) >= 5
    assert relative[1] < 0.8


def test_rendered_rgb_matches_the_photo(scene128: tuple[np.ndarray, np.ndarray]) -> None:
    cube, wl = scene128
    response, names = demo_response(wl)
    rgb = np.einsum("bc,chw->bhw", response, cube)
    photo = srgb_to_linear(demo_photo(128))
    for band in range(3):
        r = np.corrcoef(rgb[band].ravel(), photo[band].ravel())[0, 1]
        assert r > 0.9, f"{names[band]}: correlation {r:.3f}"


def test_demo_photo() -> None:
    photo = demo_photo(64)
    assert photo.shape == (3, 64, 64)
    assert photo.dtype == np.float32
    assert 0.0 <= photo.min() and photo.max() <= 1.0
    photo[0, 0, 0] = -5.0  # the cached original must not change
    assert demo_photo(64)[0, 0, 0] >= 0.0


def test_demo_response_is_a_camera() -> None:
    wl = default_wavelengths()
    response, names = demo_response(wl)
    assert names == ("R", "G", "B")
    assert response.shape == (3, wl.size)
    assert response.min() >= 0.0
    np.testing.assert_allclose(response.sum(axis=1), 1.0)
    peaks = wl[np.argmax(response, axis=1)]
    assert peaks[0] > peaks[1] > peaks[2]  # red at long, blue at short wavelengths
    assert 580 <= peaks[0] <= 640 and 500 <= peaks[1] <= 560 and 430 <= peaks[2] <= 490


def test_demo_response_band_averages() -> None:
    # Three wide bands see more of the curves than three narrow samples would; each still sums to 1.
    response, _ = demo_response(np.array([450.0, 550.0, 650.0]))
    np.testing.assert_allclose(response.sum(axis=1), 1.0)
    assert np.argmax(response[0]) == 2 and np.argmax(response[1]) == 1 and np.argmax(response[2]) == 0


@pytest.mark.parametrize(
    "wavelengths",
    [
        np.array([350.0, 500.0, 600.0]),
        np.array([500.0, 600.0, 900.0]),
        np.array([500.0, 450.0, 600.0]),
        np.array([[500.0, 600.0]]),
        np.array([]),
        np.array([500.0, np.nan]),
    ],
)
def test_bad_wavelengths(wavelengths: np.ndarray) -> None:
    with pytest.raises(InputError, match="wavelengths"):
        demo_scene(16, wavelengths)
    with pytest.raises(InputError, match="wavelengths"):
        demo_response(wavelengths)


def test_response_outside_camera_sensitivity() -> None:
    assert SPECTRAL_RANGE_NM == (380.0, 780.0)
    # The sensor's IR-cut filter leaves only measurement noise beyond ~720 nm.
    with pytest.raises(InputError, match="cover under 1%"):
        demo_response(np.array([740.0, 760.0, 780.0]))
    with pytest.raises(InputError, match="R/G/B"):
        demo_response(np.array([550.0]))


@pytest.mark.parametrize("size", [0, 4, 5000, 12.5, True])
def test_bad_size(size: object) -> None:
    with pytest.raises(InputError, match="size"):
        demo_scene(size)  # type: ignore[arg-type]


def test_bad_seed() -> None:
    with pytest.raises(InputError, match="seed"):
        demo_scene(16, seed=1.5)  # type: ignore[arg-type]
