"""The options of :func:`csakd.fit.fit_scene` and the checks made on them and on the pair before anything runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csakd.data.writers import SUPPORTED_WRITE_SUFFIXES
from csakd.errors import InputError
from csakd.files import check_writable

__all__ = ["MIN_LR_SIDE", "FitOptions", "command_line", "grid_ratio"]

#: The smallest LR-HSI side fit-scene accepts (SSIM needs 11 pixels; the Wald protocol divides it by the scale).
MIN_LR_SIDE = 16


@dataclass
class FitOptions:
    """How :func:`fit_scene` reads, estimates, fits, fuses and reports.

    Attributes:
        scale: the HR / LR grid ratio; None takes it from the grids (an explicit value must agree).
        phase: the decimation phase (LR pixel i on HR pixel ``scale i + phase``); None tries 0..scale-1 and
            keeps the one whose blur fit leaves the smallest residual.
        blur_sigma: the Gaussian blur's sigma in HR pixels; None estimates it.
        psf: ``"estimate"``: the PSF (any shape) estimated jointly with the response and offsets;
            ``"gaussian"``: an isotropic Gaussian (the best sigma, or ``blur_sigma``).
        response: ``"estimate"`` (NNLS), or a spectral response spec for
            :func:`~csakd.degradation.resolve_response` (a CSV of curves, a matrix file, a sensor name); a given
            response is used up to one gain per MSI band, fitted by least squares.
        hsi_scale, msi_scale: the divisors that bring the LR-HSI and the HR-MSI to [0, 1]; None: each image's
            maximum.
        preset: the network preset (``lite`` by default: fast on a CPU); ``model_overrides`` changes its
            settings (``nf``, ``gc``, ``blocks``, ``fusion``...).
        minutes, steps: the training budget (either or both; training stops at the first reached).
        batch_size, crop: training batch and crop side, in LR-HSI pixels (the target's side; a multiple of
            the scale, reduced to fit the image).
        learning_rate: AdamW's rate for the reduced-scale fit (warm-up then cosine decay over the budget).
        fit: ``"full"`` (the network fitted at full scale to the observation model, from its base),
            ``"reduced"`` (Wald's protocol: ``(S(Y), S(Z)) -> Y``) or ``"both"`` (reduced, then full scale from
            it; the budget split in two); see :mod:`csakd.fit.fullscale`.
        full_learning_rate: Adam's rate for the full-scale fit.
        base: the network's residual base: ``"denoised"`` (the regression base with a ridge at the HR-MSI's
            estimated noise variance, and the output projected onto the LR-HSI's noise-whitened principal
            subspace: :mod:`csakd.fit.base`) or ``"plain"`` (the regression base as ``csakd train`` builds it,
            with the estimated PSF).
        force_fit: write the fitted image even when it is less consistent than the base on the held-out
            strip (by default the base is written then).
        holdout: the share of LR-HSI columns (on the right) kept out of training to validate on; 0 validates
            on the whole (training) image.
        steps_per_epoch: steps between validations.
        baselines: classical methods (:mod:`csakd.baselines`) to compare with, run with the same estimates.
        tile: tile side in HR pixels for the full-scale fusion (0 = one pass).
        device, seed, threads: where and how reproducibly to train.
        variable_lr, variable_msi, layout: how to read the files (:func:`~csakd.data.read_cube`).
        wavelengths: the LR-HSI's band centres (nm) when the file lacks them.
        figures: write the PNG figures.
        overwrite: replace an existing output and reuse a non-empty report folder.
        progress: show the training progress bar.
        command: the command line, recorded in the report (the options themselves are, as :meth:`to_dict`).
    """

    scale: int | None = None
    phase: int | None = None
    blur_sigma: float | None = None
    psf: str = "estimate"
    response: str = "estimate"
    hsi_scale: float | None = None
    msi_scale: float | None = None
    preset: str = "lite"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    minutes: float | None = 3.0
    steps: int | None = None
    batch_size: int = 4
    crop: int = 64
    learning_rate: float = 5e-4
    fit: str = "full"
    full_learning_rate: float = 1e-4
    base: str = "denoised"
    force_fit: bool = False
    holdout: float = 0.2
    steps_per_epoch: int = 25
    baselines: tuple[str, ...] = ("gsa",)
    tile: int = 0
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    variable_lr: str | None = None
    variable_msi: str | None = None
    layout: str = "auto"
    wavelengths: np.ndarray | None = None
    figures: bool = True
    overwrite: bool = False
    progress: bool = False
    command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (recorded in the report)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = [float(x) for x in v]
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = {k: list(x) if isinstance(x, tuple) else x for k, x in v.items()}
            out[f.name] = v
        return out

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first setting out of range."""
        if self.scale is not None and (isinstance(self.scale, bool) or int(self.scale) < 2):
            raise InputError(f"scale {self.scale}: expected an integer of at least 2")
        if self.minutes is None and self.steps is None:
            raise InputError("a training budget is needed: minutes and/or steps")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise InputError(f"minutes {self.minutes}: expected a positive number")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"steps {self.steps}: expected a positive integer")
        for key in ("batch_size", "crop", "steps_per_epoch"):
            if int(getattr(self, key)) < 1:
                raise InputError(f"{key} {getattr(self, key)}: expected a positive integer")
        if not 0 <= self.holdout < 0.5:
            raise InputError(f"holdout {self.holdout}: expected a share of the columns in [0, 0.5)")
        if self.fit not in ("full", "reduced", "both"):
            raise InputError(f"fit {self.fit!r}: expected full, reduced or both")
        if self.base not in ("denoised", "plain"):
            raise InputError(f"base {self.base!r}: expected denoised or plain")
        if not (math.isfinite(self.full_learning_rate) and self.full_learning_rate > 0):
            raise InputError(f"full-scale learning rate {self.full_learning_rate}: expected a positive number")
        if self.psf not in ("estimate", "gaussian"):
            raise InputError(f"psf {self.psf!r}: expected estimate or gaussian")
        if self.blur_sigma is not None and not (math.isfinite(self.blur_sigma) and self.blur_sigma > 0):
            raise InputError(f"blur sigma {self.blur_sigma}: expected a positive number of HR pixels")
        for key in ("hsi_scale", "msi_scale"):
            v = getattr(self, key)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise InputError(f"{key} {v}: expected a positive number")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InputError(f"learning rate {self.learning_rate}: expected a positive number")
        if self.tile < 0:
            raise InputError(f"tile {self.tile}: expected 0 (one pass) or a positive number of HR pixels")


# ---------------------------------------------------------------------------------------------- checks
def command_line(lr: str | Path, msi: str | Path, out: str | Path, report_dir: str | Path, opts: FitOptions) -> str:
    """A ``csakd fit-scene`` command line equivalent to these options (recorded in the report).

    Settings at their defaults are left out; ``wavelengths`` given as an array is noted, not written out.
    """
    import shlex

    defaults = FitOptions()
    tokens = ["csakd", "fit-scene", "--lr", str(lr), "--msi", str(msi), "--out", str(out), "--report-dir",
              str(report_dir)]
    flags = {"scale": "--scale", "phase": "--phase", "blur_sigma": "--blur-sigma", "psf": "--psf",
             "response": "--response",
             "hsi_scale": "--hsi-scale", "msi_scale": "--msi-scale", "preset": "--preset", "minutes": "--minutes",
             "steps": "--steps", "batch_size": "--batch-size", "crop": "--crop", "learning_rate": "--learning-rate",
             "fit": "--fit", "base": "--base", "full_learning_rate": "--full-learning-rate",
             "holdout": "--holdout", "tile": "--tile", "device": "--device", "seed": "--seed",
             "threads": "--threads", "variable_lr": "--lr-variable", "variable_msi": "--msi-variable",
             "layout": "--layout"}
    for key, flag in flags.items():
        value = getattr(opts, key)
        if value is not None and value != getattr(defaults, key):
            tokens += [flag, str(value)]
    for key, value in opts.model_overrides.items():
        if value is not None:
            text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
            tokens += [f"--{key.replace('_', '-')}", text]
    if tuple(opts.baselines) != defaults.baselines:
        for b in opts.baselines or ("none",):
            tokens += ["--baseline", b]
    if opts.force_fit:
        tokens.append("--force-fit")
    if not opts.figures:
        tokens.append("--no-figures")
    if opts.overwrite:
        tokens.append("--overwrite")
    line = shlex.join(tokens)
    if opts.wavelengths is not None:
        line += "  # with the LR-HSI's wavelengths given (see inputs)"
    return line


def grid_ratio(lr_shape: Sequence[int], msi_shape: Sequence[int]) -> int:
    """The integer ratio of the HR-MSI grid to the LR-HSI grid, or InputError."""
    h, w = lr_shape[-2:]
    H, W = msi_shape[-2:]
    if H % h or W % w or H // h != W // w or H // h < 2:
        raise InputError(
            f"hr_msi is {H}x{W} but lr_hsi is {h}x{w}: the HR-MSI grid must be one integer scale (2 or more) "
            f"times the LR-HSI grid in both axes"
        )
    return H // h


def _check_report_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise InputError(f"--report-dir {path} is a file: expected a folder")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise InputError(f"report folder {path} is not empty: pass --overwrite to reuse it, or another folder")


def _check_out(path: Path, overwrite: bool) -> None:
    if path.suffix.lower() not in SUPPORTED_WRITE_SUFFIXES:
        kind = f"{path.suffix!r} files" if path.suffix else "files without an extension"
        raise InputError(f"--out {path}: cannot write {kind}: expected one of {', '.join(SUPPORTED_WRITE_SUFFIXES)}")
    check_writable(path, overwrite=overwrite)
    if path.suffix.lower() in (".hdr", ".img", ".dat"):
        from csakd.data.io_envi import envi_pair_for_writing

        for p in envi_pair_for_writing(path):
            check_writable(p, overwrite=overwrite)


def _peak(data: np.ndarray, given: float | None, name: str) -> float:
    if given is not None:
        return float(given)
    peak = float(np.max(data))
    if not peak > 0:
        raise InputError(f"the {name}'s maximum is {peak}: cannot normalise by it (pass its scale explicitly)")
    return peak


def _training_budget(opts: FitOptions) -> tuple[int, int]:
    """(steps per epoch, epochs) for the step budget, or for a time budget alone."""
    if opts.steps is None:
        return opts.steps_per_epoch, 1_000_000
    epochs = math.ceil(opts.steps / opts.steps_per_epoch)
    per_epoch = math.ceil(opts.steps / epochs)
    return per_epoch, math.ceil(opts.steps / per_epoch)


def _holdout_columns(width: int, scale: int, share: float) -> int:
    """LR-HSI columns kept out of training: a multiple of the scale, at least 12 (SSIM's window), or 0."""
    if share <= 0:
        return 0
    cols = max(scale * round(width * share / scale), scale * math.ceil(12 / scale))
    if width - cols < MIN_LR_SIDE:
        raise InputError(f"the LR-HSI is {width} columns wide: too narrow to hold out {cols} columns for "
                         f"validation and train on the rest; pass holdout 0 (--holdout 0)")
    return cols


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


