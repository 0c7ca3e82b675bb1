"""Training configuration: typed dataclasses, the paper's recipe and csakd's default recipe."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from csakd.data.pairs import check_spectral_strength
from csakd.errors import InputError
from csakd.losses import LossWeights

Mode = Literal["cotrain", "offline", "teacher", "student"]
MODES = ("cotrain", "offline", "teacher", "student")
RECIPES = ("default", "paper")
SELECT_METRICS = ("psnr", "sam", "ergas")
DEFAULT_EPOCHS = 100  # without a budget or --epochs


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        mode: ``cotrain`` (online co-training of teacher and student: per batch a teacher step, then a
            student step distilled from the teacher's output of that step, computed before its update),
            ``offline`` (student distilled from a trained, frozen teacher), ``teacher`` (teacher alone),
            ``student`` (student alone, no distillation).
        recipe: ``paper`` or ``default``; see :func:`recipe_defaults`.
        epochs: passes over the training set (an epoch is ``samples_per_epoch`` crops). None (the default):
            with ``max_minutes``, the run is planned in steps to fill the budget (see
            :class:`~csakd.train.plan.Plan`); without it, 100 epochs.
        max_minutes: wall-clock budget, validations included; with ``epochs`` too, training stops at whichever
            comes first.
        val_count: in a run planned by its budget, how many validations (evenly spaced in steps; 10 = every
            10% of the run), besides the one of the untrained networks.
        batch_size, crop: batch and HR crop size (the LR crop is crop / scale).
        lr_teacher, lr_student, weight_decay: AdamW settings.
        schedule: ``paper`` (teacher cosine to 1e-10 over the epochs, student x0.9 every 100 epochs) or
            ``cosine`` (both: linear warm-up over the first ``warmup`` fraction, then cosine to 1% of the
            rate, following the larger of the step and time fractions of the run).
        train_snr_db: white noise on the training LR-HSI at this SNR (None: none); drawn anew for each
            forward pass (teacher and student separately); power per image or per batch (``noise_per_image``).
        mixed_alignment: train on a random mix of aligned LR-HSIs and ones shifted by up to
            ``max_shift`` LR pixels.
        spectral_augment: the strength of the spectral augmentation of simulated pairs (each crop's cube
            times a random brightness and a smooth random spectral curve before it is degraded; see
            :class:`~csakd.data.pairs.SimulatedPairs`); 0: none.
        val_every: validate every this many epochs (runs planned by epochs).
        select: the validation metric that picks the kept checkpoints: ``psnr`` (highest), ``sam`` or ``ergas``
            (lowest; ``sam`` is the paper's rule).
        keep_last: keep ``last.pt`` (weights and optimiser state, for ``--resume``) when the run ends by its
            budget or its epochs; an interrupted run always keeps it.
        amp: ``auto`` (bf16 autocast on CUDA, off on CPU), ``bf16``, ``fp16`` or ``off``.
        grad_clip: clip gradient norm (None: no clipping).
        skip_nonfinite: a step whose loss is NaN or Inf is skipped with a warning (stops after 20 in a row).
        samples_per_epoch: crops per epoch (None: one per training image).
        deterministic: use deterministic algorithms (for exact resume on the CPU).
        losses: the loss terms' weights.
        pixel_loss: the pixel and response-distillation terms' distance, ``smooth_l1`` (the paper's) or ``l1``.
    """

    mode: Mode = "cotrain"
    recipe: Literal["default", "paper"] = "default"
    epochs: int | None = None
    max_minutes: float | None = None
    val_count: int = 10
    batch_size: int = 8
    crop: int = 128
    lr_teacher: float = 5e-4
    lr_student: float = 5e-4
    weight_decay: float = 0.0
    schedule: Literal["paper", "cosine"] = "cosine"
    warmup: float = 0.02
    train_snr_db: float | None = None
    noise_per_image: bool = True
    mixed_alignment: bool = False
    max_shift: int = 3
    augment: bool = True
    spectral_augment: float = 0.0
    val_every: int = 1
    select: Literal["psnr", "sam", "ergas"] = "psnr"
    keep_last: bool = False
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    grad_clip: float | None = None
    skip_nonfinite: bool = True
    samples_per_epoch: int | None = None
    num_workers: int = 0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    teacher_checkpoint: str | None = None
    losses: LossWeights = field(default_factory=LossWeights)
    pixel_loss: Literal["smooth_l1", "l1"] = "smooth_l1"

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.recipe not in RECIPES:
            raise InputError(f"recipe {self.recipe!r}: expected one of {', '.join(RECIPES)}")
        if self.pixel_loss not in ("smooth_l1", "l1"):
            raise InputError(f"pixel_loss {self.pixel_loss!r}: expected smooth_l1 or l1")
        if self.select not in SELECT_METRICS:
            raise InputError(f"select {self.select!r}: expected one of {', '.join(SELECT_METRICS)}")
        for key in ("epochs", "batch_size", "crop", "val_every", "val_count"):
            if getattr(self, key) is not None and int(getattr(self, key)) < 1:
                raise InputError(f"{key}={getattr(self, key)}: expected a positive integer")
        for key in ("lr_teacher", "lr_student"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"{key}={v}: expected a finite positive learning rate")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"weight_decay={self.weight_decay}: expected a finite number >= 0")
        if self.num_workers < 0:
            raise InputError(f"num_workers={self.num_workers}: expected 0 or more")
        if self.train_snr_db is not None and not math.isfinite(self.train_snr_db):
            raise InputError(f"training SNR must be a finite number of dB, got {self.train_snr_db}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise InputError(f"grad_clip={self.grad_clip}: expected a finite positive gradient norm")
        check_spectral_strength(self.spectral_augment, "--spectral-augment")
        if self.max_shift < 0:
            raise InputError(f"max_shift={self.max_shift}: expected 0 or more LR pixels")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise InputError(f"max_minutes={self.max_minutes}: expected a positive number of minutes")
        if self.mode == "offline" and not self.teacher_checkpoint:
            raise InputError("offline distillation needs a trained teacher: pass --teacher-checkpoint FILE")

    @property
    def planned_by_budget(self) -> bool:
        """Whether the run is planned in steps to fill ``max_minutes`` (no ``epochs`` given)."""
        return self.epochs is None and self.max_minutes is not None

    @property
    def total_epochs(self) -> int:
        """The epochs of a run planned by epochs (:data:`DEFAULT_EPOCHS` when none were given)."""
        return DEFAULT_EPOCHS if self.epochs is None else int(self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown training settings {unknown}")
        values = dict(data)
        if isinstance(values.get("losses"), dict):
            values["losses"] = LossWeights(**values["losses"])
        return cls(**values)


def recipe_defaults(recipe: str) -> dict[str, Any]:
    """Settings a recipe fixes (explicit options given by the user override them).

    ``paper``: AdamW lr 1e-4, the paper's schedules, batch 8, crop 128, 35 dB training noise (batch-wide
    power, as the reference), validation every 2 epochs, 800 epochs, fp32 (tf32 on GPU), SmoothL1, checkpoints
    kept by validation SAM; networks with the reference's attention and no global residual.
    ``default``: lr 5e-4, warm-up (5% of the run) + cosine over the run, no training noise, bf16 on GPU, an L1
    pixel term, no feature distillation (with zero-initialised heads it trains the student's body towards the
    teacher's untrained features; measured to hold the student at its base), checkpoints kept by validation PSNR;
    networks with a residual over the ``regression`` base and
    normalised attention (see the README's training section for the measurements behind each).
    """
    if recipe == "paper":
        return {
            "lr_teacher": 1e-4, "lr_student": 1e-4, "schedule": "paper", "batch_size": 8, "crop": 128,
            "train_snr_db": 35.0, "noise_per_image": False, "val_every": 2, "epochs": 800, "amp": "off",
            "weight_decay": 0.0, "pixel_loss": "smooth_l1", "select": "sam",
        }
    if recipe == "default":
        return {"lr_teacher": 5e-4, "lr_student": 5e-4, "schedule": "cosine", "train_snr_db": None, "amp": "auto",
                "pixel_loss": "l1", "warmup": 0.05, "losses.feature_kd": 0.0}
    raise InputError(f"recipe {recipe!r}: expected one of {', '.join(RECIPES)}")


def apply_recipe(config: TrainConfig, explicit: set[str]) -> TrainConfig:
    """``config`` with the recipe's settings, except those the user set explicitly (a loss weight as
    ``losses.NAME``)."""
    chosen = {k: v for k, v in recipe_defaults(config.recipe).items() if k not in explicit}
    weights = {k.split(".", 1)[1]: chosen.pop(k) for k in list(chosen) if k.startswith("losses.")}
    losses = replace(config.losses, **weights) if weights else config.losses
    return replace(config, **chosen, losses=losses)
