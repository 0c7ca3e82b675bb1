"""Fit a fusion network to one real scene that has no ground truth, then fuse it (``csakd fit-scene``).

A real pair (LR-HSI ``Y``, HR-MSI ``Z``) comes without the HR-HSI ``X`` a network is usually trained on.
This module fits a network to the scene itself, by Wald's protocol ("zero-shot" fusion):

1. **Normalise.** ``Y`` and ``Z`` are in different units; each is divided by its own peak (its maximum,
   unless given), recorded as a ``fixed`` :class:`~csakd.normalization.Normalization` in the checkpoint.
2. **Estimate the degradation.** The spatial model ``S(x) = decimate(blur(x, k), s, phase)`` of
   :mod:`csakd.degradation` links the grids; since ``S(Z) = R S(X) = R Y``, the Gaussian blur ``k`` (and the
   decimation phase, tried 0..s-1) is the one whose ``S(Z)`` is best explained linearly by ``Y``
   (:func:`~csakd.baselines._common.estimate_gaussian_blur`), and the spectral response ``R`` comes from
   non-negative least squares of ``S(Z)`` on ``Y`` (:func:`~csakd.baselines._common.estimate_response`, as
   HySure does). A given response file is used up to one gain per MSI band, fitted the same way.
3. **Fit.** Both images are degraded once more by the same model: ``S(Y)`` (the LLR-HSI) and ``S(Z)`` (the
   LR-MSI, on the LR-HSI grid), and a network is trained to map ``(S(Y), S(Z)) -> Y`` on random crops with
   flips and rotations (:class:`WaldCrops`), with csakd's :class:`~csakd.train.trainer.Trainer` (a student
   alone, no teacher), within a minute or step budget. A strip of LR-HSI columns on the right
   (``holdout``) is kept out of training; the checkpoint kept is the best on it by SAM. The checkpoint is
   a normal csakd checkpoint (``csakd fuse --checkpoint`` loads it).
4. **Fuse** ``(Y, Z) -> X`` at full scale (:func:`~csakd.inference.tiled.fuse_tiled_arrays`) and write it.
5. **Report without a reference** (:func:`spectral_consistency`, :func:`spatial_consistency`): ``S(X)``
   against ``Y`` and ``R X`` against ``Z``, for the fitted network, in-phase bicubic upsampling and
   classical baselines run with the same estimates, plus the reduced-scale (Wald) validation: the
   network's and the baselines' recovery of ``Y`` from ``(S(Y), S(Z))``, where ``Y`` is a true reference.

Caveats, as for every Wald-protocol method: the network is fitted one scale below the one it is applied at
(the relation between scales is assumed to hold across them), and consistency is necessary, not sufficient:
an image can agree with both inputs and still be wrong in detail that neither input resolves.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from csakd.baselines import get_baseline
from csakd.baselines._common import degrade, estimate_gaussian_blur, estimate_response
from csakd.data import Cube, read_cube, write_cube
from csakd.data.pairs import SimulatedPairs
from csakd.data.writers import SUPPORTED_WRITE_SUFFIXES
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse, gaussian_kernel, upsample_in_phase
from csakd.errors import InputError
from csakd.io_utils import check_outputs, check_result, check_writable, write_json
from csakd.metrics import cc, compute_metrics, psnr, rmse, sam, ssim

log = logging.getLogger(__name__)

__all__ = [
    "FitOptions",
    "FitSceneResult",
    "SceneEstimates",
    "WaldCrops",
    "estimate_scene",
    "fit_scene",
    "spatial_consistency",
    "spectral_consistency",
]

Sample = dict[str, torch.Tensor]

#: The smallest LR-HSI side fit-scene accepts (SSIM needs 11 pixels; the Wald protocol divides it by the scale).
MIN_LR_SIDE = 16


# ---------------------------------------------------------------------------------------------- options
@dataclass
class FitOptions:
    """How :func:`fit_scene` reads, estimates, fits, fuses and reports.

    Attributes:
        scale: the HR / LR grid ratio; None takes it from the grids (an explicit value must agree).
        phase: the decimation phase (LR pixel i on HR pixel ``scale i + phase``); None tries 0..scale-1 and
            keeps the one whose blur fit leaves the smallest residual.
        blur_sigma: the Gaussian blur's sigma in HR pixels; None estimates it.
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
        learning_rate: AdamW's rate (warm-up then cosine decay over the budget, csakd's default recipe).
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
        command: the command line, recorded in the report.
    """

    scale: int | None = None
    phase: int | None = None
    blur_sigma: float | None = None
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


# ---------------------------------------------------------------------------------------------- estimates
@dataclass
class SceneEstimates:
    """The degradation estimated from a normalised pair (see :func:`estimate_scene`).

    Attributes:
        scale, phase: the grids' ratio and the decimation phase.
        sigma: the Gaussian blur's sigma (HR pixels); ``kernel`` the (k, k) kernel, summing to 1.
        blur_residual: the share of the variance of ``S(Z)`` that ``[Y, 1]`` leaves unexplained at this blur
            (0 is a perfect fit; the blur and phase minimise it).
        phase_scores: per phase tried, its best sigma and that residual.
        response: ``R`` (c, C) in normalised units: ``Z / msi_scale ~ R Y / hsi_scale``.
        response_source: ``estimated (NNLS)`` or the given spec.
        response_residual: per MSI band, the share of the variance of ``S(Z)_k`` that ``R_k Y`` leaves
            unexplained (no offset: the observation model has none).
        response_gain: per MSI band, the gain fitted to a given response (None when estimated).
    """

    scale: int
    phase: int
    sigma: float
    kernel: np.ndarray
    blur_residual: float
    phase_scores: dict[int, dict[str, float]]
    response: np.ndarray
    response_source: str
    response_residual: list[float]
    response_gain: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "phase": self.phase,
            "blur": {"kind": "gaussian", "sigma_hr_pixels": self.sigma, "kernel_size": int(self.kernel.shape[0]),
                     "relative_residual": self.blur_residual,
                     "phases_tried": {str(p): v for p, v in self.phase_scores.items()}},
            "response": {
                "source": self.response_source,
                "units": "normalised: hr_msi / msi_scale ~ R @ lr_hsi / hsi_scale",
                "matrix": self.response.tolist(),
                "row_sums": self.response.sum(axis=1).tolist(),
                "peak_band": [int(i) for i in self.response.argmax(axis=1)],
                "relative_residual_per_msi_band": self.response_residual,
                "gain_per_msi_band": self.response_gain,
            },
        }


def _relative_residual(design: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per target column, ``|t - D b|^2 / |t - mean t|^2`` with ``b`` the least-squares solution."""
    sol = torch.linalg.lstsq(design, target, driver="gelsd").solution
    res = (target - design @ sol).square().sum(dim=0)
    var = (target - target.mean(dim=0)).square().sum(dim=0).clamp_min(1e-300)
    return (res / var).tolist()


def _blur_residual(lr: torch.Tensor, msi_lr: torch.Tensor) -> float:
    """The share of the variance of the degraded MSI that the LR-HSI bands and a constant leave unexplained."""
    y = lr.reshape(lr.shape[0], -1).T
    design = torch.cat([y, torch.ones(y.shape[0], 1, dtype=y.dtype)], dim=1)
    z = msi_lr.reshape(msi_lr.shape[0], -1).T
    res = _relative_residual(design, z)
    var = (z - z.mean(dim=0)).square().sum(dim=0)
    return float(sum(r * float(v) for r, v in zip(res, var, strict=True)) / float(var.sum().clamp_min(1e-300)))


def _gaussian(sigma: float, hr_shape: tuple[int, int]) -> torch.Tensor:
    """The Gaussian kernel of :func:`estimate_gaussian_blur` for a given sigma (side ``2 ceil(3 sigma) + 1``)."""
    half = min(max(0, min(hr_shape) - 1), max(1, math.ceil(3.0 * sigma)))
    return gaussian_kernel(2 * half + 1, sigma, dtype=torch.float64)


def estimate_scene(
    lr: torch.Tensor,
    msi: torch.Tensor,
    scale: int,
    *,
    phase: int | None = None,
    sigma: float | None = None,
    response: np.ndarray | None = None,
    response_source: str = "estimated (NNLS)",
) -> SceneEstimates:
    """Estimate the blur, the decimation phase and the spectral response of a pair (both normalised).

    For each phase (``phase``, or all of 0..scale-1) the Gaussian blur is estimated
    (:func:`~csakd.baselines._common.estimate_gaussian_blur`; or the given ``sigma`` is used) and scored by the
    share of the variance of ``S(Z)`` left unexplained by ``[Y, 1]``; the phase with the smallest wins. ``R`` is
    then estimated by NNLS between ``S(Z)`` and ``Y``, or, when ``response`` (c, C) is given, each of its rows
    is scaled by the least-squares gain.

    Shape:
        - lr: (C, h, w); msi: (c, h scale, w scale), float64
    """
    lr = lr.to(torch.float64)
    msi = msi.to(torch.float64)
    hr_shape = (int(msi.shape[-2]), int(msi.shape[-1]))
    phases = [phase] if phase is not None else list(range(scale))
    scores: dict[int, dict[str, float]] = {}
    kernels: dict[int, torch.Tensor] = {}
    for p in phases:
        if sigma is None:
            s_p, k_p = estimate_gaussian_blur(lr, msi, scale, p)
        else:
            s_p, k_p = float(sigma), _gaussian(float(sigma), hr_shape)
        kernels[p] = k_p
        scores[p] = {"sigma": float(s_p), "relative_residual": _blur_residual(lr, degrade(msi, k_p, scale, p))}
        log.info("fit-scene: phase %d: blur sigma %.3f, relative residual %.4g", p, s_p,
                 scores[p]["relative_residual"])
    best = min(scores, key=lambda p: scores[p]["relative_residual"])
    kernel = kernels[best]
    msi_lr = degrade(msi, kernel, scale, best)
    y = lr.reshape(lr.shape[0], -1).T
    z = msi_lr.reshape(msi_lr.shape[0], -1).T
    gains: list[float] | None = None
    if response is None:
        r = estimate_response(lr, msi_lr)
    else:
        r0 = np.array(response, dtype=np.float64)  # a writable copy
        if r0.shape != (msi.shape[0], lr.shape[0]):
            raise InputError(f"the response is {r0.shape[0]}x{r0.shape[1]} but the pair has {msi.shape[0]} MSI "
                             f"and {lr.shape[0]} HSI bands: expected ({msi.shape[0]}, {lr.shape[0]})")
        pred = y @ torch.from_numpy(r0).T  # (n, c)
        g = ((pred * z).sum(dim=0) / pred.square().sum(dim=0).clamp_min(1e-300)).numpy()
        gains = [float(v) for v in g]
        r = r0 * g[:, None]
    pred = y @ torch.from_numpy(r).T
    var = (z - z.mean(dim=0)).square().sum(dim=0).clamp_min(1e-300)
    residual = ((z - pred).square().sum(dim=0) / var).tolist()
    return SceneEstimates(
        scale=scale, phase=best, sigma=scores[best]["sigma"], kernel=kernel.numpy(),
        blur_residual=scores[best]["relative_residual"], phase_scores=scores, response=r,
        response_source=response_source, response_residual=[float(v) for v in residual], response_gain=gains,
    )


# ---------------------------------------------------------------------------------------------- metrics
def spectral_consistency(
    fused: torch.Tensor, lr: torch.Tensor, kernel: np.ndarray | torch.Tensor, scale: int, phase: int,
    *, units: float = 1.0,
) -> dict[str, float]:
    """The fused image blurred and decimated back (``S(X)``) against the LR-HSI ``Y``, both normalised.

    Returns PSNR (per-band peak), SAM (degrees), ERGAS (at ``scale``), RMSE (times ``units``: the file's units
    for ``units = hsi_scale``) and SSIM, from :func:`csakd.metrics.compute_metrics`. Higher PSNR / SSIM and
    lower SAM / ERGAS / RMSE mean more consistent; the ideal is an exact match.

    Shape:
        - fused: (C, H, W); lr: (C, H / scale, W / scale)
    """
    k = torch.tensor(np.array(kernel, dtype=np.float64))
    back = degrade(fused.to(torch.float64), k, scale, phase)
    m = compute_metrics(back, lr.to(torch.float64), scale=scale, units=units)
    return {key: float(m[key][0]) for key in ("psnr", "sam", "ergas", "rmse", "ssim")}


def spatial_consistency(
    fused: torch.Tensor, msi: torch.Tensor, response: np.ndarray, *, units: float = 1.0
) -> dict[str, float]:
    """The fused image through the response (``R X``) against the HR-MSI ``Z``, both normalised.

    Returns PSNR (per-band peak), RMSE (times ``units``), CC (mean correlation per band,
    :func:`csakd.metrics.cc`), SSIM (data range 1) and SAM (degrees, over the MSI bands).

    Shape:
        - fused: (C, H, W); msi: (c, H, W); response: (c, C)
    """
    r = torch.tensor(np.array(response, dtype=np.float64))
    x = fused.to(torch.float64)
    pred = (r @ x.reshape(x.shape[0], -1)).reshape(r.shape[0], *x.shape[-2:])
    z = msi.to(torch.float64)
    return {
        "psnr": float(psnr(pred, z)[0]),
        "rmse": float(rmse(pred, z, units=units)[0]),
        "cc": float(cc(pred, z)[0]),
        "ssim": float(ssim(pred, z)[0]),
        "sam": float(sam(pred, z)[0]),
    }


# ---------------------------------------------------------------------------------------------- data
class WaldCrops(Dataset[Sample]):
    """Training crops one scale down: ``(S(Y), S(Z)) -> Y`` from the scene's own LR-HSI and HR-MSI.

    The scene ``[Y; S(Z)]`` (LR-HSI bands, then the MSI degraded to the LR-HSI grid) goes through
    :class:`~csakd.data.pairs.SimulatedPairs` with the estimated blur and phase, and a "response" that picks
    the ``S(Z)`` bands: each sample is a crop (taken with a margin, flipped and rotated before the blur, so the
    decimation phase is kept) whose LR-HSI part is degraded into the input ``lr_hsi``, whose ``S(Z)`` part is
    the input ``hr_msi`` and whose LR-HSI part is the target ``hr_hsi``.

    Args:
        lr: Y, (C, h, w) in [0, 1]; msi_lr: S(Z), (c, h, w) in [0, 1].
        config: the degradation (scale, blur, phase) to apply one scale down.
        crop: crop side in LR-HSI pixels (a multiple of the scale), None for whole images.
        samples_per_epoch, seed: as :class:`~csakd.data.pairs.SimulatedPairs`.
    """

    def __init__(self, lr: np.ndarray, msi_lr: np.ndarray, config: DegradationConfig, *, crop: int | None,
                 samples_per_epoch: int, seed: int, augment: bool = True) -> None:
        bands, msi_bands = int(lr.shape[0]), int(msi_lr.shape[0])
        if tuple(lr.shape[-2:]) != tuple(msi_lr.shape[-2:]):
            raise InputError(f"lr {tuple(lr.shape)} and msi_lr {tuple(msi_lr.shape)} must share the LR grid")
        pick = np.zeros((msi_bands, bands + msi_bands))
        pick[:, bands:] = np.eye(msi_bands)
        degradation = Degradation(config, SpectralResponse.from_matrix(pick, normalize=False,
                                                                       source="the scene's degraded HR-MSI"))
        scene = np.concatenate([lr, msi_lr]).astype(np.float32)
        self.bands = bands
        self.pairs = SimulatedPairs([scene], degradation, crop=crop, augment=augment,
                                    samples_per_epoch=samples_per_epoch, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.pairs.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        s = self.pairs[index]
        c = self.bands
        return {"lr_hsi": s["lr_hsi"][:c].contiguous(), "hr_msi": s["hr_msi"], "hr_hsi": s["hr_hsi"][:c].contiguous()}


# ---------------------------------------------------------------------------------------------- result
@dataclass
class FitSceneResult:
    """What :func:`fit_scene` wrote and measured.

    Attributes:
        out: the fused HR-HSI file.
        report_dir: the report folder; ``report`` is what ``report.json`` there holds.
        checkpoint: the fitted network (``report_dir/model/student.pt``), a normal csakd checkpoint.
        figures: the PNG figures written.
        estimates: the estimated degradation.
    """

    out: Path
    report_dir: Path
    checkpoint: Path
    report: dict[str, Any]
    figures: list[Path]
    estimates: SceneEstimates


# ---------------------------------------------------------------------------------------------- checks
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


# ---------------------------------------------------------------------------------------------- main
def fit_scene(
    lr_path: str | Path,
    msi_path: str | Path,
    out_path: str | Path,
    report_dir: str | Path,
    options: FitOptions | None = None,
) -> FitSceneResult:
    """Fit a network to the pair in ``lr_path`` / ``msi_path``, fuse it into ``out_path``, report in ``report_dir``.

    See the module docstring for the method. Everything is checked before anything is written: the inputs
    (readable, finite, grids ``scale`` apart, georeferenced footprints), the output (an existing file needs
    ``overwrite``; a format by extension), the report folder (empty unless ``overwrite``), the network preset,
    the baselines, the device and a response file.

    ``report_dir`` receives ``report.json`` (inputs, normalisation, estimates, settings, timings, metrics,
    environment), the figures and ``model/`` (the fitted network: ``student.pt``, plus the trainer's
    ``last.pt`` and ``metrics.jsonl``).
    """
    opts = options or FitOptions()
    opts.validate()
    threads = torch.get_num_threads()
    try:
        return _fit_scene(Path(lr_path), Path(msi_path), Path(out_path).expanduser(),
                          Path(report_dir).expanduser(), opts)
    finally:
        torch.set_num_threads(threads)


def _fit_scene(lr_path: Path, msi_path: Path, out: Path, rdir: Path, opts: FitOptions) -> FitSceneResult:
    from csakd.checkpoint import load_checkpoint
    from csakd.devices import resolve_device
    from csakd.envinfo import environment
    from csakd.inference.geo import apply_nodata, check_footprint, output_geo, output_nodata, prepare_nodata
    from csakd.inference.tiled import fuse_tiled_arrays
    from csakd.models import preset_config
    from csakd.normalization import Normalization
    from csakd.train.config import TrainConfig
    from csakd.train.trainer import RunSpec, Trainer

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    check_outputs({"out": out, "report_dir": rdir}, {"lr_hsi": lr_path, "hr_msi": msi_path}, overwrite=opts.overwrite,
                  folders=["report_dir"])
    _check_out(out, opts.overwrite)
    _check_report_dir(rdir, opts.overwrite)
    if out.resolve().parent == (rdir / "model").resolve():
        raise InputError(f"--out {out} lies in the report's model folder: write it elsewhere")

    # ------------------------------------------------------------------ read and check the pair
    t0 = time.perf_counter()
    lr_cube = read_cube(lr_path, variable=opts.variable_lr, layout=opts.layout)  # type: ignore[arg-type]
    msi_cube = read_cube(msi_path, variable=opts.variable_msi, layout=opts.layout)  # type: ignore[arg-type]
    ratio = grid_ratio(lr_cube.data.shape, msi_cube.data.shape)
    if opts.scale is not None and int(opts.scale) != ratio:
        raise InputError(f"scale {opts.scale} was asked for, but hr_msi is {msi_cube.height}x{msi_cube.width} and "
                         f"lr_hsi {lr_cube.height}x{lr_cube.width}: a ratio of {ratio}")
    scale = ratio
    masks = prepare_nodata(lr_cube, msi_cube, scale)
    lr_cube.check_finite("lr_hsi")
    msi_cube.check_finite("hr_msi")
    check_footprint(lr_cube.geo, msi_cube.geo, lr_cube.data.shape, msi_cube.data.shape, scale)
    bands, h, w = lr_cube.data.shape
    msi_bands = msi_cube.bands
    if h % scale or w % scale or min(h, w) < MIN_LR_SIDE:
        raise InputError(
            f"the LR-HSI is {h}x{w}: the Wald protocol degrades it once more by the scale {scale}, so both sides "
            f"must be multiples of {scale} and at least {MIN_LR_SIDE} pixels (crop the pair)"
        )
    if opts.phase is not None and not 0 <= opts.phase < scale:
        raise InputError(f"phase {opts.phase}: expected an integer in [0, {scale})")
    wavelengths = lr_cube.wavelengths if lr_cube.wavelengths is not None else opts.wavelengths
    if wavelengths is not None and len(wavelengths) != bands:
        raise InputError(f"{len(wavelengths)} wavelengths given for an LR-HSI of {bands} bands")
    given_response: np.ndarray | None = None
    if opts.response != "estimate":
        from csakd.degradation import resolve_response

        given_response = np.asarray(resolve_response(opts.response, wavelengths, bands=bands).matrix)
        if given_response.shape != (msi_bands, bands):
            raise InputError(f"the response {opts.response} is {given_response.shape[0]}x{given_response.shape[1]}"
                             f" but the pair has {msi_bands} MSI and {bands} HSI bands")
    for name in opts.baselines:
        get_baseline(name)
    hold = _holdout_columns(w, scale, opts.holdout)
    train_w = w - hold
    crop = min(opts.crop, h, train_w)
    crop -= crop % scale
    if crop < 2 * scale:
        raise InputError(f"crop {opts.crop}: too small for the scale {scale} (at least {2 * scale} LR-HSI pixels)")
    device = resolve_device(opts.device)
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    # the phase is only known after estimation; validate the rest of the model settings now
    model_cfg = preset_config(opts.preset, bands=bands, msi_bands=msi_bands, scale=scale,
                              **{k: v for k, v in opts.model_overrides.items() if v is not None})
    timings["read_and_check"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ normalise and estimate
    t0 = time.perf_counter()
    hsi_scale = _peak(lr_cube.data, opts.hsi_scale, "LR-HSI")
    msi_scale = _peak(msi_cube.data, opts.msi_scale, "HR-MSI")
    lr01 = _t(lr_cube.data / hsi_scale)
    msi01 = _t(msi_cube.data / msi_scale)
    est = estimate_scene(lr01, msi01, scale, phase=opts.phase, sigma=opts.blur_sigma, response=given_response,
                         response_source="estimated (NNLS)" if given_response is None else str(opts.response))
    timings["estimate"] = time.perf_counter() - t0
    log.info("fit-scene: x%d, phase %d, blur sigma %.3f HR pixels (residual %.3g); response residuals %s",
             scale, est.phase, est.sigma, est.blur_residual, [round(r, 4) for r in est.response_residual])
    _warn_about_fit(est, msi01)
    kernel = torch.from_numpy(est.kernel)
    msi_lr = degrade(msi01, kernel, scale, est.phase)  # S(Z): the LR-MSI on the LR-HSI grid
    llr = degrade(lr01, kernel, scale, est.phase)  # S(Y): the LLR-HSI

    # ------------------------------------------------------------------ fit
    t0 = time.perf_counter()
    model_cfg = replace(model_cfg, residual_phase=est.phase, blur_size=int(est.kernel.shape[0]), blur_sigma=est.sigma)
    deg_cfg = DegradationConfig(scale=scale, blur_size=int(est.kernel.shape[0]), blur_sigma=est.sigma,
                                phase=est.phase)
    per_epoch, epochs = _training_budget(opts)
    train_set = WaldCrops(lr01[:, :, :train_w].numpy(), msi_lr[:, :, :train_w].numpy(), deg_cfg, crop=crop,
                          samples_per_epoch=per_epoch * opts.batch_size, seed=opts.seed)
    v0 = train_w if hold else 0
    val_item = {"lr_hsi": llr[:, :, v0 // scale:].float(), "hr_msi": msi_lr[:, :, v0:].float(),
                "hr_hsi": lr01[:, :, v0:].float()}
    train_cfg = TrainConfig(mode="student", epochs=epochs, max_minutes=opts.minutes, batch_size=opts.batch_size,
                            crop=crop, lr_student=opts.learning_rate, lr_teacher=opts.learning_rate,
                            samples_per_epoch=per_epoch * opts.batch_size, seed=opts.seed, device=str(device))
    response_sr = SpectralResponse.from_matrix(est.response, normalize=False,
                                               band_names=msi_cube.band_names or None,
                                               source=f"fit-scene: {est.response_source} from {msi_path}")
    spec = RunSpec(train=train_cfg, student=model_cfg,
                   normalization=Normalization("fixed", hsi_scale, msi_scale),
                   wavelengths=None if wavelengths is None else [float(v) for v in wavelengths],
                   response=response_sr.to_dict(), degradation=deg_cfg.to_dict(),
                   data={"fit_scene": {"lr_hsi": str(lr_path), "hr_msi": str(msi_path),
                                       "holdout_columns": hold, "protocol": "Wald (reduced scale)"}})
    # nothing is written before this point: every check, including those the estimates allow, has passed
    rdir.mkdir(parents=True, exist_ok=True)
    model_dir = rdir / "model"
    if model_dir.exists() and opts.overwrite:
        shutil.rmtree(model_dir)  # a previous run's trainer files (metrics.jsonl would be appended to)
    trainer = Trainer(spec, train_set, [val_item], model_dir, progress=opts.progress)  # type: ignore[arg-type]
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    timings["train"] = time.perf_counter() - t0
    checkpoint = model_dir / "student.pt"
    loaded = load_checkpoint(checkpoint)

    # ------------------------------------------------------------------ Wald validation
    t0 = time.perf_counter()
    wald = _wald_metrics(loaded.model, device, llr, msi_lr, lr01, est, opts.baselines, v0, hsi_scale)
    timings["wald_validation"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ full-scale fusion
    t0 = time.perf_counter()
    fused = fuse_tiled_arrays(loaded, lr_cube.data, msi_cube.data, tile=opts.tile, device=str(device))
    assert fused is not None
    timings["fuse"] = time.perf_counter() - t0
    from csakd.inference.fuse import nonfinite_weights

    check_result(fused, "the fitted network's fused image", target=out, cause=lambda: (
        f"the fitted network has {nonfinite_weights(loaded.model)} non-finite weight(s): its training diverged "
        "(try a lower --learning-rate)" if nonfinite_weights(loaded.model) else
        "the inputs and the fitted weights are finite, so the network overflowed"))

    # ------------------------------------------------------------------ baselines and consistency
    t0 = time.perf_counter()
    results: dict[str, torch.Tensor] = {"fitted": _t(fused / hsi_scale),
                                        "bicubic": upsample_in_phase(lr01, scale, est.phase)}
    for name in opts.baselines:
        if name == "bicubic":
            continue
        tb = time.perf_counter()
        results[name] = _t(get_baseline(name)(lr01, msi01, scale, response=est.response, phase=est.phase,
                                               blur_kernel=est.kernel).numpy())
        check_result(results[name].numpy(), f"the output of the baseline {name}", target=out,
                     cause=f"{name} failed numerically on this pair (its inputs are finite); leave it out with "
                           "--baseline none or choose another")
        timings[f"baseline_{name}"] = time.perf_counter() - tb
    timings["baselines"] = time.perf_counter() - t0
    # the fused image is written only once every result is known to be finite
    t0 = time.perf_counter()
    geo = output_geo(msi_cube.geo, masks)
    written = np.array(fused, copy=True) if masks.active else fused
    apply_nodata(written, masks.hr_window(slice(0, msi_cube.height), slice(0, msi_cube.width)), output_nodata(geo))
    write_cube(out, Cube(written, wavelengths=wavelengths, band_names=lr_cube.band_names, geo=geo,
                         source=str(lr_path)), overwrite=opts.overwrite)
    del written
    timings["write"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    spectral = {name: spectral_consistency(x, lr01, est.kernel, scale, est.phase, units=hsi_scale)
                for name, x in results.items()}
    spatial = {name: spatial_consistency(x, msi01, est.response, units=msi_scale) for name, x in results.items()}
    timings["metrics"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ figures and report
    figures: list[Path] = []
    t0 = time.perf_counter()
    if opts.figures:
        figures = _write_figures(rdir, results, lr01, msi01, est, wavelengths, hsi_scale, msi_scale, wald,
                                 model_dir / "metrics.jsonl")
    timings["figures"] = time.perf_counter() - t0
    wald.pop("_predictions", None)
    timings["total"] = time.perf_counter() - t_start
    report: dict[str, Any] = {
        "command": opts.command,
        "what": "csakd fit-scene: a network fitted to this scene by Wald's protocol, applied at full scale; "
                "no-reference consistency metrics (see README, 'Fitting a network to one real scene')",
        "inputs": {
            "lr_hsi": {"path": str(lr_path), "variable": opts.variable_lr, "shape": [bands, h, w],
                       "min": float(lr_cube.data.min()), "max": float(lr_cube.data.max()),
                       "wavelengths": None if wavelengths is None else [float(v) for v in wavelengths]},
            "hr_msi": {"path": str(msi_path), "variable": opts.variable_msi, "shape": list(msi_cube.data.shape),
                       "min": float(msi_cube.data.min()), "max": float(msi_cube.data.max()),
                       "band_names": msi_cube.band_names},
            "scale": scale,
        },
        "normalization": {"kind": "fixed", "hsi_scale": hsi_scale, "msi_scale": msi_scale,
                          "how": {"hsi": "given" if opts.hsi_scale is not None else "maximum of the LR-HSI",
                                  "msi": "given" if opts.msi_scale is not None else "maximum of the HR-MSI"},
                          "note": "metrics are on the normalised images; RMSE values are in each file's units"},
        "estimates": est.to_dict(),
        "settings": {
            "preset": opts.preset, "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
            "crop_lr_pixels": crop, "holdout_columns": hold, "budget": {"minutes": opts.minutes, "steps": opts.steps},
            "baselines": list(opts.baselines), "tile": opts.tile, "device": str(device),
            "threads": torch.get_num_threads(), "seed": opts.seed,
        },
        "training": summary,
        "metrics": {
            "spectral_consistency": spectral,
            "spatial_consistency": spatial,
            "wald_validation": wald,
            "definitions": {
                "spectral_consistency": "S(X) vs the LR-HSI: the fused image blurred with the estimated kernel and "
                                        "decimated at the estimated phase; PSNR (per-band peak, dB), SAM (deg), "
                                        "ERGAS, RMSE (LR-HSI file units), SSIM",
                "spatial_consistency": "R X vs the HR-MSI, R the estimated response; PSNR (per-band peak, dB), "
                                       "RMSE (HR-MSI file units), CC (mean per-band correlation), SSIM, SAM (deg)",
                "wald_validation": "one scale down, where the LR-HSI is a true reference: methods fed "
                                   "(S(LR-HSI), S(HR-MSI)) against the LR-HSI; 'heldout' = the right-hand "
                                   "columns kept out of training, 'whole' = the whole LR-HSI (mostly "
                                   "training pixels)",
            },
        },
        "outputs": {"fused": str(out), "checkpoint": str(checkpoint), "figures": [p.name for p in figures]},
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
        "environment": environment(),
    }
    write_json(rdir / "report.json", report)
    return FitSceneResult(out=out, report_dir=rdir, checkpoint=checkpoint, report=report, figures=figures,
                          estimates=est)


def _warn_about_fit(est: SceneEstimates, msi01: torch.Tensor) -> None:
    """Log what makes the estimates (and so the whole fit) doubtful on this scene."""
    if est.sigma >= 1.5 * est.scale:
        log.warning("fit-scene: the blur sigma %.2f is at the top of the range searched (%.1f HR pixels): the blur "
                    "may be larger, or it is absorbing misregistration or a non-linear MSI", est.sigma,
                    1.5 * est.scale)
    if max(est.response_residual) > 0.1 or est.blur_residual > 0.1:
        log.warning("fit-scene: the linear model S(Z) = R Y leaves %.0f%% of the degraded MSI's variance unexplained "
                    "(blur fit) and %.0f%% (response fit, worst band): a gamma-encoded MSI, misregistration or "
                    "different acquisition times? Consistency metrics are then only a rough guide",
                    100 * est.blur_residual, 100 * max(est.response_residual))
    dark = float((msi01.amax(dim=0) <= 0).double().mean())
    if dark > 0.005:
        log.warning("fit-scene: %.1f%% of the HR-MSI's pixels are 0 in every band: undeclared nodata? They are "
                    "fitted and fused like any other pixel", 100 * dark)


@torch.no_grad()
def _wald_metrics(
    model: torch.nn.Module, device: torch.device, llr: torch.Tensor, msi_lr: torch.Tensor, lr01: torch.Tensor,
    est: SceneEstimates, baselines: Sequence[str], v0: int, units: float,
) -> dict[str, Any]:
    """Metrics of the fitted network, bicubic and the baselines one scale down (the LR-HSI as the truth)."""
    from csakd.normalization import from_network, to_network

    s = est.scale
    model = model.to(device).eval()
    out, _ = model(to_network(llr.float()[None].to(device)), to_network(msi_lr.float()[None].to(device)))
    preds: dict[str, torch.Tensor] = {"fitted": from_network(out.float())[0].cpu().double(),
                                      "bicubic": upsample_in_phase(llr, s, est.phase)}
    for name in baselines:
        if name != "bicubic":
            preds[name] = _t(get_baseline(name)(llr, msi_lr, s, response=est.response, phase=est.phase,
                                                blur_kernel=est.kernel).numpy())
    regions = {"whole": slice(0, None)}
    if v0:
        regions = {"heldout": slice(v0, None), **regions}
    result: dict[str, Any] = {}
    for region, cols in regions.items():
        result[region] = {}
        for name, p in preds.items():
            m = compute_metrics(p[:, :, cols], lr01[:, :, cols], scale=s, units=units)
            result[region][name] = {k: float(v[0]) for k, v in m.items()}
    result["columns"] = {"heldout": [v0, int(lr01.shape[-1])] if v0 else None, "whole": [0, int(lr01.shape[-1])]}
    result["_predictions"] = preds  # for the figures; dropped from the report
    return result


# ---------------------------------------------------------------------------------------------- figures
def _rgb(cube: np.ndarray, picks: Sequence[int], reference: np.ndarray) -> np.ndarray:
    """A composite of bands ``picks`` of ``cube`` on the 1-99 % stretch of ``reference`` (same bands)."""
    from csakd.figures import false_colour

    index = np.arange(cube.shape[0], dtype=np.float64)  # band index as the 'wavelength': picks bands exactly
    return false_colour(cube, index, (float(picks[0]), float(picks[1]), float(picks[2])), reference=reference)


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110)
    return path


def _write_figures(
    rdir: Path, results: dict[str, torch.Tensor], lr01: torch.Tensor, msi01: torch.Tensor, est: SceneEstimates,
    wavelengths: np.ndarray | None, hsi_scale: float, msi_scale: float, wald: dict[str, Any], metrics_log: Path,
) -> list[Path]:
    from matplotlib.figure import Figure

    from csakd.figures import default_pixels, false_colour_bands, save_comparison_figure

    s = est.scale
    lr = lr01.numpy()
    cubes = {name: x.numpy() for name, x in results.items()}
    picks = false_colour_bands(lr.shape[0], wavelengths)
    written: list[Path] = []
    order = ["bicubic", *[n for n in cubes if n not in ("bicubic", "fitted")], "fitted"]

    # composites: LR-HSI upsampled / baselines / fitted / the HR-MSI, whole scene and a zoom
    msi = msi01.numpy()
    msi_rgb = _rgb(msi, (0, 1, 2), msi) if msi.shape[0] >= 3 else _rgb(msi, (0, 0, 0), msi)
    H, W = msi.shape[-2:]
    zh, zw = max(H // 4, min(H, 64)), max(W // 4, min(W, 64))
    y0, x0 = (H - zh) // 2, (W - zw) // 2
    panels = [(f"{n} ({'LR-HSI upsampled' if n == 'bicubic' else 'fused'})", _rgb(cubes[n], picks, lr))
              for n in order] + [("HR-MSI", msi_rgb)]
    fig = Figure(figsize=(3.2 * len(panels), 6.8), layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False)
    for j, (title, img) in enumerate(panels):
        axes[0][j].imshow(img, interpolation="nearest")
        axes[0][j].set_title(title, fontsize=9)
        axes[1][j].imshow(img[y0:y0 + zh, x0:x0 + zw], interpolation="nearest")
        axes[1][j].set_title(f"centre {zh}x{zw}", fontsize=8)
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks([])
            ax.set_yticks([])
    note = "bands " + "/".join(str(p) for p in picks)
    if wavelengths is not None:
        note = "/".join(f"{wavelengths[p]:.0f}" for p in picks) + " nm"
    fig.suptitle(f"HSI composites (R/G/B = {note}, on the LR-HSI's stretch) and the HR-MSI", fontsize=10)
    written.append(_save(fig, rdir / "composite.png"))

    # spectral consistency: each result degraded back, against the LR-HSI (errors in the LR-HSI's units)
    back = {n: degrade(results[n], torch.from_numpy(est.kernel), s, est.phase).numpy() * hsi_scale for n in order[::-1]}
    written.append(save_comparison_figure(
        rdir / "spectral_consistency.png", lr * hsi_scale, back, wavelengths,
        title="spectral consistency: each HR result blurred + decimated back vs the LR-HSI ('truth' = LR-HSI)"))

    # spatial consistency: R X against the HR-MSI, per-pixel RMSE over the MSI bands (the MSI's units)
    r = est.response
    maps = {n: np.sqrt(np.mean((np.tensordot(r, cubes[n], axes=(1, 0)) - msi) ** 2, axis=0)) * msi_scale
            for n in order[::-1]}
    vmax = float(np.percentile(np.concatenate([m.ravel() for m in maps.values()]), 99)) or 1.0
    fig = Figure(figsize=(3.4 * len(maps) + 0.8, 3.8), layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    image = None
    for ax, (n, m) in zip(axes, maps.items(), strict=True):
        image = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{n}: mean {m.mean():.4g}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.85, extend="max").set_label("RMSE of R X vs HR-MSI", fontsize=8)
    fig.suptitle("spatial consistency: each result through the estimated response vs the HR-MSI", fontsize=10)
    written.append(_save(fig, rdir / "spatial_consistency.png"))

    # spectra at a few HR pixels, with the LR-HSI pixel that covers each
    pixels = default_pixels(H, W, 4)
    x_axis = wavelengths if wavelengths is not None else np.arange(lr.shape[0])
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    axes = fig.subplots(1, len(pixels), squeeze=False)[0]
    for ax, (row, col) in zip(axes, pixels, strict=True):
        ax.plot(x_axis, lr[:, row // s, col // s] * hsi_scale, color="black", linewidth=2.0, label="LR-HSI pixel")
        for n in order[::-1]:
            ax.plot(x_axis, cubes[n][:, row, col] * hsi_scale, linewidth=1.2, linestyle="--", label=n)
        ax.set_title(f"HR row {row}, col {col}", fontsize=9)
        ax.set_xlabel("wavelength (nm)" if wavelengths is not None else "band", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("spectra at HR pixels (LR-HSI units)", fontsize=10)
    written.append(_save(fig, rdir / "spectra.png"))

    # Wald validation: the LR-HSI recovered one scale down
    preds = wald["_predictions"]
    cols = slice(wald["columns"]["heldout"][0], None) if wald["columns"]["heldout"] else slice(0, None)
    region = "held-out columns" if wald["columns"]["heldout"] else "whole image"
    written.append(save_comparison_figure(
        rdir / "wald_validation.png", lr[:, :, cols] * hsi_scale,
        {n: preds[n][:, :, cols].numpy() * hsi_scale for n in ["fitted", *[k for k in preds if k != "fitted"]]},
        wavelengths, title=f"reduced scale (Wald), {region}: the LR-HSI ('truth') from its degraded version"))

    # training curves
    if metrics_log.exists():
        rows = [json.loads(line) for line in metrics_log.read_text().splitlines() if line.strip()]
        train = [(r["step"], r["student/loss"]) for r in rows if r["kind"] == "train" and "student/loss" in r]
        val = [(r["step"], r["sam"]) for r in rows if r["kind"] == "val/student" and "sam" in r]
        if train and val:
            fig = Figure(figsize=(8, 3), layout="constrained")
            a, b = fig.subplots(1, 2)
            a.plot(*zip(*train, strict=True), marker=".")
            a.set_title("training loss (epoch mean)", fontsize=9)
            a.set_xlabel("step", fontsize=8)
            b.plot(*zip(*val, strict=True), marker=".", label="fitted")
            bic = wald.get("heldout", wald["whole"])["bicubic"]["sam"]
            b.axhline(bic, color="grey", linestyle="--", label="bicubic")
            b.set_title(f"validation SAM (deg), {region}", fontsize=9)
            b.set_xlabel("step", fontsize=8)
            b.legend(fontsize=7)
            for ax in (a, b):
                ax.grid(True, alpha=0.3)
                ax.tick_params(labelsize=7)
            written.append(_save(fig, rdir / "training.png"))
    return written


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short plain-text summary of a report: estimates, consistency and Wald metrics, time."""
    est = report["estimates"]
    m = report["metrics"]
    lines = [
        f"estimates: x{est['scale']}, phase {est['phase']}, blur sigma {est['blur']['sigma_hr_pixels']:.2f} HR px "
        f"(residual {est['blur']['relative_residual']:.3g}), response residual per MSI band "
        + ", ".join(f"{v:.3g}" for v in est["response"]["relative_residual_per_msi_band"]),
        f"{'spectral consistency':<22}{'PSNR dB':>9}{'SAM deg':>9}{'ERGAS':>8}{'RMSE (LR-HSI units)':>21}",
    ]
    for name, v in m["spectral_consistency"].items():
        lines.append(f"  {name:<20}{v['psnr']:>9.2f}{v['sam']:>9.3f}{v['ergas']:>8.3f}{v['rmse']:>21.4g}")
    lines.append(f"{'spatial consistency':<22}{'PSNR dB':>9}{'RMSE (HR-MSI units)':>21}{'CC':>8}{'SSIM':>10}")
    for name, v in m["spatial_consistency"].items():
        lines.append(f"  {name:<20}{v['psnr']:>9.2f}{v['rmse']:>21.4g}{v['cc']:>8.4f}{v['ssim']:>10.4f}")
    wald = m["wald_validation"]
    region = "heldout" if "heldout" in wald else "whole"
    lines.append(f"{'Wald (' + region + ')':<22}{'PSNR dB':>9}{'SAM deg':>9}{'ERGAS':>8}{'RMSE (LR-HSI units)':>21}")
    for name, v in wald[region].items():
        lines.append(f"  {name:<20}{v['psnr']:>9.2f}{v['sam']:>9.3f}{v['ergas']:>8.3f}{v['rmse']:>21.4g}")
    t = report["timings_seconds"]
    tr = report["training"]
    lines.append(f"time: {t['total']:.0f} s in all, training {t['train']:.0f} s ({tr['steps']} steps)")
    return lines

