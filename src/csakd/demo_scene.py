"""The default scene of ``csakd demo``: a hyperspectral cube built from real data shipped inside packages.

No network and no data folder are needed: everything comes from files inside the installed runtime packages.

Sources
-------
* **Image structure**: matplotlib's bundled sample photograph ``grace_hopper.jpg`` (512 x 600 pixels, sRGB),
  read through ``matplotlib.cbook.get_sample_data``. The central 512 x 512 square is resized to
  ``size x size`` with Pillow's Lanczos filter (:func:`demo_photo`).
* **Spectra**: 313 measured reflectance spectra shipped with colour-science, all on 380-780 nm at 5 nm:
  the 190 patches of the RAW to ACES training set
  (``colour.characterisation.read_training_data_rawtoaces_v1``), the 99 CIE 2017 colour-fidelity test
  colour samples (``colour.quality.cfi2017.load_TCS_CIE2017``) and the 24 ColorChecker patches measured
  by Ohta (``colour.SDS_COLOURCHECKERS["ColorChecker N Ohta"]``).
  Negative values (numerical noise in the files) are clipped to 0.
* **Colour rendering** (to match the photo): CIE 1931 2 degree colour matching functions and illuminant D65
  (``colour.MSDS_CMFS``, ``colour.SDS_ILLUMINANTS``), then the sRGB matrix ``XYZ -> linear RGB``; a perfect
  white reflector renders to luminance 1.
* **Camera response** (:func:`demo_response`): the measured spectral sensitivities of a Nikon D5100
  (``colour.MSDS_CAMERA_SENSITIVITIES["Nikon 5100 (NPL)"]``, National Physical Laboratory measurement).

Construction (:func:`demo_scene`)
---------------------------------
1. The photo is decoded from sRGB to linear RGB ``p`` (N pixels x 3) and each spectrum ``k`` of the library
   is rendered to linear sRGB ``e_k`` under D65.
2. Brightness-free chromaticities are compared: ``c(v) = (v + eps) / (Y(v) + eps)`` with ``Y`` the luminance
   and ``eps = 0.02`` (so dark pixels read as neutral). The pixels' chromaticities are smoothed with a
   Gaussian of 1 pixel so that neighbouring pixels prefer the same materials.
3. Each pixel keeps the 32 spectra of nearest chromaticity and scores them with the logit
   ``-|c_pixel - c_k|^2 / 0.01 + f_k(x, y)``, where ``f_k``
   is a smooth random field (standard normal values on a 4 x 4 grid, bilinearly upsampled, amplitude 1.5,
   drawn from ``numpy.random.default_rng(seed)``). The field makes different regions pick different
   metamers of the same colour, so the spectra are not a fixed function of the RGB values; ``seed`` only
   changes this field.
4. The 8 best-scoring spectra of each pixel get softmax weights, scaled so that the mixture has the pixel's
   luminance: the prior abundances ``w0`` (N x 8).
5. The abundances are refined to reproduce the pixel's colour: ``min_w |E^T w - p|^2 + lam |w - w0|^2``
   subject to ``w >= 0`` (``E``: the 8 spectra's linear sRGB; ``lam = 0.01``), solved per pixel by
   60 steps of accelerated projected gradient (FISTA), vectorised over pixels.
6. The cube is ``X = sum_k w_k s_k`` with the spectra ``s_k`` averaged over each requested band (band edges
   halfway between neighbouring band centres), then divided by its maximum, so that it lies in [0, 1] with
   maximum 1. It is a reflectance cube up to one global scale, like CAVE's.

The cube therefore has the photo's edges and textures, and every pixel's spectrum is a non-negative
combination of a few measured reflectances (smooth across wavelength, physically plausible), and its colour
under D65 reproduces the photo's.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from numpy.typing import NDArray

from csakd.errors import InputError

__all__ = [
    "CAMERA",
    "PHOTO",
    "SPECTRAL_RANGE_NM",
    "default_wavelengths",
    "demo_photo",
    "demo_response",
    "demo_scene",
    "srgb_to_linear",
]

logger = logging.getLogger(__name__)

PHOTO = "grace_hopper.jpg"
"""The matplotlib sample photograph that gives the scene its spatial structure."""

CAMERA = "Nikon 5100 (NPL)"
"""The colour-science camera whose measured sensitivities :func:`demo_response` returns."""

SPECTRAL_RANGE_NM: tuple[float, float] = (380.0, 780.0)
"""Band centres the embedded spectra cover (nm)."""

_GRID = np.arange(380.0, 781.0, 5.0)  # the 5 nm grid of every shipped spectrum used here
_FINE = np.arange(380.0, 781.0, 1.0)  # 1 nm grid for band averaging
_EPS_CHROMA = 0.02
_TAU = 0.01
_FIELD_AMPLITUDE = 1.5
_FIELD_GRID = 4
_TOP_K = 8
_CANDIDATES = 32
_LAMBDA = 0.01
_ITERATIONS = 60
_MAX_SIZE = 4096


def default_wavelengths() -> NDArray[np.float64]:
    """The default band centres of the demo scene: 400 to 700 nm in steps of 10 nm (31 bands, like CAVE)."""
    return np.arange(400.0, 701.0, 10.0)


# ----------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise InputError(f"size must be an integer number of pixels, got {size!r}")
    if not 8 <= int(size) <= _MAX_SIZE:
        raise InputError(f"size must be between 8 and {_MAX_SIZE} pixels, got {size}")
    return int(size)


def _check_wavelengths(wavelengths: np.ndarray | None) -> NDArray[np.float64]:
    if wavelengths is None:
        return default_wavelengths()
    wl = np.asarray(wavelengths, dtype=np.float64)
    if wl.ndim != 1 or wl.size == 0:
        raise InputError(
            f"wavelengths must be a non-empty 1-D array of band centres in nm, got shape {wl.shape}"
        )
    if not np.all(np.isfinite(wl)):
        raise InputError("wavelengths must be finite numbers (nm), got NaN or infinity")
    if wl.size > 1 and not np.all(np.diff(wl) > 0):
        raise InputError("wavelengths must be strictly increasing band centres (nm)")
    lo, hi = SPECTRAL_RANGE_NM
    if wl[0] < lo or wl[-1] > hi:
        raise InputError(
            f"wavelengths span {wl[0]:g}-{wl[-1]:g} nm; the embedded spectra cover {lo:g}-{hi:g} nm only "
            "(band centres must lie inside that range)"
        )
    return wl


# ----------------------------------------------------------------------------------------------------------
# Band averaging
# ----------------------------------------------------------------------------------------------------------


def _band_masks(wavelengths: NDArray[np.float64]) -> list[NDArray[np.bool_]]:
    """For each band, which samples of the 1 nm grid it covers (halfway to its neighbours).

    The outer bands reach as far outwards as inwards; a single band covers only its centre.
    """
    if wavelengths.size == 1:
        return [np.abs(_FINE - wavelengths[0]) < 0.5]
    mids = 0.5 * (wavelengths[1:] + wavelengths[:-1])
    lower = np.concatenate([[wavelengths[0] - (mids[0] - wavelengths[0])], mids])
    upper = np.concatenate([mids, [wavelengths[-1] + (wavelengths[-1] - mids[-1])]])
    return [(_FINE >= lo) & (_FINE < hi) for lo, hi in zip(lower, upper, strict=True)]


def _band_average_matrix(wavelengths: NDArray[np.float64]) -> NDArray[np.float64]:
    """Matrix (C, 81) mapping a spectrum on the 5 nm grid to its mean over each band.

    A band extends halfway to its neighbours (the outer bands as far out as inward); the spectrum is
    linearly interpolated to 1 nm and averaged over the band, clipped to 380-780 nm. A band narrower than
    the 1 nm grid uses the interpolated value at its centre.
    """

    # Linear interpolation from the 5 nm grid to any points, as a matrix.
    def interp_matrix(points: NDArray[np.float64]) -> NDArray[np.float64]:
        eye = np.eye(_GRID.size)
        return np.stack([np.interp(points, _GRID, eye[j]) for j in range(_GRID.size)], axis=1)

    fine = interp_matrix(_FINE)  # (401, 81)
    centre = interp_matrix(wavelengths)  # (C, 81)
    rows = []
    for i, inside in enumerate(_band_masks(wavelengths)):
        rows.append(fine[inside].mean(axis=0) if inside.sum() >= 2 else centre[i])
    return np.stack(rows)


# ----------------------------------------------------------------------------------------------------------
# Shipped data (cached: read once per process)
# ----------------------------------------------------------------------------------------------------------


def _on_grid(values: np.ndarray, wavelengths: np.ndarray) -> NDArray[np.float64]:
    """Resample columns of ``values`` (len(wavelengths), n) to the 5 nm grid (linear, constant outside)."""
    values = np.asarray(values, dtype=np.float64)
    wavelengths = np.asarray(wavelengths, dtype=np.float64)
    return np.stack([np.interp(_GRID, wavelengths, values[:, j]) for j in range(values.shape[1])], axis=1)


@functools.lru_cache(maxsize=1)
def _spectral_library() -> NDArray[np.float64]:
    """The 313 measured reflectances, (313, 81) on the 5 nm grid, negatives clipped to 0."""
    import colour
    from colour.characterisation import read_training_data_rawtoaces_v1
    from colour.quality.cfi2017 import load_TCS_CIE2017

    parts = []
    raw = read_training_data_rawtoaces_v1()
    parts.append(_on_grid(raw.values, raw.wavelengths))
    tcs = load_TCS_CIE2017(colour.SpectralShape(380, 780, 5))
    parts.append(_on_grid(tcs.values, tcs.wavelengths))
    checker = colour.SDS_COLOURCHECKERS["ColorChecker N Ohta"]
    parts.append(
        np.stack([_on_grid(sd.values[:, None], sd.wavelengths)[:, 0] for sd in checker.values()], axis=1)
    )
    library = np.clip(np.concatenate(parts, axis=1).T, 0.0, None)
    library.setflags(write=False)
    return library


@functools.lru_cache(maxsize=1)
def _srgb_matrix() -> NDArray[np.float64]:
    """(3, 81): reflectance on the 5 nm grid -> linear sRGB under D65 (white reflector: luminance 1)."""
    import colour

    cmfs = colour.MSDS_CMFS["CIE 1931 2 Degree Standard Observer"]
    d65 = colour.SDS_ILLUMINANTS["D65"]
    xyz_bar = _on_grid(cmfs.values, cmfs.wavelengths)  # (81, 3)
    illuminant = _on_grid(d65.values[:, None], d65.wavelengths)[:, 0]
    weights = xyz_bar * illuminant[:, None]
    weights /= weights[:, 1].sum()
    to_rgb = np.asarray(colour.RGB_COLOURSPACES["sRGB"].matrix_XYZ_to_RGB, dtype=np.float64)
    matrix = to_rgb @ weights.T
    matrix.setflags(write=False)
    return matrix


@functools.lru_cache(maxsize=1)
def _camera_on_grid() -> NDArray[np.float64]:
    """The Nikon D5100 sensitivities, (3, 81) on the 5 nm grid (R, G, B)."""
    import colour

    camera = colour.MSDS_CAMERA_SENSITIVITIES[CAMERA]
    grid = _on_grid(camera.values, camera.wavelengths).T
    grid.setflags(write=False)
    return grid


@functools.lru_cache(maxsize=4)
def _photo(size: int) -> NDArray[np.float32]:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(str(cbook.get_sample_data(PHOTO, asfileobj=False))) as image:
        rgb = image.convert("RGB")
        width, height = rgb.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = rgb.crop((left, top, left + side, top + side))
        resized = square.resize((size, size), Image.Resampling.LANCZOS)
        array = np.asarray(resized, dtype=np.float32) / 255.0
    out = np.ascontiguousarray(array.transpose(2, 0, 1))
    out.setflags(write=False)
    return out


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def demo_photo(size: int = 128) -> NDArray[np.float32]:
    """The source photograph of the demo scene, as stored (sRGB-encoded).

    Args:
        size: side of the square image in pixels (8 to 4096).

    Returns:
        ``(3, size, size)`` float32 in [0, 1]: the central square of matplotlib's ``grace_hopper.jpg``
        resized with a Lanczos filter.

    Raises:
        InputError: if ``size`` is not an integer in range.
    """
    return _photo(_check_size(size)).copy()


def srgb_to_linear(rgb: np.ndarray) -> NDArray[np.float64]:
    """Decode sRGB values in [0, 1] to linear light (the IEC 61966-2-1 transfer function)."""
    v = np.asarray(rgb, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((np.clip(v, 0.04045, None) + 0.055) / 1.055) ** 2.4)


def demo_response(wavelengths: np.ndarray) -> tuple[NDArray[np.float64], tuple[str, ...]]:
    """A real 3-band camera response: the measured sensitivities of a Nikon D5100.

    The curves (colour-science's ``MSDS_CAMERA_SENSITIVITIES["Nikon 5100 (NPL)"]``, 380-780 nm) are averaged
    over each band (edges halfway between band centres) and every row is normalised to sum to 1, so a
    spectrally flat scene of value ``v`` gives ``v`` in all three bands.

    Args:
        wavelengths: band centres in nm, strictly increasing, within 380-780 nm.

    Returns:
        ``(response, names)``: ``response`` is ``(3, C)`` float64, ``names`` is ``("R", "G", "B")``.

    Raises:
        InputError: if the wavelengths are not a valid increasing 1-D array within 380-780 nm, or if the
            bands cover less than 1% of a camera channel's sensitivity.
    """
    wl = _check_wavelengths(np.asarray(wavelengths))
    camera = _camera_on_grid()
    response = camera @ _band_average_matrix(wl).T  # (3, C)
    names = ("R", "G", "B")
    # How much of each channel's sensitivity the bands cover (the curves are measured down to noise level).
    fine = np.stack([np.interp(_FINE, _GRID, row) for row in camera])  # (3, 401)
    covered = np.logical_or.reduce(_band_masks(wl))
    coverage = fine[:, covered].sum(axis=1) / fine.sum(axis=1)
    blind = [name for name, fraction in zip(names, coverage, strict=True) if fraction < 0.01]
    if blind:
        raise InputError(
            f"bands at {wl[0]:g}-{wl[-1]:g} nm cover under 1% of the sensitivity of the camera's "
            f"{'/'.join(blind)} channel(s); give bands that cover the visible range (about 400-700 nm)"
        )
    sums = response.sum(axis=1)
    return response / sums[:, None], names


def _smooth_field_at(
    rng: np.random.Generator, count: int, size: int, index: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Values of ``count`` smooth random fields over a (size, size) image, at the pixels' chosen fields.

    Field ``k`` is N(0, 1) noise on a coarse grid (``_FIELD_GRID`` x ``_FIELD_GRID``) covering the image,
    bilinearly interpolated. ``index`` (N, m) names, for each pixel in raster order, the fields wanted.
    """
    coarse = rng.standard_normal((count, _FIELD_GRID, _FIELD_GRID))
    positions = np.linspace(0.0, _FIELD_GRID - 1.0, size)
    i0 = np.clip(np.floor(positions).astype(np.intp), 0, _FIELD_GRID - 2)
    t = positions - i0
    rows = np.repeat(np.arange(size), size)[:, None]
    cols = np.tile(np.arange(size), size)[:, None]
    r0, c0, tr, tc = i0[rows], i0[cols], t[rows], t[cols]
    return (
        coarse[index, r0, c0] * (1 - tr) * (1 - tc)
        + coarse[index, r0 + 1, c0] * tr * (1 - tc)
        + coarse[index, r0, c0 + 1] * (1 - tr) * tc
        + coarse[index, r0 + 1, c0 + 1] * tr * tc
    )


def _chromaticity(rgb: NDArray[np.float64], luminance: NDArray[np.float64]) -> NDArray[np.float64]:
    return (rgb + _EPS_CHROMA) / (luminance[..., None] + _EPS_CHROMA)


def _refine(
    endmembers: NDArray[np.float64], target: NDArray[np.float64], prior: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Per pixel ``min_w |E^T w - p|^2 + lam |w - w0|^2``, ``w >= 0``, by FISTA vectorised over pixels.

    Shapes: endmembers (N, k, 3), target (N, 3), prior (N, k). Returns (N, k).
    """
    gram = np.einsum("nkc,njc->nkj", endmembers, endmembers)
    lam = _LAMBDA
    lipschitz = np.einsum("nkj,nkj->n", gram, gram) ** 0.5 + lam  # Frobenius bound of the top eigenvalue
    step = (1.0 / lipschitz)[:, None]
    linear = np.einsum("nkc,nc->nk", endmembers, target) + lam * prior
    w = prior.copy()
    y = prior.copy()
    t = 1.0
    for _ in range(_ITERATIONS):
        gradient = np.einsum("nkj,nj->nk", gram, y) + lam * y - linear
        w_next = np.maximum(y - step * gradient, 0.0)
        t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        y = w_next + ((t - 1.0) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return w


def demo_scene(
    size: int = 128, wavelengths: np.ndarray | None = None, *, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """The embedded demo scene: real photo structure, real reflectance spectra (see the module docstring).

    Deterministic: the same arguments give the same cube, bit for bit, on the same platform.

    Args:
        size: side of the square scene in pixels (8 to 4096).
        wavelengths: band centres in nm (strictly increasing, within 380-780 nm); None gives 400 to 700 nm
            in steps of 10 nm (31 bands, like CAVE).
        seed: seed of the smooth random field that chooses among metamers region by region.

    Returns:
        ``(cube, wavelengths)``: ``cube`` is ``(C, size, size)`` float32 in [0, 1] with maximum 1,
        ``wavelengths`` the band centres in nm, float64 ``(C,)``.

    Raises:
        InputError: if ``size`` or ``wavelengths`` are invalid.

    Example:
        >>> cube, wl = demo_scene(64)
        >>> cube.shape, wl.shape, float(cube.max())
        ((31, 64, 64), (31,), 1.0)
    """
    from scipy.ndimage import gaussian_filter

    size = _check_size(size)
    wl = _check_wavelengths(wavelengths)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")

    library = _spectral_library()  # (K, 81)
    to_srgb = _srgb_matrix()  # (3, 81)
    library_rgb = library @ to_srgb.T  # (K, 3) linear sRGB
    library_y = library_rgb @ np.array([0.2126, 0.7152, 0.0722])
    count = library.shape[0]

    pixels = srgb_to_linear(_photo(size)).reshape(3, -1).T  # (N, 3)
    pixel_y = pixels @ np.array([0.2126, 0.7152, 0.0722])
    chroma = _chromaticity(pixels, pixel_y).T.reshape(3, size, size)
    chroma = np.stack([gaussian_filter(channel, sigma=1.0, mode="reflect") for channel in chroma])
    chroma_flat = chroma.reshape(3, -1).T  # (N, 3)
    library_chroma = _chromaticity(library_rgb, library_y)  # (K, 3)

    distance = np.maximum(
        (chroma_flat**2).sum(axis=1)[:, None]
        + (library_chroma**2).sum(axis=1)[None, :]
        - 2.0 * chroma_flat @ library_chroma.T,
        0.0,
    ).astype(np.float32)  # (N, K)
    # Only the nearest spectra can win once the bounded field is added: score those alone.
    candidates = np.argpartition(distance, _CANDIDATES - 1, axis=1)[:, :_CANDIDATES]  # (N, m)
    field = _smooth_field_at(np.random.default_rng(seed), count, size, candidates)  # (N, m)
    logits = -np.take_along_axis(distance, candidates, axis=1) / _TAU + _FIELD_AMPLITUDE * field
    best = np.argpartition(-logits, _TOP_K - 1, axis=1)[:, :_TOP_K]
    top = np.take_along_axis(candidates, best, axis=1)  # (N, k) indices into the library
    top_logits = np.take_along_axis(logits, best, axis=1)
    weights = np.exp(top_logits - top_logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    mixture_y = (weights * library_y[top]).sum(axis=1)
    prior = weights * (pixel_y / np.maximum(mixture_y, 1e-6))[:, None]

    abundances = _refine(library_rgb[top], pixels, prior)  # (N, k)

    bands = library @ _band_average_matrix(wl).T  # (K, C)
    dense = np.zeros((pixels.shape[0], count))
    np.put_along_axis(dense, top, abundances, axis=1)
    cube = np.clip(dense @ bands, 0.0, None).T.reshape(wl.size, size, size)
    peak = float(cube.max())
    if peak <= 0.0:  # cannot happen with the shipped photo; guards against a corrupted installation
        raise RuntimeError("the demo scene came out black: the bundled photo or spectra are unreadable")
    logger.debug("demo scene: %d px, %d bands, %d spectra, seed %d", size, wl.size, count, seed)
    return (cube / peak).astype(np.float32), wl.copy()
