"""Evaluation figures: false-colour composites, per-pixel error maps and spectra at chosen pixels.

Everything draws on :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas, never through
``pyplot``: no GUI backend is needed, the global backend of a program that imports csakd is left alone,
and no figure stays alive in a global registry. matplotlib is imported inside the functions.

Images are numpy cubes ``(C, H, W)`` (bands first) in any units; a fused cube must share the truth's
units. Wavelengths are band centres in nm.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from csakd.errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

__all__ = [
    "ErrorKind",
    "default_pixels",
    "error_map",
    "false_colour",
    "false_colour_bands",
    "save_comparison_figure",
    "save_spectra_figure",
]

logger = logging.getLogger(__name__)

ErrorKind = Literal["rmse", "sam"]

_DPI = 110
_PANEL_IN = 2.5  # inches per image panel


# ----------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------


def _as_cube(array: np.ndarray, name: str) -> NDArray[np.float64]:
    cube = np.asarray(array, dtype=np.float64)
    if cube.ndim != 3:
        raise InputError(f"{name} must be a (C, H, W) cube, bands first; got shape {cube.shape}")
    if min(cube.shape) < 1:
        raise InputError(f"{name} has an empty dimension: shape {cube.shape}")
    return cube


def _as_wavelengths(
    wavelengths: np.ndarray | Sequence[float] | None, bands: int
) -> NDArray[np.float64] | None:
    if wavelengths is None:
        return None
    wl = np.asarray(wavelengths, dtype=np.float64)
    if wl.shape != (bands,):
        raise InputError(f"wavelengths must have one value per band, shape ({bands},); got shape {wl.shape}")
    if not np.all(np.isfinite(wl)):
        raise InputError("wavelengths must be finite numbers (nm)")
    return wl


# ----------------------------------------------------------------------------------------------------------
# False colour
# ----------------------------------------------------------------------------------------------------------


def false_colour_bands(
    bands: int,
    wavelengths: np.ndarray | Sequence[float] | None,
    rgb_nm: tuple[float, float, float] = (640.0, 550.0, 460.0),
) -> tuple[int, int, int]:
    """Indices of the bands shown as red, green and blue.

    With wavelengths: the band nearest to each of ``rgb_nm`` (the lower index on a tie). Without: the bands
    at 3/4, 1/2 and 1/4 of the band range (``round(f * (C - 1))``), long wavelengths in red as usual.

    Raises:
        InputError: if ``bands < 1`` or the wavelengths do not match the band count.
    """
    if bands < 1:
        raise InputError(f"a cube needs at least one band, got {bands}")
    wl = _as_wavelengths(wavelengths, bands)
    if wl is None:
        r, g, b = (round(f * (bands - 1)) for f in (0.75, 0.5, 0.25))
        return int(r), int(g), int(b)
    if len(rgb_nm) != 3:
        raise InputError(f"rgb_nm must hold three wavelengths (red, green, blue) in nm, got {rgb_nm!r}")
    picks = tuple(int(np.argmin(np.abs(wl - float(target)))) for target in rgb_nm)
    for target, index in zip(rgb_nm, picks, strict=True):
        if abs(wl[index] - target) > 50.0:
            logger.info("false colour: nearest band to %g nm is %g nm", target, wl[index])
    return picks[0], picks[1], picks[2]


def false_colour(
    cube: np.ndarray,
    wavelengths: np.ndarray | Sequence[float] | None,
    rgb_nm: tuple[float, float, float] = (640.0, 550.0, 460.0),
    *,
    reference: np.ndarray | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> NDArray[np.float32]:
    """A displayable RGB composite of three bands of a cube, with a robust linear stretch.

    Each channel is mapped linearly so that its ``percentiles[0]`` percentile goes to 0 and its
    ``percentiles[1]`` percentile to 1, then clipped to [0, 1]. The percentiles are taken from
    ``reference`` when given (e.g. the truth, so that a prediction is shown on the truth's stretch and the
    two can be compared), otherwise from ``cube`` itself. A channel whose two percentiles coincide
    (a constant band) maps to 0.5 at that value.

    Args:
        cube: ``(C, H, W)`` image.
        wavelengths: band centres in nm, ``(C,)``, or None (see :func:`false_colour_bands`).
        rgb_nm: wavelengths shown as red, green and blue.
        reference: ``(C, h, w)`` image with the same bands whose percentiles set the stretch.
        percentiles: lower and upper percentiles of the stretch, ``0 <= low < high <= 100``.

    Returns:
        ``(H, W, 3)`` float32 in [0, 1].

    Raises:
        InputError: on a wrongly shaped cube, reference or wavelengths, or invalid percentiles.

    Example:
        >>> cube = np.random.default_rng(0).random((31, 8, 8))
        >>> false_colour(cube, np.arange(400.0, 701.0, 10.0)).shape
        (8, 8, 3)
    """
    data = _as_cube(cube, "cube")
    low_p, high_p = (float(p) for p in percentiles)
    if not 0.0 <= low_p < high_p <= 100.0:
        raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    picks = list(false_colour_bands(data.shape[0], wavelengths, rgb_nm))
    if reference is None:
        stretch_source = data
    else:
        stretch_source = _as_cube(reference, "reference")
        if stretch_source.shape[0] != data.shape[0]:
            raise InputError(
                f"reference has {stretch_source.shape[0]} bands, cube {data.shape[0]}: they must match"
            )
    channels = data[picks]  # (3, H, W)
    source = stretch_source[picks].reshape(3, -1)
    finite = np.isfinite(source)
    low = np.array(
        [np.percentile(s[f], low_p) if f.any() else 0.0 for s, f in zip(source, finite, strict=True)]
    )
    high = np.array(
        [np.percentile(s[f], high_p) if f.any() else 1.0 for s, f in zip(source, finite, strict=True)]
    )
    span = high - low
    degenerate = span <= 1e-12 * np.maximum(np.abs(high), 1.0)
    # A constant band: centre it (value -> 0.5) with a unit span so it stays visible.
    low = np.where(degenerate, low - 0.5, low)
    span = np.where(degenerate, 1.0, span)
    stretched = (channels - low[:, None, None]) / span[:, None, None]
    stretched = np.nan_to_num(stretched, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(stretched, 0.0, 1.0).transpose(1, 2, 0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Errors and pixels
# ----------------------------------------------------------------------------------------------------------


def error_map(truth: np.ndarray, fused: np.ndarray, kind: ErrorKind = "rmse") -> NDArray[np.float64]:
    """Per-pixel error of a fused cube against the truth, ``(H, W)``.

    ``rmse``: root mean square over bands, in the data's units. ``sam``: the spectral angle in degrees
    (0 where either spectrum is all zero).

    Raises:
        InputError: on shapes that differ or an unknown ``kind``.
    """
    x = _as_cube(truth, "truth")
    y = _as_cube(fused, "fused")
    if x.shape != y.shape:
        raise InputError(f"fused has shape {y.shape}, truth {x.shape}: they must match")
    if kind == "rmse":
        return np.sqrt(np.mean((y - x) ** 2, axis=0))
    if kind == "sam":
        dot = np.sum(x * y, axis=0)
        norms = np.linalg.norm(x, axis=0) * np.linalg.norm(y, axis=0)
        cosine = np.divide(dot, norms, out=np.ones_like(dot), where=norms > 0)
        return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    raise InputError(f"error kind must be 'rmse' or 'sam', got {kind!r}")


def default_pixels(height: int, width: int, count: int = 4) -> list[tuple[int, int]]:
    """``count`` (row, column) pixels spread over an image, deterministically.

    They lie on the inner grid at 1/4, 1/2 and 3/4 of each side, in the order (1/4, 1/4), (3/4, 3/4),
    (1/4, 3/4), (3/4, 1/4), (1/2, 1/2), then the rest of that grid; duplicates (tiny images) are dropped.
    """
    fractions = [(0.25, 0.25), (0.75, 0.75), (0.25, 0.75), (0.75, 0.25), (0.5, 0.5),
                 (0.25, 0.5), (0.75, 0.5), (0.5, 0.25), (0.5, 0.75)]  # fmt: skip
    pixels: list[tuple[int, int]] = []
    for fy, fx in fractions:
        pixel = (min(int(fy * height), height - 1), min(int(fx * width), width - 1))
        if pixel not in pixels:
            pixels.append(pixel)
        if len(pixels) == count:
            break
    return pixels


def _check_pixels(pixels: Sequence[tuple[int, int]], height: int, width: int) -> list[tuple[int, int]]:
    checked = []
    for pixel in pixels:
        if len(pixel) != 2:
            raise InputError(f"pixels must be (row, column) pairs, got {pixel!r}")
        row, col = int(pixel[0]), int(pixel[1])
        if not (0 <= row < height and 0 <= col < width):
            raise InputError(f"pixel {(row, col)} lies outside the {height}x{width} image")
        checked.append((row, col))
    if not checked:
        raise InputError("pixels is empty: give at least one (row, column) pair, or None to choose them")
    return checked


def _check_inputs(
    truth: np.ndarray,
    fused: Mapping[str, np.ndarray],
    wavelengths: np.ndarray | Sequence[float] | None,
) -> tuple[NDArray[np.float64], dict[str, NDArray[np.float64]], NDArray[np.float64] | None]:
    x = _as_cube(truth, "truth")
    if not fused:
        raise InputError("fused is empty: give at least one method's cube, e.g. {'student': cube}")
    cubes = {}
    for name, cube in fused.items():
        y = _as_cube(cube, f"fused[{name!r}]")
        if y.shape != x.shape:
            raise InputError(f"fused[{name!r}] has shape {y.shape}, truth {x.shape}: they must match")
        cubes[str(name)] = y
    return x, cubes, _as_wavelengths(wavelengths, x.shape[0])


def _output_path(path: str | Path) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InputError(f"figure path must end in .png, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------

_MARKER_COLOURS = ("#ff3b30", "#ffd60a", "#32d74b", "#0a84ff", "#bf5af2", "#ff9f0a", "#64d2ff", "#ffffff")


def _method_colours(count: int) -> list[str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10"]
    return [to_hex(cmap(i % 10)) for i in range(count)]


def _draw_spectra(
    axes: Sequence[Axes],
    truth: NDArray[np.float64],
    cubes: Mapping[str, NDArray[np.float64]],
    wl: NDArray[np.float64] | None,
    pixels: Sequence[tuple[int, int]],
    labels: Sequence[str],
    legend_owner: Figure | SubFigure,
    columns: int,
) -> None:
    from matplotlib.ticker import MaxNLocator

    x_axis = wl if wl is not None else np.arange(truth.shape[0], dtype=np.float64)
    colours = _method_colours(len(cubes))
    for ax, (row, col), label in zip(axes, pixels, labels, strict=True):
        ax.plot(x_axis, truth[:, row, col], color="black", linewidth=2.2, label="truth")
        for colour, (name, cube) in zip(colours, cubes.items(), strict=True):
            ax.plot(x_axis, cube[:, row, col], color=colour, linewidth=1.3, linestyle="--", label=name)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("wavelength (nm)" if wl is not None else "band", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in axes[::columns]:
        ax.set_ylabel("value", fontsize=8)
    handles, names = axes[0].get_legend_handles_labels()
    # One legend for all panels, outside them, so that it hides no curve.
    legend_owner.legend(handles, names, loc="outside right center", fontsize=8, frameon=False)


def _pixel_labels(pixels: Sequence[tuple[int, int]], worst: int | None, method: str) -> list[str]:
    labels = []
    for i, (row, col) in enumerate(pixels):
        extra = f" ({method}'s worst)" if worst is not None and i == worst else ""
        labels.append(f"{i + 1}: row {row}, col {col}{extra}")
    return labels


def _mark_pixels(ax: Axes, pixels: Sequence[tuple[int, int]]) -> None:
    for i, (row, col) in enumerate(pixels):
        colour = _MARKER_COLOURS[i % len(_MARKER_COLOURS)]
        ax.plot(
            col,
            row,
            marker="o",
            markersize=7,
            markerfacecolor="none",
            markeredgecolor=colour,
            markeredgewidth=1.6,
        )
        ax.annotate(
            str(i + 1), (col, row), xytext=(4, 4), textcoords="offset points", color=colour, fontweight="bold"
        )


def _save(figure: Figure, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=_DPI)
    logger.info("wrote figure %s", path)
    return path


def save_comparison_figure(
    path: str | Path,
    truth: np.ndarray,
    fused: Mapping[str, np.ndarray],
    wavelengths: np.ndarray | Sequence[float] | None,
    *,
    pixels: Sequence[tuple[int, int]] | None = None,
    title: str = "",
    error: ErrorKind = "rmse",
    rgb_nm: tuple[float, float, float] = (640.0, 550.0, 460.0),
) -> Path:
    """One PNG comparing fused cubes with the truth.

    Layout:
        * top row: false-colour composites of the truth and of each method, all on the truth's 1-99 %
          stretch (:func:`false_colour` with ``reference=truth``); the spectra's pixels are circled and
          numbered on the truth.
        * middle row: the per-band RMSE of every method against wavelength (left), then each method's
          per-pixel error map (:func:`error_map`, RMSE over bands in the truth's units, or SAM in degrees)
          on one shared colour scale (0 to the 99th percentile over all maps) with one colour bar.
        * bottom row: spectra at the pixels, truth (solid black) against each method (dashed).

    Args:
        path: output file, ``.png``; its folder is created; an existing file is replaced.
        truth: ``(C, H, W)`` reference cube.
        fused: method name -> ``(C, H, W)`` cube in the truth's units (at least one).
        wavelengths: band centres in nm ``(C,)``, or None (bands are then numbered).
        pixels: (row, column) pixels whose spectra are drawn; None picks three spread over the image
            (:func:`default_pixels`) plus the pixel of largest error of the first method.
        title: figure title.
        error: ``"rmse"`` or ``"sam"``.
        rgb_nm: wavelengths shown as red, green and blue.

    Returns:
        The path written.

    Raises:
        InputError: on mismatched shapes, pixels outside the image, an unknown error kind or a path not
            ending in ``.png`` (before anything is written).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    x, cubes, wl = _check_inputs(truth, fused, wavelengths)
    if error not in ("rmse", "sam"):
        raise InputError(f"error must be 'rmse' or 'sam', got {error!r}")
    _, height, width = x.shape
    maps = {name: error_map(x, cube, error) for name, cube in cubes.items()}
    worst: int | None = None
    if pixels is None:
        chosen = default_pixels(height, width, 3)
        first = next(iter(maps.values()))
        peak = np.unravel_index(int(np.argmax(np.nan_to_num(first, nan=-1.0))), first.shape)
        worst_pixel = (int(peak[0]), int(peak[1]))
        if worst_pixel in chosen:
            worst = chosen.index(worst_pixel)
        else:
            chosen.append(worst_pixel)
            worst = len(chosen) - 1
    else:
        chosen = _check_pixels(pixels, height, width)
    out = _output_path(path)

    methods = list(cubes)
    columns = 1 + len(methods)
    # Spectra panels: as many columns as the image rows have (at least 2), wrapping onto more rows.
    spectra_columns = min(len(chosen), max(columns, 2))
    spectra_rows = math.ceil(len(chosen) / spectra_columns)
    fig_width = max(columns * _PANEL_IN + 1.0, spectra_columns * 2.9 + 1.0)
    top_height, bottom_height = 2 * _PANEL_IN + 0.4, spectra_rows * 2.4 + 0.4
    figure = Figure(
        figsize=(fig_width, top_height + bottom_height + (0.4 if title else 0.0)), layout="constrained"
    )
    if title:
        figure.suptitle(title, fontsize=12)
    parts = figure.subfigures(2, 1, height_ratios=[top_height, bottom_height], squeeze=False)
    top, bottom = parts[0][0], parts[1][0]

    image_axes = top.subplots(2, columns, squeeze=False)
    composites = {"truth": false_colour(x, wl, rgb_nm, reference=x)}
    for name in methods:
        composites[name] = false_colour(cubes[name], wl, rgb_nm, reference=x)
    picks = false_colour_bands(x.shape[0], wl, rgb_nm)
    band_note = (
        "R/G/B = " + "/".join(f"{wl[i]:.0f}" for i in picks) + " nm"
        if wl is not None
        else "R/G/B = bands " + "/".join(str(i) for i in picks)
    )
    for ax, (name, composite) in zip(image_axes[0], composites.items(), strict=True):
        ax.imshow(composite, interpolation="nearest")
        ax.set_title(name if name != "truth" else f"truth ({band_note})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    _mark_pixels(image_axes[0][0], chosen)

    # Per-band RMSE curves.
    curve_ax = image_axes[1][0]
    x_axis = wl if wl is not None else np.arange(x.shape[0], dtype=np.float64)
    for colour, name in zip(_method_colours(len(methods)), methods, strict=True):
        per_band = np.sqrt(np.mean((cubes[name] - x) ** 2, axis=(1, 2)))
        curve_ax.plot(x_axis, per_band, color=colour, linewidth=1.4, label=name)
    curve_ax.set_title("RMSE per band", fontsize=9)
    curve_ax.set_xlabel("wavelength (nm)" if wl is not None else "band", fontsize=8)
    curve_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    curve_ax.tick_params(labelsize=7)
    curve_ax.grid(True, alpha=0.3)
    curve_ax.legend(fontsize=7, framealpha=0.8)
    curve_ax.set_box_aspect(1.0)

    all_errors = np.concatenate([m[np.isfinite(m)].ravel() for m in maps.values()])
    vmax = float(np.percentile(all_errors, 99.0)) if all_errors.size else 1.0
    vmax = vmax if vmax > 0 else float(max(all_errors.max(initial=0.0), 1e-12))
    unit = "RMSE over bands" if error == "rmse" else "SAM (degrees)"
    image = None
    for ax, name in zip(image_axes[1][1:], methods, strict=True):
        image = ax.imshow(maps[name], cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
        mean = float(np.nanmean(maps[name]))
        ax.set_title(f"{name}: mean {mean:.4g}" + ("°" if error == "sam" else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        bar = top.colorbar(image, ax=list(image_axes[1][1:]), shrink=0.9, extend="max")
        bar.set_label(unit, fontsize=8)
        bar.ax.tick_params(labelsize=7)

    spectra_axes = bottom.subplots(spectra_rows, spectra_columns, squeeze=False).ravel()
    labels = _pixel_labels(chosen, worst, methods[0])
    _draw_spectra(list(spectra_axes[: len(chosen)]), x, cubes, wl, chosen, labels, bottom, spectra_columns)
    for ax in spectra_axes[len(chosen) :]:
        ax.set_visible(False)
    bottom.suptitle("spectra at the marked pixels (truth solid, methods dashed)", fontsize=9)
    return _save(figure, out)


def save_spectra_figure(
    path: str | Path,
    truth: np.ndarray,
    fused: Mapping[str, np.ndarray],
    wavelengths: np.ndarray | Sequence[float] | None,
    *,
    pixels: Sequence[tuple[int, int]] | None = None,
    title: str = "",
) -> Path:
    """One PNG of spectra at a few pixels: truth (solid black) against each method (dashed).

    Args:
        path: output file, ``.png``; its folder is created.
        truth: ``(C, H, W)`` reference cube.
        fused: method name -> ``(C, H, W)`` cube in the truth's units (may be empty: truth only).
        wavelengths: band centres in nm ``(C,)``, or None.
        pixels: (row, column) pixels; None picks four spread over the image (:func:`default_pixels`).
        title: figure title.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    x = _as_cube(truth, "truth")
    cubes: dict[str, NDArray[np.float64]] = {}
    if fused:
        x, cubes, wl = _check_inputs(truth, fused, wavelengths)
    else:
        wl = _as_wavelengths(wavelengths, x.shape[0])
    _, height, width = x.shape
    chosen = default_pixels(height, width, 4) if pixels is None else _check_pixels(pixels, height, width)
    out = _output_path(path)
    columns = min(len(chosen), 4)
    rows = math.ceil(len(chosen) / columns)
    figure = Figure(figsize=(columns * 3.0, rows * 2.6 + (0.4 if title else 0.0)), layout="constrained")
    if title:
        figure.suptitle(title, fontsize=12)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    labels = _pixel_labels(chosen, None, "")
    _draw_spectra(list(axes[: len(chosen)]), x, cubes, wl, chosen, labels, figure, columns)
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    return _save(figure, out)
