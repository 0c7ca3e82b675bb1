"""What a run trains and how it spends its budget: the run's spec (:class:`RunSpec`), the learning-rate schedule
(:func:`lr_factor`), the plan of a run bounded by time (:class:`Plan`) and the training set as one stream of
samples (:class:`SampleStream`), which :class:`~csakd.train.trainer.Trainer` follows."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from csakd.models import ModelConfig
from csakd.normalization import Normalization
from csakd.train.config import TrainConfig

Batch = dict[str, torch.Tensor]


@dataclass
class RunSpec:
    """What a run trains and on what: model configs, training settings, and data facts for checkpoints."""

    train: TrainConfig
    teacher: ModelConfig | None = None
    student: ModelConfig | None = None
    normalization: Normalization = field(default_factory=lambda: Normalization("per_image"))
    wavelengths: list[float] | None = None
    response: dict[str, Any] | None = None
    degradation: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": self.train.to_dict(),
            "teacher": None if self.teacher is None else self.teacher.to_dict(),
            "student": None if self.student is None else self.student.to_dict(),
            "normalization": self.normalization.to_dict(),
            "wavelengths": self.wavelengths,
            "response": self.response,
            "degradation": self.degradation,
            "data": self.data,
        }



def lr_factor(cfg: TrainConfig, role: str, epoch: int, progress: float) -> float:
    """The learning-rate multiplier at ``epoch`` (0-based) and run ``progress`` in [0, 1]."""
    if cfg.schedule == "paper":
        if role == "teacher":
            base = cfg.lr_teacher
            eta_min = 1e-10
            return (eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / cfg.total_epochs)) / 2) / base
        return 0.9 ** (epoch // 100)
    if progress < cfg.warmup:
        return max(progress / cfg.warmup, 1e-3)
    t = (progress - cfg.warmup) / max(1e-9, 1 - cfg.warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@dataclass
class Plan:
    """How a run planned by its budget spends it: the steps that fit, and the validation interval.

    ``total_steps`` is derived from the timed first steps (``step_seconds``, the median of ``timed``) and the
    time left after ``val_count`` validations and state saves (``val_seconds``, ``save_seconds`` each), less a
    margin of 2%; validation runs every ``interval`` steps and at the end. The learning-rate schedule follows
    the fraction of the budget used, so it ends at the budget's end whatever the steps cost.
    """

    total_steps: int
    interval: int
    step_seconds: float
    timed: int
    val_seconds: float
    save_seconds: float
    val_count: int

    @classmethod
    def make(cls, done: int, step_seconds: float, timed: int, val_seconds: float, save_seconds: float,
             seconds_left: float, val_count: int, *, has_val: bool) -> Plan:
        count = val_count if has_val else 1
        val = val_seconds if has_val else 0.0
        train_seconds = seconds_left * 0.98 - count * (val + save_seconds)
        total = done + max(0, int(train_seconds / max(step_seconds, 1e-6)))
        interval = max(1, math.ceil(total / count))
        return cls(total, interval, step_seconds, timed, val, save_seconds, count)

    def replan(self, done: int, validated: int, step_seconds: float, val_seconds: float, seconds_left: float) -> None:
        """After the ``validated``-th interval (its validation still to come): the steps that fit in
        ``seconds_left`` at the measured ``step_seconds``, spread over the validations left."""
        after = max(0, self.val_count - validated)  # validations after this interval's
        if after == 0:  # this interval's validation is the last one planned: the run ends with it
            self.total_steps = done
            return
        train_seconds = seconds_left * 0.98 - (1 + after) * (val_seconds + self.save_seconds)
        self.total_steps = done + max(0, int(train_seconds / max(step_seconds, 1e-6)))
        self.interval = max(1, math.ceil((self.total_steps - done) / max(after, 1)))
        self.step_seconds = step_seconds

    def describe(self, budget_seconds: float) -> str:
        per_minute = 60 / max(self.step_seconds, 1e-9)
        return (f"plan: {self.step_seconds:.3g} s per step (median of {self.timed} timed steps), {per_minute:.0f} "
                f"steps per minute -> {self.total_steps} steps in {budget_seconds / 60:.3g} min; validation every "
                f"{self.interval} steps ({self.val_count} times, {self.val_seconds:.1f} s each); the learning "
                "rate's cosine ends at the budget's end")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SampleStream(Dataset[Batch]):
    """The training set as one stream: sample ``g`` is item ``order(g // N)[g % N]`` of pass ``g // N``."""

    def __init__(self, data: Dataset[Batch], order: Any) -> None:
        self.data, self.order, self.n = data, order, len(data)  # type: ignore[arg-type]
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, g: int) -> Batch:
        epoch, j = divmod(int(g), self.n)
        if epoch not in self._orders:
            self._orders = {epoch: self.order(epoch)}
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)
        return self.data[self._orders[epoch][j]]

