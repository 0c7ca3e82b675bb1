"""Data-parallel training: 2 CPU processes (gloo) agree with one process on the same global batch.

One spawn of two worker processes (torchrun's environment variables set by hand, so the trainer takes the
same path as under ``torchrun``) runs, in one process group: one co-training step on a global batch of 8
(2 x 4), a step whose loss is NaN on rank 1 only, one epoch of ``fit`` without training noise, one epoch with
noise (to resume on one process) and one epoch of offline distillation. The tests compare what rank 0 wrote
with single-process runs in this process.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from csakd.checkpoint import read_payload
from csakd.data.pairs import SimulatedPairs
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse
from csakd.errors import InputError
from csakd.losses import student_loss
from csakd.models import DTSNet, preset_config
from csakd.normalization import Normalization, to_network
from csakd.train.config import TrainConfig
from csakd.train.distributed import (
    DistContext,
    check_global_batch,
    context_from_env,
    device_for_rank,
    rank_noise_seed,
    shard_order,
)
from csakd.train.trainer import RunSpec, Trainer

TINY = {"bands": 6, "msi_bands": 3, "scale": 4, "nf": 8, "gc": 4}
WORLD = 2
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def datasets() -> tuple[SimulatedPairs, SimulatedPairs]:
    """16 training crops per epoch (two global batches of 8) and 3 validation images (uneven over 2 ranks)."""
    rng = np.random.default_rng(0)
    response = SpectralResponse.from_matrix(rng.random((3, 6)))
    deg = Degradation(DegradationConfig(scale=4, blur_size=5, blur_sigma=1.0), response)
    cubes = [rng.random((6, 32, 32)).astype(np.float32) for _ in range(3)]
    train = SimulatedPairs(cubes, deg, crop=16, augment=True, samples_per_epoch=16, seed=0)
    val = SimulatedPairs([rng.random((6, 16, 16)).astype(np.float32) for _ in range(3)], deg)
    return train, val


def run_spec(**train: Any) -> RunSpec:
    values: dict[str, Any] = {"epochs": 2, "batch_size": 8, "crop": 16, "device": "cpu", "val_every": 1,
                              "keep_last": True, **train}  # the tests compare the last states
    return RunSpec(
        train=TrainConfig(mode="cotrain", **values),
        teacher=preset_config("teacher", blocks=(1, 1, 1, 1), **TINY),
        student=preset_config("student", blocks=(1, 1, 1, 1), **TINY),
        normalization=Normalization("per_image"),
    )


def weights(trainer: Trainer) -> dict[str, dict[str, torch.Tensor]]:
    return {role: {k: v.detach().clone() for k, v in net.state_dict().items()} for role, net in trainer.trainable()}


# ------------------------------------------------------------------------------------- the spawned workers
def _worker(rank: int, port: int, out: str) -> None:
    """One of the 2 ranks: a step, a noiseless epoch, a noisy epoch; rank 0 writes what the tests compare."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    root = Path(out)
    train, val = datasets()
    trainer = Trainer(run_spec(), train, val, root / "step", progress=False)  # joins (and owns) the group
    try:
        batch = next(iter(trainer._loader(0)))
        trainer._set_lr(0.5)
        trainer.train_step(batch)
        after_step = weights(trainer)
        # a loss that is NaN on rank 1 only: both ranks must skip the step (else DDP would hang), then go on
        bad = {k: v.clone() for k, v in batch.items()}
        if rank == 1:
            bad["hr_hsi"][0, 0, 0, 0] = float("nan")
        trainer.train_step(bad)
        skipped = all(torch.equal(v, weights(trainer)[r][k]) for r in after_step for k, v in after_step[r].items())
        trainer.train_step(batch)
        moved = any(not torch.equal(v, weights(trainer)[r][k]) for r in after_step for k, v in after_step[r].items())
        shards: list[Any] = [None] * WORLD
        dist.all_gather_object(shards, {"batch": batch, "skipped": skipped, "moved": moved})
        if rank == 0:
            torch.save({"weights": after_step, "ranks": shards}, root / "step.pt")

        for name, snr in (("fit", None), ("noisy", 35.0)):
            train, val = datasets()
            run = Trainer(run_spec(train_snr_db=snr), train, val, root / name, progress=False)
            summary = run.fit(stop_after_epochs=1)
            if rank == 0:
                (root / f"{name}.json").write_text(json.dumps(summary))

        # a run planned by its budget: both ranks time, plan and validate alike (an uneven validation split and
        # a deadline checked per image must not leave one rank waiting in a collective)
        train, val = datasets()
        planned = run_spec(epochs=None, max_minutes=0.25, val_count=3)
        summary = Trainer(planned, train, val, root / "planned", progress=False).fit()
        if rank == 0:
            (root / "planned.json").write_text(json.dumps(summary))

        # offline distillation: the frozen teacher stays a plain module outside DDP
        train, val = datasets()
        offline = run_spec(teacher_checkpoint=str(root / "fit" / "teacher.pt"))
        offline.train.mode = "offline"
        run = Trainer(offline, train, val, root / "offline", progress=False)
        assert set(run.wrapped) == {"student"} and isinstance(run.wrapped["student"], DistributedDataParallel)
        before = {k: v.clone() for k, v in run.teacher.state_dict().items()}  # type: ignore[union-attr]
        run.fit(stop_after_epochs=1)
        after = run.teacher.state_dict()  # type: ignore[union-attr]
        assert all(torch.equal(v, after[k]) for k, v in before.items())
    finally:
        trainer.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the workers once (2 processes, gloo); kill them if they take longer than 180 s."""
    out = tmp_path_factory.mktemp("ddp")
    ctx = mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("the 2-process run did not finish within 180 s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(5)
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DIST_ENV:
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------- 2 ranks vs 1 process
def test_one_cotraining_step_on_two_ranks_equals_one_process(two_ranks: Path, tmp_path: Path,
                                                             single_process: None) -> None:
    ddp = torch.load(two_ranks / "step.pt", weights_only=True)
    train, val = datasets()
    trainer = Trainer(run_spec(), train, val, tmp_path, progress=False)
    batch = next(iter(trainer._loader(0)))
    # the ranks took the two halves of the same global batch of 8, 4 images each
    for key, value in batch.items():
        assert [r["batch"][key].shape[0] for r in ddp["ranks"]] == [4, 4]
        assert torch.equal(torch.cat([r["batch"][key] for r in ddp["ranks"]]), value)
    initial = weights(trainer)
    trainer._set_lr(0.5)
    trainer.train_step(batch)
    single = weights(trainer)
    assert set(single) == {"teacher", "student"}
    for role in single:
        assert single[role].keys() == ddp["weights"][role].keys()  # no "module." prefix
        for name, value in single[role].items():
            torch.testing.assert_close(ddp["weights"][role][name], value, rtol=1e-5, atol=1e-6,
                                       msg=f"{role}.{name}")
    # the step moved every model (equality after no change would prove nothing)
    for role in single:
        assert any(not torch.equal(v, single[role][k]) for k, v in initial[role].items()), role


def test_a_nonfinite_loss_on_one_rank_skips_the_step_on_every_rank(two_ranks: Path) -> None:
    ranks = torch.load(two_ranks / "step.pt", weights_only=True)["ranks"]
    assert [r["skipped"] for r in ranks] == [True, True]  # rank 0's own loss was finite
    assert [r["moved"] for r in ranks] == [True, True]  # and the next step trained again


def test_losses_average_over_equal_shards() -> None:
    """Why DDP's gradient average is the full-batch gradient: the student loss of 8 images is the mean of
    the losses of its two halves of 4 (every term is a mean with equal weight per image)."""
    g = torch.Generator().manual_seed(1)
    out, target, t_out = (torch.randn(8, 6, 8, 8, generator=g) for _ in range(3))
    feat, t_feat = (torch.randn(8, 5, 8, 8, generator=g) for _ in range(2))
    whole = student_loss(out, feat, target, t_out, t_feat)
    halves = [student_loss(out[s], feat[s], target[s], t_out[s], t_feat[s]) for s in (slice(0, 4), slice(4, 8))]
    for key, value in whole.items():
        torch.testing.assert_close(value, (halves[0][key] + halves[1][key]) / 2, rtol=1e-5, atol=1e-6)


def test_an_epoch_without_noise_does_not_depend_on_the_world_size(two_ranks: Path, tmp_path: Path,
                                                                 single_process: None) -> None:
    train, val = datasets()
    summary = Trainer(run_spec(), train, val, tmp_path, progress=False).fit(stop_after_epochs=1)
    ddp_summary = json.loads((two_ranks / "fit.json").read_text())
    assert ddp_summary["epochs"] == summary["epochs"] == 1 and ddp_summary["steps"] == summary["steps"] == 2
    ours, theirs = read_payload(tmp_path / "last.pt"), read_payload(two_ranks / "fit" / "last.pt")
    assert theirs["world_size"] == 2 and len(theirs["noise_rngs"]) == 2
    for role in ("teacher", "student"):
        for name, value in ours["models"][role].items():
            torch.testing.assert_close(theirs["models"][role][name], value, rtol=1e-5, atol=1e-6)

    # rank 0 alone wrote the log: the networks as initialised (epoch 0: their residual base), then one train
    # record (the mean over all 16 samples) and one per validated model
    def records(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]

    mine, ddp = records(tmp_path), records(two_ranks / "fit")
    assert [r["kind"] for r in ddp] == [r["kind"] for r in mine] == [
        "val/teacher", "val/student", "train", "val/teacher", "val/student"]
    for a, b in zip(mine, ddp, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key != "kind":
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for name in ("teacher.pt", "student.pt", "teacher_metrics.json", "student_metrics.json"):
        assert (two_ranks / "fit" / name).exists()


def test_resume_on_another_number_of_processes(two_ranks: Path, single_process: None,
                                               caplog: pytest.LogCaptureFixture) -> None:
    run = two_ranks / "noisy"
    state = read_payload(run / "last.pt")
    assert state["epoch"] == 1 and state["step"] == 2 and state["world_size"] == 2
    first, second = state["noise_rngs"]
    assert not torch.equal(first, second)  # the ranks drew different noise
    train, val = datasets()
    with caplog.at_level(logging.INFO, logger="csakd.train.trainer"):
        resumed = Trainer(run_spec(train_snr_db=35.0), train, val, run, resume=True, progress=False)
    assert "reseeded" in caplog.text
    assert resumed.epoch == 1 and resumed.step == 2
    expected = torch.Generator().manual_seed(rank_noise_seed(0, 0, 1)).get_state()
    assert torch.equal(resumed.noise_gen.get_state(), expected)
    before = weights(resumed)
    summary = resumed.fit()
    assert summary["epochs"] == 2 and summary["steps"] == 4
    after = read_payload(run / "last.pt")
    assert after["epoch"] == 2 and after["world_size"] == 1
    assert any(not torch.equal(before["student"][k], v) for k, v in after["models"]["student"].items())
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 0, 1, 1, 1, 2, 2, 2]


def test_offline_distillation_on_two_ranks(two_ranks: Path) -> None:
    run = two_ranks / "offline"
    assert (run / "student.pt").exists() and not (run / "teacher.pt").exists()
    state = read_payload(run / "last.pt")
    assert set(state["models"]) == {"student"} and state["world_size"] == 2
    kinds = [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kinds == ["val/teacher", "val/student", "train", "val/teacher", "val/student"]  # epoch 0 first


# ------------------------------------------------------------------------------------- checks before any work
def test_a_batch_that_the_processes_cannot_split_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    train, val = datasets()
    with pytest.raises(InputError, match=r"batch size 8 is not divisible by the 3 processes.*multiple of 3"):
        Trainer(run_spec(), train, val, tmp_path / "run", progress=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match=r"epoch has 16 samples, fewer than the global batch 32"):
        Trainer(run_spec(batch_size=32), train, val, tmp_path / "run", progress=False)
    assert not dist.is_initialized() and not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(InputError, match=r"RANK=2 with WORLD_SIZE=2"):
        context_from_env()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(InputError, match=r"RANK='one'.*integer"):
        context_from_env()


def test_device_per_rank() -> None:
    two = DistContext(rank=1, world_size=2, local_rank=1)
    assert device_for_rank("cpu", two) == torch.device("cpu")
    with pytest.raises(InputError, match="expected auto, cpu, cuda"):
        device_for_rank("tpu-ish", two)
    if torch.cuda.is_available():
        with pytest.raises(InputError, match="names one GPU"):
            device_for_rank("cuda:0", two)
    else:
        assert device_for_rank("auto", two) == torch.device("cpu")
        with pytest.raises(InputError, match="CUDA is not available"):
            device_for_rank("cuda", two)


@pytest.mark.parametrize("n,batch,world", [(16, 8, 2), (37, 8, 4), (12, 6, 3), (20, 4, 1)])
def test_shards_rebuild_the_global_batches(n: int, batch: int, world: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist()
    local = check_global_batch(batch, world, n)
    shards = [shard_order(order, batch, r, world) for r in range(world)]
    full = n // batch
    assert all(len(s) == full * local for s in shards)
    for k in range(full):
        rebuilt = [i for s in shards for i in s[k * local : (k + 1) * local]]
        assert rebuilt == order[k * batch : (k + 1) * batch]
    assert len({i for s in shards for i in s}) == full * batch  # disjoint


def test_noise_seeds_differ_per_rank_and_epoch() -> None:
    assert rank_noise_seed(7, 0) == 8  # a single process seeds as before: seed + 1
    fresh = {rank_noise_seed(7, r) for r in range(4)}
    resumed = {rank_noise_seed(7, r, e) for r in range(4) for e in range(3)}
    assert len(fresh) == 4 and len(resumed) == 12
    assert all(0 <= s < 2**63 for s in resumed)


@pytest.mark.parametrize("fusion,attention", [*product(("csa", "cross_attention"), ("reference", "paper",
                                                                                    "normalized")),
                                              ("none", "normalized"), ("sigmoid", "normalized"),
                                              ("concat_gating", "normalized")])
def test_every_parameter_gets_a_gradient(fusion: str, attention: str) -> None:
    """DDP runs with find_unused_parameters=False: every parameter must take part in the loss."""
    for preset in ("teacher", "student"):
        net = DTSNet(preset_config(preset, blocks=(1, 1, 1, 1), fusion=fusion, attention=attention, **TINY))
        lr, msi = torch.rand(2, 6, 4, 4), torch.rand(2, 3, 16, 16)
        out, feat = net(to_network(lr), to_network(msi))
        (out.square().mean() + feat.square().mean()).backward()
        missing = [name for name, p in net.named_parameters() if p.grad is None]
        assert not missing, f"{preset} {fusion}/{attention}: no gradient for {missing}"


def test_a_planned_run_on_two_ranks_plans_alike_and_ends_in_its_budget(two_ranks: Path) -> None:
    summary = json.loads((two_ranks / "planned.json").read_text())
    assert summary["stopped"] in ("budget", "steps") and summary["seconds"] <= 0.25 * 60 * 1.05
    assert summary["plan"]["total_steps"] >= summary["steps"] > 0
    vals = [line for line in (two_ranks / "planned" / "metrics.jsonl").read_text().splitlines()
            if '"val/student"' in line]
    assert 2 <= len(vals) <= 4  # step 0, then val_count = 3 evenly
