"""Building a training run from options: data, degradation, model configs and device-sized defaults.

:func:`build_run` turns the options of ``csakd train`` (any object with the CLI's attribute names, e.g. the
parsed :class:`argparse.Namespace`) into a :class:`BuiltRun`: the :class:`~csakd.train.plan.RunSpec`, the
training and validation datasets, and the notes that say what was chosen for the user and why. The CLI only
parses and calls it; the trainer then plans the steps in the budget (:class:`~csakd.train.plan.Plan`).

Device-sized defaults: when the user names no preset, widths, blocks, crop or batch, a CPU run gets networks and
crops that take hundreds of steps in a half-hour budget (:data:`CPU_DEFAULTS`; the paper's teacher takes minutes
per step on two cores), a GPU run the paper's networks (:data:`GPU_DEFAULTS`). Every choice can be overridden.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from csakd.errors import InputError
from csakd.losses import LossWeights
from csakd.normalization import Normalization
from csakd.train.config import TrainConfig, apply_recipe
from csakd.train.plan import RunSpec

log = logging.getLogger(__name__)

TRAIN_OPTIONS = {  # option name -> TrainConfig field, for options a recipe or the device may set
    "mode": "mode", "recipe": "recipe", "epochs": "epochs", "max_minutes": "max_minutes",
    "batch_size": "batch_size", "crop": "crop", "lr_teacher": "lr_teacher", "lr_student": "lr_student",
    "weight_decay": "weight_decay", "schedule": "schedule", "train_snr": "train_snr_db",
    "mixed_alignment": "mixed_alignment", "max_shift": "max_shift", "val_every": "val_every", "amp": "amp",
    "grad_clip": "grad_clip", "samples_per_epoch": "samples_per_epoch", "workers": "num_workers",
    "seed": "seed", "deterministic": "deterministic", "device": "device",
    "teacher_checkpoint": "teacher_checkpoint", "select": "select", "keep_last": "keep_last",
    "val_count": "val_count", "warmup": "warmup", "pixel_loss": "pixel_loss",
    "spectral_augment": "spectral_augment",
}

#: What a CPU run trains when the user names no networks or crop: ``lite`` students and a ``lite-teacher``
#: of the same width (feature distillation needs equal widths), on 48x48 crops (a co-training step of 0.9 s on
#: two cores, 1.9 s at 64x64: at these budgets more steps beat larger crops).
CPU_DEFAULTS: dict[str, Any] = {"teacher_preset": "lite-teacher", "student_preset": "lite", "crop": 48}
#: Validation images are the centre crops of this size of the validation cubes (0: whole cubes): a fixed set whose
#: cost stays small beside the budget (the cave256-x4 protocol scores the same crops).
VAL_CROP = 256
#: The paper's networks and crop on a GPU.
GPU_DEFAULTS: dict[str, Any] = {"teacher_preset": "teacher", "student_preset": "student", "crop": 128}


@dataclass
class BuiltRun:
    """A run ready for :class:`~csakd.train.trainer.Trainer`: its spec, datasets and what was chosen."""

    spec: RunSpec
    train_set: Any
    val_set: Any
    notes: list[str] = field(default_factory=list)


def _opt(options: Any, name: str, default: Any = None) -> Any:
    value = getattr(options, name, default)
    return default if value is None else value


def device_defaults(device_name: str, options: Any) -> tuple[dict[str, Any], str | None]:
    """The presets and crop for ``device_name`` among those the user left unset, and a line saying why (or None).

    Each option is filled on its own (``--crop 32`` alone still gets the device's networks); ``--recipe paper``
    fixes the paper's networks and crop, so nothing is filled then.
    """
    if getattr(options, "recipe", None) == "paper":
        return {}, None
    from csakd.devices import resolve_device

    device = resolve_device(device_name)
    table = CPU_DEFAULTS if device.type == "cpu" else GPU_DEFAULTS
    chosen = {k: v for k, v in table.items() if getattr(options, k, None) is None}
    if not chosen:
        return {}, None
    what = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in chosen.items())
    if device.type == "cpu":
        why = (f"CPU defaults: {what} (one step of the paper's teacher takes minutes on a few cores; lite and "
               "lite-teacher take about a second on 48x48 crops, so a half-hour budget holds a thousand steps or "
               "more); --teacher-preset, --student-preset and --crop override them")
    else:
        why = f"{device.type.upper()} defaults: {what} (the paper's networks and crop)"
    return chosen, why


def _sized(options: Any) -> dict[str, Any]:
    """The sizing options with the device's defaults filled in where the user gave none."""
    chosen, _ = device_defaults(_opt(options, "device", "auto"), options)
    return {
        "teacher_preset": _opt(options, "teacher_preset", chosen.get("teacher_preset", "teacher")),
        "student_preset": _opt(options, "student_preset", chosen.get("student_preset", "student")),
        "crop": _opt(options, "crop", chosen.get("crop")),
    }


def train_config(options: Any) -> TrainConfig:
    """The :class:`TrainConfig` of ``options``: the recipe's settings under the ones given explicitly."""
    values = {field_: getattr(options, k) for k, field_ in TRAIN_OPTIONS.items()
              if getattr(options, k, None) is not None}
    sized = _sized(options)
    if sized["crop"] is not None and "crop" not in values:
        values["crop"] = sized["crop"]
    explicit = set(values)
    given = {f.name: getattr(options, f"w_{f.name}", None) for f in fields(LossWeights)}
    weights = LossWeights(**{k: float(v) for k, v in given.items() if v is not None})
    explicit |= {f"losses.{k}" for k, v in given.items() if v is not None}
    cfg = apply_recipe(TrainConfig(**values, losses=weights), explicit)
    cfg.validate()
    return cfg


def build_run(options: Any) -> BuiltRun:
    """Read the data, build the degradation and the model configs of a ``csakd train`` run (nothing written).

    Raises:
        InputError: bad options or data (before any work): an empty validation split, a crop larger than the
            smallest cube, an unknown preset, ...
    """
    from csakd.data import AvirisReferenceDataset
    from csakd.data.hr_cubes import build_degradation, list_cube_files, load_hr_cubes, split_files
    from csakd.data.pairs import PairedCrops, SimulatedPairs
    from csakd.models import preset_config

    cfg = train_config(options)
    notes: list[str] = []
    _, why = device_defaults(cfg.device, options)
    if why:
        notes.append(why)
    val_fraction = float(_opt(options, "val_fraction", 0.2))
    if not (0 <= val_fraction < 1):
        raise InputError(f"--val-fraction {val_fraction}: expected a number in [0, 1)")
    paper = cfg.recipe == "paper"
    model_overrides: dict[str, Any] = {}
    for key in ("fusion", "attention", "residual", "residual_scale", "feedback", "nf", "gc"):
        if getattr(options, key, None) is not None:
            model_overrides[key] = getattr(options, key)
    scale = int(_opt(options, "scale", 4))

    wavelengths: list[float] | None = None
    response = degradation = None
    deg: Any = None  # the simulated pairs' degradation
    first: dict[str, Any] | None = None  # the first ready-made pair
    if getattr(options, "aviris", None):
        msi_bands_opt: Any = int(_opt(options, "msi_bands", 4))
        train_src = AvirisReferenceDataset(options.aviris, "train", msi_bands=msi_bands_opt,
                                           shift="mixed" if cfg.mixed_alignment else 0, generator_seed=cfg.seed)
        val_src = AvirisReferenceDataset(options.aviris, "val", msi_bands=msi_bands_opt)
        train_set: Any = PairedCrops(train_src, scale, crop=cfg.crop, augment=cfg.augment,
                                     samples_per_epoch=cfg.samples_per_epoch, seed=cfg.seed)
        val_set: Any = val_src
        first = train_src[0]
        bands, msi_bands = first["hr_hsi"].shape[0], first["hr_msi"].shape[0]
        normalization = Normalization("none")
        data_info: dict[str, Any] = {"aviris": str(options.aviris), "msi_bands": msi_bands_opt}
    else:
        if not getattr(options, "data", None):
            raise InputError("training data needed: --data FOLDER (HR-HSI cubes) or --aviris ROOT")
        files = list_cube_files(options.data)
        if getattr(options, "val_data", None):
            train_files, val_files = files, list_cube_files(options.val_data)
        else:
            train_files, val_files = split_files(files, val_fraction)
            if val_fraction > 0 and not val_files:
                raise InputError(f"--val-fraction {val_fraction} leaves no validation cube among the "
                                 f"{len(files)} in {options.data}: give --val-data FOLDER or a larger fraction")
            if val_files:
                notes.append(f"validation: {len(val_files)} of the {len(files)} cubes of --data "
                             f"({', '.join(Path(f).name for f in val_files)}; every "
                             f"k-th by name, k = {round(1 / val_fraction)}), the other {len(train_files)} train")
        if not train_files:
            raise InputError(f"no training cubes left in {options.data} after the validation split")
        normalize = _opt(options, "normalize", "max")
        common = {"scale": scale, "crop": getattr(options, "center_crop", None), "normalize": normalize,
                  "wavelengths": _read_wavelengths(options), "variable": getattr(options, "variable", None),
                  "layout": _opt(options, "layout", "auto")}
        train_cubes = load_hr_cubes(train_files, **common)
        val_crop = int(_opt(options, "val_crop", VAL_CROP))
        if val_crop < 0 or val_crop % scale:
            raise InputError(f"--val-crop {val_crop}: expected 0 (whole cubes) or a positive multiple of the scale "
                             f"{scale}")
        val_cubes = load_hr_cubes(val_files, **common) if val_files else []
        if val_crop:
            val_cubes = [_centre(c, val_crop, scale, normalize) for c in val_cubes]
        deg = build_degradation(_degradation_config(options), train_cubes)
        smallest = min(min(c.data.shape[-2:]) for c in train_cubes)
        if cfg.crop > smallest:
            raise InputError(f"--crop {cfg.crop}: the smallest training cube is {smallest} pixels on a side, smaller "
                             f"than the crop {cfg.crop}; expected a crop of at most {smallest - smallest % scale}")
        max_shift = cfg.max_shift if cfg.mixed_alignment else 0
        train_set = SimulatedPairs([c.data for c in train_cubes], deg, crop=cfg.crop, augment=cfg.augment,
                                   samples_per_epoch=cfg.samples_per_epoch, max_shift=max_shift,
                                   spectral=cfg.spectral_augment, seed=cfg.seed)
        val_set = SimulatedPairs([c.data for c in val_cubes], deg) if val_cubes else None
        bands, msi_bands = train_cubes[0].data.shape[0], deg.response.matrix.shape[0]
        wl = train_cubes[0].wavelengths
        wavelengths = None if wl is None else [float(w) for w in wl]
        response, degradation = deg.response.to_dict(), deg.config.to_dict()
        normalization = Normalization("per_image") if normalize == "max" else (
            Normalization("none") if normalize == "none" else
            Normalization("fixed", float(normalize), float(normalize)))
        data_info = {"train": [str(f) for f in train_files], "val": [str(f) for f in val_files],
                     "center_crop": getattr(options, "center_crop", None), "normalize": normalize}
    if cfg.planned_by_budget and val_set is None:
        notes.append("no validation data: the last weights are kept")
    sized = _sized(options)
    shape = {"bands": int(bands), "msi_bands": int(msi_bands), "scale": scale}
    teacher_blocks = getattr(options, "teacher_blocks", None)
    student_blocks = getattr(options, "student_blocks", None)
    student_head = getattr(options, "student_head", None)
    teacher = preset_config(sized["teacher_preset"], paper=paper, **shape, **model_overrides,
                            **({"blocks": teacher_blocks} if teacher_blocks else {}))
    student = preset_config(sized["student_preset"], paper=paper, **shape, **model_overrides,
                            **({"blocks": student_blocks} if student_blocks else {}),
                            **({"head": student_head} if student_head else {}))
    base = base_degradation(options, deg, first, student.residual)
    teacher, student = replace(teacher, **base), replace(student, **base)
    spec = RunSpec(train=cfg, teacher=None if cfg.mode == "student" else teacher,
                   student=None if cfg.mode == "teacher" else student, normalization=normalization,
                   wavelengths=wavelengths, response=response, degradation=degradation, data=data_info)
    return BuiltRun(spec, train_set, val_set, notes)


def _centre(cube: Any, size: int, scale: int, normalize: str) -> Any:
    """``cube``'s centre ``size`` x ``size`` crop when it is larger, renormalised as a cube of that size would be
    (``--normalize max``: by the crop's own maximum, as ``csakd eval --center-crop`` scores it)."""
    import numpy as np

    from csakd.data.hr_cubes import center_crop

    if min(cube.data.shape[-2:]) <= size:
        return cube
    data = center_crop(cube.data, size, scale)
    peak = float(data.max()) if normalize == "max" else 1.0
    if peak > 0 and peak != 1.0:
        data = data / peak
    else:
        peak = 1.0
    return replace(cube, data=np.ascontiguousarray(data, dtype=np.float32), peak=cube.peak * peak)


def _read_wavelengths(options: Any) -> Any:
    if getattr(options, "wavelengths", None):
        from csakd.data.readers import read_wavelengths

        return read_wavelengths(options.wavelengths)
    return None


def _degradation_config(options: Any) -> Any:
    from csakd.degradation import DegradationConfig

    return DegradationConfig(scale=int(_opt(options, "scale", 4)), blur_size=int(_opt(options, "blur_size", 9)),
                             blur_sigma=float(_opt(options, "blur_sigma", 2.0)), psf=getattr(options, "psf", None),
                             phase=int(_opt(options, "phase", 0)), srf=getattr(options, "srf", None))


def base_degradation(options: Any, deg: Any, first_pair: dict[str, Any] | None, residual: str) -> dict[str, Any]:
    """The degradation the networks' residual base assumes: the decimation phase and the blur of the simulated
    pairs' ``deg`` (a PSF as the Gaussian of the same second moment); for ready-made pairs (``--aviris``) with
    a ``regression`` residual, the Gaussian estimated from ``first_pair`` at ``--phase``."""
    from csakd.models.detail import moment_sigma

    phase = int(_opt(options, "phase", 0))
    if deg is not None:
        if deg.config.psf is None:
            return {"residual_phase": deg.config.phase, "blur_size": deg.config.blur_size,
                    "blur_sigma": float(deg.config.blur_sigma)}
        size, sigma = int(max(deg.kernel.shape)) | 1, moment_sigma(deg.kernel)
        log.info("residual base: the PSF %s as a Gaussian of sigma %.3f HR pixels (%d taps)", deg.config.psf, sigma,
                 size)
        return {"residual_phase": deg.config.phase, "blur_size": size, "blur_sigma": sigma}
    if residual != "regression" or first_pair is None:
        return {"residual_phase": phase}
    import torch

    from csakd.degradation.estimate import estimate_gaussian_blur

    lr = torch.as_tensor(first_pair["lr_hsi"]).double()
    msi = torch.as_tensor(first_pair["hr_msi"]).double()
    sigma, kernel = estimate_gaussian_blur(lr, msi, int(_opt(options, "scale", 4)), phase)
    log.info("residual base: the LR-HSI's blur estimated from the first training pair: a Gaussian of sigma %.3f "
             "HR pixels (%d taps), phase %d", sigma, kernel.shape[0], phase)
    return {"residual_phase": phase, "blur_size": int(kernel.shape[0]) | 1, "blur_sigma": float(sigma)}
