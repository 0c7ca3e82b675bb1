"""Fit a fusion network to one real scene that has no ground truth, then fuse it (``csakd fit-scene``).

A real pair (LR-HSI ``Y``, HR-MSI ``Z``) comes without the HR-HSI ``X`` a network is usually trained on.
This module fits a network to the scene itself, by Wald's protocol ("zero-shot" fusion):

1. **Normalise.** ``Y`` and ``Z`` are in different units; each is divided by its own peak (its maximum,
   unless given), recorded as a ``fixed`` :class:`~csakd.normalization.Normalization` in the checkpoint.
2. **Estimate the degradation.** The spatial model ``S(x) = decimate(blur(x, k), s, phase)`` of
   :mod:`csakd.degradation` links the grids; since ``S(Z) = R S(X) = R Y``, the Gaussian blur ``k`` (and the
   decimation phase, tried 0..s-1) is the one whose ``S(Z)`` is best explained linearly by ``Y``
   (:func:`~csakd.degradation.estimate.estimate_gaussian_blur`), and the spectral response ``R`` comes from
   non-negative least squares of ``S(Z)`` on ``Y`` (:func:`~csakd.degradation.estimate.estimate_response`, as
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

import copy
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csakd.baselines import get_baseline
from csakd.data import Cube, read_cube, write_cube
from csakd.degradation import DegradationConfig, SpectralResponse, upsample_in_phase
from csakd.degradation.estimate import degrade
from csakd.errors import InputError
from csakd.files import check_outputs, check_result, write_json
from csakd.fit.base import base_settings
from csakd.fit.data import WaldCrops
from csakd.fit.estimates import (
    SceneEstimates,
    _warn_about_fit,
    check_msi_wavelengths,
    check_same_scene,
    estimate_scene,
    spatial_consistency,
    spectral_consistency,
)
from csakd.fit.fullscale import decide, fit_full_scale, heldout_consistency
from csakd.fit.options import (
    MIN_LR_SIDE,
    FitOptions,
    _check_out,
    _check_report_dir,
    _holdout_columns,
    _peak,
    _t,
    _training_budget,
    command_line,
    grid_ratio,
)
from csakd.metrics import compute_metrics

log = logging.getLogger("csakd.fit")

__all__ = ["FitSceneResult", "fit_scene"]


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
    from csakd.checkpoint import load_checkpoint, model_payload, save_payload
    from csakd.devices import resolve_device
    from csakd.envinfo import environment
    from csakd.inference.geo import apply_nodata, check_footprint, output_geo, output_nodata, prepare_nodata
    from csakd.inference.tiled import fuse_tiled_arrays
    from csakd.models import DTSNet, preset_config
    from csakd.normalization import Normalization
    from csakd.train.config import TrainConfig
    from csakd.train.plan import RunSpec
    from csakd.train.trainer import Trainer

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
    check_msi_wavelengths(msi_cube.wavelengths, wavelengths)
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
    # feedback off: the fits of benchmarks/fit_scene_truth.py were measured without it (not yet with it)
    overrides = {k: v for k, v in opts.model_overrides.items() if v is not None}
    model_cfg = preset_config(opts.preset, bands=bands, msi_bands=msi_bands, scale=scale,
                              **{"feedback": False, **overrides})
    timings["read_and_check"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ normalise and estimate
    t0 = time.perf_counter()
    hsi_scale = _peak(lr_cube.data, opts.hsi_scale, "LR-HSI")
    msi_scale = _peak(msi_cube.data, opts.msi_scale, "HR-MSI")
    lr01 = _t(lr_cube.data / hsi_scale)
    msi01 = _t(msi_cube.data / msi_scale)
    est = estimate_scene(lr01, msi01, scale, phase=opts.phase, sigma=opts.blur_sigma, response=given_response,
                         psf=opts.psf, valid=_valid_lr(masks),
                         response_source=str(opts.response) if given_response is not None
                         else "estimated (non-negative, with the PSF and offsets)")
    timings["estimate"] = time.perf_counter() - t0
    log.info("fit-scene: x%d, phase %d, blur sigma %.3f HR pixels (residual %.3g); response residuals %s",
             scale, est.phase, est.sigma, est.blur_residual, [round(r, 4) for r in est.response_residual])
    check_same_scene(est)
    _warn_about_fit(est, msi01)
    kernel = torch.from_numpy(est.kernel)
    msi_corr = msi01 - torch.as_tensor(est.offsets)[:, None, None]  # R X = Z - o, for methods that use R
    base_info = base_settings(lr01, msi01, valid=_valid_lr(masks)) if opts.base == "denoised" else None
    if base_info is not None:
        log.info("fit-scene: denoised base: detail ridge %.3g, output subspace of %s dimensions", base_info.report[
            "detail_eps"], base_info.report["subspace_dimension"] or "all")
    msi_lr = degrade(msi01, kernel, scale, est.phase)  # S(Z): the LR-MSI on the LR-HSI grid
    llr = degrade(lr01, kernel, scale, est.phase)  # S(Y): the LLR-HSI

    # ------------------------------------------------------------------ fit
    t0 = time.perf_counter()
    model_cfg = replace(model_cfg, residual_phase=est.phase, blur_size=int(est.kernel.shape[0]), blur_sigma=est.sigma,
                        blur_kernel=tuple(tuple(float(v) for v in row) for row in est.kernel)
                        if est.kernel_source == "joint" else None, **(base_info.overrides if base_info else {}))
    deg_cfg = DegradationConfig(scale=scale, blur_size=int(est.kernel.shape[0]), blur_sigma=est.sigma,
                                phase=est.phase)
    per_epoch, epochs = _training_budget(opts)
    train_set = WaldCrops(lr01[:, :, :train_w].numpy(), msi_lr[:, :, :train_w].numpy(), deg_cfg, crop=crop,
                          kernel=est.kernel,
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
    model_dir.mkdir(parents=True, exist_ok=True)
    payload_kw: dict[str, Any] = {
        "role": "student", "normalization": Normalization("fixed", hsi_scale, msi_scale),
        "wavelengths": spec.wavelengths, "response": spec.response, "degradation": spec.degradation,
    }
    torch.manual_seed(opts.seed)
    base_model = DTSNet(model_cfg)  # the head's last convolution is zero: the network is its residual base
    save_payload(model_dir / "base.pt", model_payload(base_model, **payload_kw))
    minutes = opts.minutes / 2 if (opts.fit == "both" and opts.minutes is not None) else opts.minutes
    summary: dict[str, Any] = {"mode": opts.fit}
    fitted: torch.nn.Module = base_model
    if opts.fit in ("reduced", "both"):
        spec = replace(spec, train=replace(train_cfg, max_minutes=minutes))
        trainer = Trainer(spec, train_set, [val_item], model_dir, progress=opts.progress)  # type: ignore[arg-type]
        try:
            summary["reduced"] = trainer.fit()
        finally:
            trainer.close()
        summary.update({k: v for k, v in summary["reduced"].items() if k not in summary})
        if opts.fit == "both":
            (model_dir / "student.pt").replace(model_dir / "reduced.pt")
        fitted = load_checkpoint(model_dir / ("reduced.pt" if opts.fit == "both" else "student.pt")).model
    if opts.fit in ("full", "both"):
        start = copy.deepcopy(fitted)
        full = fit_full_scale(start, lr01, msi01, est, train_w=train_w, v0=v0, device=device, minutes=minutes,
                              steps=opts.steps, batch_size=opts.batch_size, crop=min(crop, 32),
                              learning_rate=opts.full_learning_rate, validate_every=opts.steps_per_epoch,
                              seed=opts.seed, start_label="base" if opts.fit == "full" else "reduced-scale fit")
        summary["full"] = full.summary
        summary["steps"] = summary.get("steps", 0) + full.summary["steps"]
        save_payload(model_dir / "student.pt", model_payload(full.model, **payload_kw, step=full.summary["steps"]))
    timings["train"] = time.perf_counter() - t0
    fit_ckpt = model_dir / "student.pt"
    loaded = load_checkpoint(fit_ckpt)
    base_loaded = load_checkpoint(model_dir / "base.pt")

    # ------------------------------------------------------------------ Wald validation
    t0 = time.perf_counter()
    wald = _wald_metrics(loaded.model, device, llr, msi_lr, lr01, est, opts.baselines, v0, hsi_scale,
                         base=base_loaded.model)
    timings["wald_validation"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ full-scale fusion and the decision
    t0 = time.perf_counter()
    fused = fuse_tiled_arrays(loaded, lr_cube.data, msi_cube.data, tile=opts.tile, device=str(device))
    fused_base = fuse_tiled_arrays(base_loaded, lr_cube.data, msi_cube.data, tile=opts.tile, device=str(device))
    assert fused is not None and fused_base is not None
    timings["fuse"] = time.perf_counter() - t0
    from csakd.inference.fuse import nonfinite_weights

    check_result(fused, "the fitted network's fused image", target=out, cause=lambda: (
        f"the fitted network has {nonfinite_weights(loaded.model)} non-finite weight(s): its training diverged "
        "(try a lower --learning-rate)" if nonfinite_weights(loaded.model) else
        "the inputs and the fitted weights are finite, so the network overflowed"))
    check_result(fused_base, "the residual base's image", target=out,
                 cause="the inputs are finite, so the base's regression overflowed")
    decision = decide(_t(fused / hsi_scale), _t(fused_base / hsi_scale), lr01, msi01, est, v0, force=opts.force_fit)
    for line in decision["lines"]:
        (log.info if decision["written"] == "fitted" else log.warning)("fit-scene: %s", line)
    checkpoint = fit_ckpt if decision["written"] == "fitted" else model_dir / "base.pt"
    chosen = fused if decision["written"] == "fitted" else fused_base

    # ------------------------------------------------------------------ baselines and consistency
    t0 = time.perf_counter()
    results: dict[str, torch.Tensor] = {"fitted": _t(fused / hsi_scale), "base": _t(fused_base / hsi_scale),
                                        "bicubic": upsample_in_phase(lr01, scale, est.phase)}
    for name in opts.baselines:
        if name == "bicubic":
            continue
        tb = time.perf_counter()
        results[name] = _t(get_baseline(name)(lr01, msi_corr, scale, response=est.response, phase=est.phase,
                                               blur_kernel=est.kernel).numpy())
        check_result(results[name].numpy(), f"the output of the baseline {name}", target=out,
                     cause=f"{name} failed numerically on this pair (its inputs are finite); leave it out with "
                           "--baseline none or choose another")
        timings[f"baseline_{name}"] = time.perf_counter() - tb
    timings["baselines"] = time.perf_counter() - t0
    # the fused image is written only once every result is known to be finite
    t0 = time.perf_counter()
    geo = output_geo(msi_cube.geo, masks)
    written = np.array(chosen, copy=True) if masks.active else chosen
    apply_nodata(written, masks.hr_window(slice(0, msi_cube.height), slice(0, msi_cube.width)), output_nodata(geo))
    write_cube(out, Cube(written, wavelengths=wavelengths, band_names=lr_cube.band_names, geo=geo,
                         source=str(lr_path)), overwrite=opts.overwrite)
    del written
    timings["write"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    spectral = {name: spectral_consistency(x, lr01, est.kernel, scale, est.phase, units=hsi_scale)
                for name, x in results.items()}
    spatial = {name: spatial_consistency(x, msi01, est.response, units=msi_scale, offset=est.offsets)
               for name, x in results.items()}
    timings["metrics"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ figures and report
    figures: list[Path] = []
    t0 = time.perf_counter()
    if opts.figures:
        from csakd.fit.figures import write_figures

        figures = write_figures(rdir, results, lr01, msi01, est, wavelengths, hsi_scale, msi_scale, wald,
                                 model_dir / "metrics.jsonl")
    timings["figures"] = time.perf_counter() - t0
    wald.pop("_predictions", None)
    timings["total"] = time.perf_counter() - t_start
    report: dict[str, Any] = {
        "command": opts.command or command_line(lr_path, msi_path, out, rdir, opts),
        "options": opts.to_dict(),
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
            "preset": opts.preset, "base": base_info.report if base_info else {"kind": "plain"},
            "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
            "crop_lr_pixels": crop, "holdout_columns": hold, "budget": {"minutes": opts.minutes, "steps": opts.steps},
            "baselines": list(opts.baselines), "tile": opts.tile, "device": str(device),
            "threads": torch.get_num_threads(), "seed": opts.seed,
        },
        "training": summary,
        "decision": decision,
        "metrics": {
            "heldout_consistency": {name: heldout_consistency(x, lr01, msi01, est, v0) for name, x in results.items()},
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
        "outputs": {"fused": str(out), "written": decision["written"], "checkpoint": str(checkpoint),
                    "fitted_checkpoint": str(fit_ckpt), "base_checkpoint": str(model_dir / "base.pt"),
                    "figures": [p.name for p in figures]},
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
        "environment": environment(),
    }
    write_json(rdir / "report.json", report)
    return FitSceneResult(out=out, report_dir=rdir, checkpoint=checkpoint, report=report, figures=figures,
                          estimates=est)


def _valid_lr(masks: Any) -> np.ndarray | None:
    """LR pixels fit for estimating the degradation: neither they nor any HR pixel of their cell (or of the
    neighbouring cells, which the blur reaches) is nodata; None when neither input declares nodata."""
    if not masks.active:
        return None
    s = int(masks.scale)
    bad = np.zeros_like(masks.lr if masks.lr is not None else masks.msi[::s, ::s], dtype=bool)
    if masks.lr is not None:
        bad |= masks.lr
    if masks.msi is not None:
        h, w = bad.shape
        bad |= masks.msi[: h * s, : w * s].reshape(h, s, w, s).any(axis=(1, 3))
    grown = bad.copy()
    grown[1:] |= bad[:-1]
    grown[:-1] |= bad[1:]
    grown[:, 1:] |= bad[:, :-1]
    grown[:, :-1] |= bad[:, 1:]
    return ~grown


@torch.no_grad()
def _wald_metrics(
    model: torch.nn.Module, device: torch.device, llr: torch.Tensor, msi_lr: torch.Tensor, lr01: torch.Tensor,
    est: SceneEstimates, baselines: Sequence[str], v0: int, units: float, base: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Metrics of the fitted network, its base, bicubic and the baselines one scale down (the LR-HSI as the
    truth)."""
    from csakd.normalization import from_network, to_network

    s = est.scale
    off = torch.as_tensor(est.offsets)[:, None, None]
    model = model.to(device).eval()
    out, _ = model(to_network(llr.float()[None].to(device)), to_network(msi_lr.float()[None].to(device)))
    preds: dict[str, torch.Tensor] = {"fitted": from_network(out.float())[0].cpu().double()}
    if base is not None:
        base = base.to(device).eval()
        out, _ = base(to_network(llr.float()[None].to(device)), to_network(msi_lr.float()[None].to(device)))
        preds["base"] = from_network(out.float())[0].cpu().double()
    preds["bicubic"] = upsample_in_phase(llr, s, est.phase)
    for name in baselines:
        if name != "bicubic":
            preds[name] = _t(get_baseline(name)(llr, msi_lr - off, s, response=est.response, phase=est.phase,
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


