"""Training: the co-training step, checkpoints that carry what loading needs, exact resume, offline mode."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from csakd.checkpoint import load_checkpoint, read_payload
from csakd.data.pairs import SimulatedPairs
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse
from csakd.errors import CheckpointError, CsakdError, InputError
from csakd.losses import LossWeights, student_loss, teacher_loss
from csakd.models import preset_config
from csakd.normalization import Normalization, to_network
from csakd.train.config import TrainConfig, apply_recipe
from csakd.train.plan import RunSpec, lr_factor
from csakd.train.trainer import Trainer

TINY = {"bands": 6, "msi_bands": 3, "scale": 4, "nf": 8, "gc": 4}


def datasets(seed: int = 0):
    rng = np.random.default_rng(seed)
    response = SpectralResponse.from_matrix(rng.random((3, 6)))
    deg = Degradation(DegradationConfig(scale=4, blur_size=5, blur_sigma=1.0), response)
    cubes = [rng.random((6, 32, 32)).astype(np.float32) for _ in range(2)]
    train = SimulatedPairs(cubes, deg, crop=16, augment=True, samples_per_epoch=8, seed=seed)
    val = SimulatedPairs([rng.random((6, 16, 16)).astype(np.float32)], deg)
    return train, val, deg


def spec(mode: str = "cotrain", **train: object) -> RunSpec:
    values: dict[str, object] = {"epochs": 2, "batch_size": 4, "crop": 16, "device": "cpu", "val_every": 1, **train}
    cfg = TrainConfig(mode=mode, **values)  # type: ignore[arg-type]
    return RunSpec(
        train=cfg,
        teacher=preset_config("teacher", blocks=(1, 1, 1, 1), **TINY) if mode != "student" else None,
        student=preset_config("student", blocks=(1, 1, 1, 1), **TINY) if mode != "teacher" else None,
        normalization=Normalization("per_image"),
        wavelengths=[400.0 + 50 * i for i in range(6)],
    )


def test_cotraining_step_matches_a_hand_written_step(tmp_path) -> None:
    train, val, _ = datasets()
    trainer = Trainer(spec(), train, val, tmp_path, progress=False)
    teacher, student = copy.deepcopy(trainer.teacher), copy.deepcopy(trainer.student)
    batch = next(iter(trainer._loader(0)))
    trainer._set_lr(0.5)
    trainer.train_step(batch)

    # by hand: the teacher's step, then the student's step distilled from the teacher's pre-update output
    lr, msi, hr = (to_network(batch[k]) for k in ("lr_hsi", "hr_msi", "hr_hsi"))
    w = LossWeights()
    opt_t = torch.optim.AdamW(teacher.parameters(), lr=trainer.opt["teacher"].param_groups[0]["lr"], weight_decay=0)
    opt_s = torch.optim.AdamW(student.parameters(), lr=trainer.opt["student"].param_groups[0]["lr"], weight_decay=0)
    t_out, t_feat = teacher(lr, msi)
    teacher_loss(t_out, hr, w)["loss"].backward()
    opt_t.step()
    s_out, s_feat = student(lr, msi)
    student_loss(s_out, s_feat, hr, t_out.detach(), t_feat.detach(), w)["loss"].backward()
    opt_s.step()
    for a, b in zip(teacher.parameters(), trainer.teacher.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(student.parameters(), trainer.student.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fit_writes_checkpoints_that_carry_everything(tmp_path) -> None:
    train, val, deg = datasets()
    s = spec()
    s.response = deg.response.to_dict()
    s.degradation = deg.config.to_dict()
    summary = Trainer(s, train, val, tmp_path, progress=False).fit()
    assert summary["epochs"] == 2 and summary["steps"] == 4
    for role in ("teacher", "student"):
        loaded = load_checkpoint(tmp_path / f"{role}.pt")
        assert loaded.role == role
        assert loaded.config.bands == 6 and loaded.config.msi_bands == 3 and loaded.config.scale == 4
        assert loaded.wavelengths == [400.0 + 50 * i for i in range(6)]
        assert loaded.normalization == Normalization("per_image")
        assert SpectralResponse.from_dict(loaded.response).matrix.shape == (3, 6)
        assert math.isfinite(loaded.metadata["metrics"]["sam"])
    # a finished run keeps what fusing needs, not the optimiser state (unless keep_last)
    assert not (tmp_path / "last.pt").exists() and (tmp_path / "metrics.jsonl").exists()
    assert summary["stopped"] == "epochs"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert any('"val/student"' in line for line in lines)
    kept = Trainer(spec(keep_last=True), *datasets()[:2], tmp_path / "kept", progress=False)
    kept.fit()
    assert read_payload(tmp_path / "kept" / "last.pt")["format"] == "csakd-train-state"


def test_resume_reaches_the_same_weights(tmp_path) -> None:
    train, val, _ = datasets()
    full = Trainer(spec(epochs=4, deterministic=True), train, val, tmp_path / "full", progress=False)
    full.fit()
    train, val, _ = datasets()
    half = Trainer(spec(epochs=4, deterministic=True), train, val, tmp_path / "half", progress=False)
    half.fit(stop_after_epochs=2)
    train, val, _ = datasets()
    resumed = Trainer(spec(epochs=4, deterministic=True), train, val, tmp_path / "half", resume=True,
                      progress=False)
    assert resumed.epoch == 2
    resumed.fit()
    torch.use_deterministic_algorithms(False)
    for role in ("teacher", "student"):
        for a, b in zip(getattr(full, role).parameters(), getattr(resumed, role).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_offline_distillation_keeps_the_teacher_frozen(tmp_path) -> None:
    train, val, _ = datasets()
    Trainer(spec("teacher"), train, val, tmp_path / "t", progress=False).fit()
    s = spec("offline", teacher_checkpoint=str(tmp_path / "t" / "teacher.pt"))
    trainer = Trainer(s, train, val, tmp_path / "s", progress=False)
    before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    trainer.fit()
    assert all(torch.equal(before[k], v) for k, v in trainer.teacher.state_dict().items())
    assert (tmp_path / "s" / "student.pt").exists() and not (tmp_path / "s" / "teacher.pt").exists()


def test_nonfinite_loss_is_skipped_then_stops(tmp_path) -> None:
    train, val, _ = datasets()
    trainer = Trainer(spec("student"), train, val, tmp_path, progress=False)
    batch = next(iter(trainer._loader(0)))
    batch["hr_hsi"] = batch["hr_hsi"].clone()
    batch["hr_hsi"][0, 0, 0, 0] = float("nan")
    before = [p.clone() for p in trainer.student.parameters()]
    trainer.train_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.student.parameters(), strict=True))
    trainer.nonfinite_in_a_row = 19
    with pytest.raises(CsakdError, match="training diverged"):
        trainer.train_step(batch)


def test_paper_schedules() -> None:
    cfg = apply_recipe(TrainConfig(recipe="paper"), set())
    assert cfg.lr_teacher == 1e-4 and cfg.train_snr_db == 35.0 and cfg.epochs == 800
    assert lr_factor(cfg, "teacher", 0, 0) == pytest.approx(1.0)
    assert lr_factor(cfg, "teacher", 400, 0) * 1e-4 == pytest.approx(0.5e-4, rel=1e-5)
    assert lr_factor(cfg, "student", 99, 0) == 1.0 and lr_factor(cfg, "student", 250, 0) == pytest.approx(0.81)
    explicit = apply_recipe(TrainConfig(recipe="paper", lr_teacher=3e-4), {"lr_teacher"})
    assert explicit.lr_teacher == 3e-4


def test_bad_training_settings(tmp_path) -> None:
    train, val, _ = datasets()
    with pytest.raises(InputError, match="teacher-checkpoint"):
        Trainer(spec("offline"), train, val, tmp_path, progress=False)
    with pytest.raises(InputError, match="no training state"):
        Trainer(spec(), train, val, tmp_path / "empty", resume=True, progress=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load"):
        read_payload(bad)


# ---------------------------------------------------------------------------------------------- planning
def planned_spec(minutes: float, **train: object) -> RunSpec:
    s = spec(**train)
    s.train.epochs = None
    s.train.max_minutes = minutes
    return s


def test_plan_derives_the_steps_from_the_timed_steps_and_the_validations() -> None:
    from csakd.train.plan import Plan

    plan = Plan.make(5, step_seconds=0.5, timed=4, val_seconds=2.0, save_seconds=0.5, seconds_left=100.0,
                     val_count=10, has_val=True)
    # 98 s less 10 x (2 + 0.5) s leaves 73 s: 146 steps of 0.5 s after the 5 done
    assert plan.total_steps == 5 + 146 and plan.interval == math.ceil(151 / 10)
    no_val = Plan.make(0, 1.0, 3, 2.0, 0.0, 50.0, 10, has_val=False)
    assert no_val.total_steps == 49 and no_val.val_count == 1 and no_val.interval == 49
    assert "steps per minute" in plan.describe(100.0) and "151 steps" in plan.describe(100.0)


class SlowPairs(torch.utils.data.Dataset):
    """A dataset whose every sample costs ``delay`` seconds (a slow step whatever the network)."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __getitem__(self, i: int):
        import time

        time.sleep(self.delay)
        return self.inner[i]


@pytest.mark.parametrize("delay", [0.0, 0.25])
def test_a_planned_run_keeps_its_budget(tmp_path, delay: float) -> None:
    import time

    train, val, _ = datasets()
    budget = 15.0  # seconds
    trainer = Trainer(planned_spec(budget / 60, mode="student"), SlowPairs(train, delay), SlowPairs(val, delay),
                      tmp_path, progress=False)
    tick = time.monotonic()
    summary = trainer.fit()
    wall = time.monotonic() - tick
    assert wall <= budget * 1.05, (wall, summary)
    assert summary["stopped"] in ("budget", "steps") and summary["plan"]["total_steps"] >= summary["steps"] > 3
    # validated at step 0, then about val_count times, evenly
    vals = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"val/student"' in line]
    assert 3 <= len(vals) <= 11


def test_planned_runs_read_the_epoch_loops_samples(tmp_path) -> None:
    """The planned loop's sample stream is the epoch loop's samples, pass after pass."""
    from csakd.train.plan import SampleStream

    train, val, _ = datasets()
    trainer = Trainer(spec("student"), train, val, tmp_path, progress=False)
    stream = SampleStream(train, trainer._epoch_order)
    for epoch in (0, 1):
        batches = list(trainer._loader(epoch))
        flat = torch.cat([b["hr_hsi"] for b in batches])
        from_stream = torch.stack([stream[epoch * len(train) + j]["hr_hsi"] for j in range(len(train))])
        torch.testing.assert_close(flat, from_stream, rtol=0, atol=0)


def test_a_budget_too_short_for_one_step_is_refused(tmp_path) -> None:
    train, val, _ = datasets()
    trainer = Trainer(planned_spec(0.001, mode="student"), SlowPairs(train, 0.2), val, tmp_path, progress=False)
    with pytest.raises(InputError, match=r"--max-minutes 0.001 is too short: "
                       r"(one training step took|the budget ran out before the first training step)"):
        trainer.fit()


@pytest.mark.parametrize("select", ["psnr", "sam", "ergas"])
def test_the_selection_rule_keeps_the_best_by_its_metric(tmp_path, select: str) -> None:
    train, val, _ = datasets()
    trainer = Trainer(spec("student", epochs=3, select=select), train, val, tmp_path, progress=False)
    trainer.fit()
    curve = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if '"val/student"' in line]
    values = [row[select] for row in curve]
    best = max(values) if select == "psnr" else min(values)
    kept = json.loads((tmp_path / "student_metrics.json").read_text())
    assert kept[select] == pytest.approx(best) and kept["step"] == curve[values.index(best)]["step"]


def test_an_unknown_selection_metric_is_refused() -> None:
    with pytest.raises(InputError, match="select 'ssim': expected one of psnr, sam, ergas"):
        TrainConfig(select="ssim").validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("strength", [-0.1, 2.5, float("nan")])
def test_a_spectral_augmentation_out_of_range_is_refused(strength: float) -> None:
    with pytest.raises(InputError, match=r"--spectral-augment .*: expected a strength in \[0, 2\] \(0: none\)"):
        TrainConfig(spectral_augment=strength).validate()


def test_the_summary_says_what_training_gained_over_the_base(tmp_path) -> None:
    from csakd.cli import training_report

    train, val, _ = datasets()
    summary = Trainer(spec("student", epochs=2), train, val, tmp_path, progress=False).fit()
    base, best = summary["base"]["student"], summary["best"]["student"]
    gain = summary["gains"]["student"]
    assert gain["psnr"] == pytest.approx(best["psnr"] - base["psnr"]) and gain["step"] == best["step"]
    lines = training_report(summary, "psnr")
    assert lines[0].startswith(f"training ended after {summary['steps']} steps") and "epochs" in lines[0]
    if best["step"] == 0:
        assert "this is its untrained base" in lines[1]
    else:
        assert f"{gain['psnr']:+.2f} dB" in lines[1]
    fake = dict(summary, gains={"student": dict(gain, step=0)}, best={"student": dict(best, step=0)})
    assert "this is its untrained base: training did not improve on it" in training_report(fake, "psnr")[1]


def test_the_plan_follows_steps_that_run_faster_or_slower_than_timed() -> None:
    from csakd.train.plan import Plan

    plan = Plan.make(0, step_seconds=1.0, timed=3, val_seconds=1.0, save_seconds=0.0, seconds_left=100.0,
                     val_count=4, has_val=True)
    assert plan.total_steps == 94 and plan.interval == 24
    plan.replan(24, 1, step_seconds=0.5, val_seconds=1.0, seconds_left=70.0)  # twice as fast as timed
    # 70 s less 2% and 4 validations (this one and 3 more) leaves 64.6 s: 129 steps of 0.5 s, over 3 intervals
    assert plan.total_steps == 24 + 129 and plan.step_seconds == 0.5 and plan.interval == 43
    plan.replan(67, 2, step_seconds=2.0, val_seconds=1.0, seconds_left=20.0)
    assert plan.total_steps == 67 + int((20 * 0.98 - 3 * 1.0) / 2.0) and plan.interval == 4
    plan.replan(75, 4, step_seconds=2.0, val_seconds=1.0, seconds_left=5.0)  # the last planned validation
    assert plan.total_steps == 75
