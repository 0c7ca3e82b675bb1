"""Checks of a pair and of a fused output that ``csakd fuse`` reports (NumPy only: the ONNX runtime uses them too).

* :func:`spectral_consistency`: does the HR-MSI match the checkpoint's spectral response applied to the LR-HSI?
  A network trained on pairs made through one camera's response fuses a pair from another camera without
  complaint, and worse. The check compares, on the LR grid, the HR-MSI blurred and decimated as the checkpoint's
  degradation does (``S(Z)``) with the response applied to the LR-HSI (``R Y``), both in the network's
  normalised units; the relative RMSE ``||S(Z) - R Y|| / ||S(Z)||`` is 0 for the pairs it trained on (up to
  training noise) and grows with a response, a blur, a misregistration or units that differ from training.
* :func:`clip_negative`: fused reflectance / radiance below 0 is set to 0, and counted.

:data:`CONSISTENCY_WARN` is the relative RMSE above which ``csakd fuse`` warns, calibrated by
``benchmarks/spectral_check.py`` (results in ``benchmarks/results/spectral_check.json``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: ``csakd fuse`` warns when the pair's relative spectral-consistency RMSE is above this. Measured on simulated
#: CAVE pairs (benchmarks/spectral_check.py, 10 scenes, 30 camera responses): through the checkpoint's own
#: response at most 0.0076 with 35 dB noise on both images and 0.0135 with 30 dB (0 without noise); through
#: another camera's from 0.0013 to above 0.1, 0.04 at the median. RGB cameras are much alike, so no threshold
#: separates all of them: at 0.02 no same-camera pair down to 30 dB warns (a margin of 1.5) and about three
#: quarters of other-camera pairs do (the most different, whose fused images suffer most).
CONSISTENCY_WARN = 0.02


def _taps(size: int, sigma: float) -> np.ndarray:
    r = size // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    t = np.exp(-(x**2) / (2.0 * sigma**2))
    return t / t.sum()


def degrade_msi(msi: np.ndarray, *, scale: int, phase: int = 0, blur_size: int = 9, blur_sigma: float = 2.0
                ) -> np.ndarray:
    """``S(Z)``: the Gaussian blur (reflect padding, the edge pixel not repeated) sampled at pixel ``phase`` of
    every ``scale`` x ``scale`` cell, as :class:`csakd.degradation.Degradation` makes an LR-HSI; computed only
    at the kept pixels. (c, H, W) -> (c, H / scale, W / scale) float64."""
    c, H, W = msi.shape
    h, w = H // scale, W // scale
    taps = _taps(blur_size, blur_sigma)
    r = blur_size // 2
    if r >= min(H, W):  # reflect padding needs more pixels than the radius: use a box over the cell instead
        return msi[:, : h * scale, : w * scale].reshape(c, h, scale, w, scale).mean(axis=(2, 4), dtype=np.float64)
    padded = np.pad(msi, ((0, 0), (r, r), (r, r)), mode="reflect")
    rows = np.zeros((c, h, padded.shape[2]), dtype=np.float64)
    for k, t in enumerate(taps):
        start = phase + k
        rows += t * padded[:, start: start + scale * h: scale, :]
    out = np.zeros((c, h, w), dtype=np.float64)
    for k, t in enumerate(taps):
        start = phase + k
        out += t * rows[:, :, start: start + scale * w: scale]
    return out


def spectral_consistency(
    lr_hsi: np.ndarray,
    hr_msi: np.ndarray,
    response: np.ndarray,
    *,
    scale: int,
    phase: int = 0,
    blur_size: int = 9,
    blur_sigma: float = 2.0,
    hsi_factor: float = 1.0,
    msi_factor: float = 1.0,
) -> dict[str, Any]:
    """How well ``hr_msi`` (c, H, W) matches ``response`` (c, C) applied to ``lr_hsi`` (C, h, w).

    Both images are divided by their normalisation factors first (the checkpoint's: ``hsi_factor``,
    ``msi_factor``), so a pair in other units than training's counts as inconsistent, as it is to the network.

    Returns:
        ``relative_rmse`` (``||S(Z) - R Y|| / ||S(Z)||``), ``psnr`` (dB, peak: the largest ``S(Z)``),
        ``per_band`` (the relative RMSE of each MSI band), ``gain`` (the one factor ``g`` that fits
        ``S(Z) ~ g R Y`` best) and ``relative_rmse_after_gain`` (the rest once that factor is applied: when it
        is small, the two images differ mainly in units or exposure).
    """
    y = np.asarray(lr_hsi, dtype=np.float64) / float(hsi_factor)
    sz = degrade_msi(np.asarray(hr_msi, dtype=np.float32), scale=scale, phase=phase, blur_size=blur_size,
                     blur_sigma=blur_sigma) / float(msi_factor)
    m = np.asarray(response, dtype=np.float64)
    c, h, w = sz.shape
    ry = (m @ y[:, :h, :w].reshape(y.shape[0], -1)).reshape(c, h, w)
    diff = sz - ry
    norm = float(np.sqrt(np.mean(sz**2))) or 1e-12
    rel = float(np.sqrt(np.mean(diff**2))) / norm
    per_band = [float(np.sqrt(np.mean(diff[b] ** 2)) / (np.sqrt(np.mean(sz[b] ** 2)) or 1e-12)) for b in range(c)]
    ry2 = float(np.sum(ry**2))
    gain = float(np.sum(sz * ry)) / ry2 if ry2 > 0 else float("nan")
    after = float(np.sqrt(np.mean((sz - gain * ry) ** 2))) / norm if ry2 > 0 else float("nan")
    mse = float(np.mean(diff**2))
    peak = float(np.max(np.abs(sz))) or 1.0
    psnr = float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")
    return {"relative_rmse": rel, "psnr": psnr, "per_band": per_band, "gain": gain,
            "relative_rmse_after_gain": after, "threshold": CONSISTENCY_WARN}


def warn_if_inconsistent(result: dict[str, Any], *, what: str = "the checkpoint") -> bool:
    """Log a warning when ``result`` (:func:`spectral_consistency`) is above :data:`CONSISTENCY_WARN`; True if so."""
    rel = result["relative_rmse"]
    if not rel > CONSISTENCY_WARN:
        log.info("spectral consistency of the pair with %s's response: relative RMSE %.4f (warns above %.2f)",
                 what, rel, CONSISTENCY_WARN)
        return False
    hint = ""
    after = result.get("relative_rmse_after_gain")
    if after is not None and np.isfinite(after) and after <= CONSISTENCY_WARN:
        hint = (f"; one gain of {result['gain']:.3g} would explain it (relative RMSE {after:.4f}): are the two images "
                "in the units the checkpoint was trained on?")
    log.warning(
        "the HR-MSI does not match %s's spectral response applied to the LR-HSI: relative RMSE %.3f of the "
        "blurred, decimated HR-MSI (PSNR %.1f dB; per band %s), where pairs made through that response give "
        "below %.2f. Was the pair taken through another camera or sensor, with another blur, or misregistered? "
        "The fused image may be poor; train on pairs through this pair's response, or use csakd fit-scene%s",
        what, rel, result["psnr"], ", ".join(f"{v:.3f}" for v in result["per_band"]), CONSISTENCY_WARN, hint,
    )
    return True


def clip_negative(block: np.ndarray, *, inplace: bool = True) -> tuple[np.ndarray, int, float]:
    """``block`` with its values below 0 set to 0 (in place when ``inplace`` and it is writable, else in a copy),
    the count of such values and the smallest value (0.0 when none was below 0). NaN stays NaN."""
    below = block < 0
    count = int(np.count_nonzero(below))
    if not count:
        return block, 0, 0.0
    low = float(block[below].min())
    if not (inplace and block.flags.writeable):
        block = np.array(block, copy=True)
    np.maximum(block, 0, out=block, where=below)
    return block, count, low


class ClipCounter:
    """Counts what :func:`clip_negative` clipped over the blocks of one output."""

    def __init__(self, *, inplace: bool = True) -> None:
        self.inplace = inplace
        self.count = 0
        self.values = 0
        self.minimum = 0.0

    def __call__(self, block: np.ndarray) -> np.ndarray:
        block, count, low = clip_negative(block, inplace=self.inplace)
        self.count += count
        self.values += int(block.size)
        self.minimum = min(self.minimum, low)
        return block

    def summary(self) -> dict[str, Any]:
        fraction = self.count / self.values if self.values else 0.0
        return {"clipped": self.count, "values": self.values, "fraction": fraction, "minimum": self.minimum}

    def log(self) -> None:
        if self.count:
            log.info("clipped %d of %d fused values (%.3g%%) below 0 to 0 (the lowest %.4g); --no-clip keeps them",
                     self.count, self.values, 100 * self.count / max(self.values, 1), self.minimum)
        else:
            log.info("no fused value was below 0")


def check_pair_response(
    lr_hsi: np.ndarray,
    hr_msi: np.ndarray,
    *,
    response: dict[str, Any] | None,
    model_config: dict[str, Any],
    normalization: Any,
    what: str = "the checkpoint",
) -> dict[str, Any] | None:
    """:func:`spectral_consistency` of a pair with a model's stored ``response`` (``{"matrix": ...}``), blur and
    phase (``model_config``: ``scale``, ``blur_size``, ``blur_sigma``, ``residual_phase``) and normalisation
    (a :class:`csakd.normalization.Normalization`), logged by :func:`warn_if_inconsistent`; None when the model
    stores no response (a reference state dict) or the shapes do not fit it."""
    if not response or "matrix" not in response:
        log.debug("%s stores no spectral response: the pair's spectral consistency is not checked", what)
        return None
    matrix = np.asarray(response["matrix"], dtype=np.float64)
    if matrix.shape != (hr_msi.shape[0], lr_hsi.shape[0]):
        return None
    f_hsi, f_msi = normalization.factors_numpy(np.asarray(lr_hsi, dtype=np.float32)[None])
    result = spectral_consistency(
        lr_hsi, hr_msi, matrix, scale=int(model_config["scale"]), phase=int(model_config.get("residual_phase", 0)),
        blur_size=int(model_config.get("blur_size", 9)), blur_sigma=float(model_config.get("blur_sigma", 2.0)),
        hsi_factor=float(np.ravel(f_hsi)[0]), msi_factor=float(np.ravel(f_msi)[0]),
    )
    result["warned"] = warn_if_inconsistent(result, what=what)
    return result
