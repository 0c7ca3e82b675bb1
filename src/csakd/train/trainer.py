"""One readable training loop: online co-training, offline distillation, teacher or student alone.

Per batch in co-training: the teacher takes a step; the student takes a step distilled from the
teacher's output and fused features of that same forward pass (computed before the teacher's update).
Validation runs on whole images; the best teacher and student (by mean validation SAM) are written as
``teacher.pt`` / ``student.pt`` in the run folder, the full training state as ``last.pt`` (for
``--resume``), metrics to ``metrics.jsonl`` and TensorBoard scalars to ``tb/``.

Launched by ``torchrun`` with more than one process, the trainer runs data-parallel (see
:mod:`csakd.train.distributed`): each trainable model is wrapped in DDP (teacher and student separately in
co-training; the frozen teacher of offline distillation stays a plain module), every rank takes its
``batch_size / world_size`` share of each global batch of the shared per-epoch permutation, validation is
split over the ranks and gathered, and only rank 0 logs, shows progress and writes files. Decisions that must
agree across ranks (skipping a step with a non-finite loss, stopping on the time budget, the time-based
learning-rate schedule) are taken from values reduced over the ranks.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from csakd.checkpoint import load_checkpoint, model_payload, read_payload, save_payload, unwrap
from csakd.degradation import add_noise
from csakd.errors import CsakdError, InputError
from csakd.files import write_json
from csakd.losses import student_loss, teacher_loss
from csakd.metrics import compute_metrics, summarize
from csakd.models import DTSNet, ModelConfig
from csakd.normalization import from_network, to_network
from csakd.train import distributed as ddp
from csakd.train.plan import Batch, Plan, RunSpec, SampleStream, lr_factor
from csakd.train.setup import ProcessContext, setup_process, teardown_process

log = logging.getLogger(__name__)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if setting == "fp16" else torch.bfloat16


class Trainer:
    """Trains the models named by ``spec.train.mode`` on ``train_set``, validating on ``val_set``.

    The process it runs in is set up by the caller with :func:`~csakd.train.setup.setup_process` and passed as
    ``process``: rank, device and process group (under ``torchrun``: ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``), deterministic algorithms and the global seed; the caller then leaves the group with
    :func:`~csakd.train.setup.teardown_process`. Without ``process`` the constructor sets it up itself, and
    :meth:`close` tears it down. Under a multi-process launch ``batch_size`` is the global batch (its split is
    checked here) and the trainable models are wrapped in DDP; :attr:`teacher` and :attr:`student` stay the
    plain modules. ``dist`` describes this process's rank.
    """

    def __init__(
        self,
        spec: RunSpec,
        train_set: Dataset[Batch],
        val_set: Dataset[Batch] | None,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        process: ProcessContext | None = None,
    ) -> None:
        cfg = spec.train
        cfg.validate()
        self.spec = spec
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.train_set = train_set
        self.val_set = val_set
        self.progress = progress
        self._owns_process = process is None
        if process is None:
            process = setup_process(cfg, samples_per_epoch=len(train_set))  # type: ignore[arg-type]
        elif process.dist.enabled:
            ddp.check_global_batch(cfg.batch_size, process.dist.world_size, len(train_set))  # type: ignore[arg-type]
        self.process = process
        self.dist = process.dist
        self.device = process.device
        self.amp = amp_dtype(cfg.amp, self.device)
        try:
            self._build(spec, resume)
        except BaseException:
            if self._owns_process:
                teardown_process(process)
            raise

    def _build(self, spec: RunSpec, resume: bool) -> None:
        cfg = self.cfg
        self.scale = (spec.student or spec.teacher or ModelConfig()).scale

        self.teacher: DTSNet | None = None
        self.student: DTSNet | None = None
        self.frozen_teacher = False
        mode = cfg.mode
        if mode in ("cotrain", "teacher"):
            if spec.teacher is None:
                raise InputError(f"mode {mode} needs a teacher config")
            self.teacher = DTSNet(spec.teacher).to(self.device)
        if mode == "offline":
            assert cfg.teacher_checkpoint is not None
            loaded = load_checkpoint(cfg.teacher_checkpoint)
            self.teacher = loaded.model.to(self.device).eval()
            self.teacher.requires_grad_(False)
            self.frozen_teacher = True
        if mode in ("cotrain", "offline", "student"):
            if spec.student is None:
                raise InputError(f"mode {mode} needs a student config")
            self.student = DTSNet(spec.student).to(self.device)
        for net, what in ((self.teacher, "teacher"), (self.student, "student")):
            if net is not None and net.config.scale != self.scale:
                raise InputError(f"the {what} is x{net.config.scale} but the run is x{self.scale}")

        self.opt: dict[str, torch.optim.Optimizer] = {}
        self.base_lr = {"teacher": cfg.lr_teacher, "student": cfg.lr_student}
        for role, net in self.trainable():
            self.opt[role] = torch.optim.AdamW(
                net.parameters(), lr=self.base_lr[role], weight_decay=cfg.weight_decay
            )
        self.noise_gen = torch.Generator(device=self.device)
        self.noise_gen.manual_seed(ddp.rank_noise_seed(cfg.seed, self.dist.rank))
        self.epoch = 0  # epochs completed
        self.step = 0
        self.elapsed = 0.0  # seconds of training in earlier sessions of this run
        self.best: dict[str, float] = {}  # per role: the best value of ``select`` (negated for PSNR)
        self.base_metrics: dict[str, dict[str, float]] = {}  # per role: validation at step 0
        self.plan: Plan | None = None
        self.val_seconds = 0.0  # the longest validation so far
        self._step_seconds = 0.0  # the last step's time (epoch loop)
        self._bar: Any = None
        self.nonfinite_in_a_row = 0
        self.writer: Any = None
        if resume:
            self._load_state()
        # DDP wrappers of the trainable models (after any resume: every rank then holds the same weights,
        # and DDP broadcasts rank 0's anyway). Every parameter of a DTSNet takes part in every forward pass,
        # whatever the fusion and attention (tests/test_distributed.py checks it), so no unused-parameter search.
        self.wrapped: dict[str, nn.Module] = {}
        for role, net in self.trainable():
            if self.dist.enabled:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.wrapped[role] = DistributedDataParallel(net, device_ids=ids, find_unused_parameters=False)
            else:
                self.wrapped[role] = net

    def close(self) -> None:
        """Leave the process group if this trainer set up its process and created the group (a no-op in a
        single process, and for a trainer given its ``process``: its caller tears that down)."""
        if self._owns_process:
            teardown_process(self.process)

    # ------------------------------------------------------------------ helpers
    def trainable(self) -> Iterator[tuple[str, DTSNet]]:
        if self.teacher is not None and not self.frozen_teacher:
            yield "teacher", self.teacher
        if self.student is not None:
            yield "student", self.student

    def _autocast(self) -> Any:
        if self.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp)

    def _noisy(self, lr: torch.Tensor) -> torch.Tensor:
        if self.cfg.train_snr_db is None:
            return lr
        return add_noise(lr, self.cfg.train_snr_db, generator=self.noise_gen, per_image=self.cfg.noise_per_image)

    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.cfg.seed * 7919 + epoch)
        return torch.randperm(len(self.train_set), generator=g).tolist()  # type: ignore[arg-type]

    def _loader(self, epoch: int) -> DataLoader[Batch]:
        """This rank's batches of epoch ``epoch`` (the whole permutation in a single process)."""
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        order = self._epoch_order(epoch)
        batch_size = self.cfg.batch_size
        drop_last = len(self.train_set) >= batch_size  # type: ignore[arg-type]
        if self.dist.enabled:
            order = ddp.shard_order(order, batch_size, self.dist.rank, self.dist.world_size)
            batch_size //= self.dist.world_size
            drop_last = False  # the shard holds full global batches only
        return DataLoader(
            self.train_set,
            batch_size=batch_size,
            sampler=order,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            persistent_workers=False,
        )

    def _set_lr(self, progress: float) -> None:
        for role, opt in self.opt.items():
            factor = lr_factor(self.cfg, role, self.epoch, progress)
            for group in opt.param_groups:
                group["lr"] = self.base_lr[role] * factor

    def _apply(self, role: str, loss: torch.Tensor, net: nn.Module) -> bool:
        opt = self.opt[role]
        opt.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if not ddp.all_true(finite, self.dist, self.device):  # every rank skips, or none does
            self.nonfinite_in_a_row += 1
            where = f" (rank {self.dist.rank})" if self.dist.enabled else ""
            if not finite or self.dist.is_main:
                log.warning("step %d: %s loss is %s%s; step skipped", self.step, role, float(loss.detach()), where)
            if not self.cfg.skip_nonfinite or self.nonfinite_in_a_row >= 20:
                raise CsakdError(
                    f"training diverged: the {role} loss was not finite at step {self.step} "
                    f"({self.nonfinite_in_a_row} times in a row); lower the learning rate or check the data"
                )
            return False
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), self.cfg.grad_clip)
        opt.step()
        return True

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimisation step of every trainable model on ``batch`` (values in [0, 1])."""
        lr = to_network(batch["lr_hsi"].to(self.device, non_blocking=True))
        msi = to_network(batch["hr_msi"].to(self.device, non_blocking=True))
        hr = to_network(batch["hr_hsi"].to(self.device, non_blocking=True))
        logs: dict[str, float] = {}
        ok = True
        t_out = t_feat = None
        if self.teacher is not None:
            if self.frozen_teacher:
                with torch.no_grad(), self._autocast():
                    t_out, t_feat = self.teacher(self._noisy(lr), msi)
            else:
                teacher = self.wrapped["teacher"]
                teacher.train()
                with self._autocast():
                    t_out, t_feat = teacher(self._noisy(lr), msi)
                parts = teacher_loss(t_out.float(), hr, self.cfg.losses, pixel=self.cfg.pixel_loss)
                ok &= self._apply("teacher", parts["loss"], self.teacher)
                logs.update({f"teacher/{k}": float(v.detach()) for k, v in parts.items()})
        if self.student is not None:
            student = self.wrapped["student"]
            student.train()
            with self._autocast():
                s_out, s_feat = student(self._noisy(lr), msi)
            distil = self.cfg.mode in ("cotrain", "offline")
            parts = student_loss(
                s_out.float(),
                s_feat.float(),
                hr,
                t_out.detach().float() if distil and t_out is not None else None,
                t_feat.detach().float() if distil and t_feat is not None else None,
                self.cfg.losses,
                pixel=self.cfg.pixel_loss,
            )
            ok &= self._apply("student", parts["loss"], self.student)
            logs.update({f"student/{k}": float(v.detach()) for k, v in parts.items()})
        if ok:
            self.nonfinite_in_a_row = 0
        self.step += 1
        return logs

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, deadline: float | None = None) -> dict[str, dict[str, float]]:
        """Mean metrics of each model over the validation set (whole images, [0, 1] scale, clamped).

        With several processes, rank ``r`` computes images ``r, r + W, ...``; the per-image metrics are
        gathered and averaged in image order on every rank, so the result is the single-process one.
        Past ``deadline`` (a :func:`time.monotonic` time) the validation stops and returns ``{}``: a partial
        mean would not compare with the others.
        """
        if self.val_set is None or len(self.val_set) == 0:  # type: ignore[arg-type]
            return {}
        rows: list[tuple[int, str, dict[str, float]]] = []
        models = [(r, m) for r, m in (("teacher", self.teacher), ("student", self.student)) if m is not None]
        stopped_at = None
        for i in range(self.dist.rank, len(self.val_set), self.dist.world_size):  # type: ignore[arg-type]
            if deadline is not None and time.monotonic() > deadline:
                stopped_at = i
                break
            item = self.val_set[i]
            lr = to_network(item["lr_hsi"][None].to(self.device))
            msi = to_network(item["hr_msi"][None].to(self.device))
            hr = item["hr_hsi"][None].to(self.device)
            for role, net in models:
                net.eval()
                with self._autocast():
                    out, _ = net(lr, msi)
                pred = from_network(out.float()).clamp(0, 1)
                m = compute_metrics(pred, hr, scale=self.scale)
                rows.append((i, role, {k: float(v[0]) for k, v in m.items()}))
        if not ddp.all_true(stopped_at is None, self.dist, self.device):  # the same answer on every rank
            if self.dist.is_main:
                log.warning("validation stopped at the end of the time budget; its checkpoints are not compared")
            return {}
        gathered = sorted((row for part in ddp.all_gather_objects(rows, self.dist) for row in part),
                          key=lambda row: row[0])
        results: dict[str, list[dict[str, float]]] = {}
        for _, role, metrics in gathered:
            results.setdefault(role, []).append(metrics)
        return {role: summarize(per_image) for role, per_image in results.items()}

    # ------------------------------------------------------------------ state
    def _payload(self, role: str, net: nn.Module, metrics: dict[str, float]) -> dict[str, Any]:
        spec = self.spec
        return model_payload(
            net,
            role=role,
            normalization=spec.normalization,
            wavelengths=spec.wavelengths,
            response=spec.response,
            degradation=spec.degradation,
            train_config=spec.train.to_dict(),
            epoch=self.epoch,
            step=self.step,
            metrics=metrics,
        )

    def _save_state(self) -> None:
        """Write ``last.pt`` (rank 0; every rank must call it, as the noise states are gathered)."""
        noise_states = ddp.all_gather_objects(self.noise_gen.get_state(), self.dist)
        if not self.dist.is_main:
            return
        state = {
            "format": "csakd-train-state",
            "spec": json.dumps(self.spec.to_dict()),
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "best": dict(self.best),
            "select": self.cfg.select,
            "base_metrics": self.base_metrics,
            "plan": None if self.plan is None else self.plan.to_dict(),
            "val_seconds": self.val_seconds,
            "models": {r: {k: v.cpu() for k, v in unwrap(m).state_dict().items()} for r, m in self.trainable()},
            "optimizers": {r: o.state_dict() for r, o in self.opt.items()},
            "noise_rng": noise_states[0],
            "noise_rngs": noise_states,  # one per rank
            "world_size": self.dist.world_size,
            "torch_rng": torch.get_rng_state(),
        }
        save_payload(self.run_dir / "last.pt", state)

    def _load_state(self) -> None:
        path = self.run_dir / "last.pt"
        if not path.exists():
            raise InputError(f"--resume: no training state {path} to resume from")
        state = read_payload(path)
        if not isinstance(state, dict) or state.get("format") != "csakd-train-state":
            raise InputError(f"{path} is not a csakd training state")
        saved = json.loads(state["spec"])
        for role in ("teacher", "student"):
            if saved.get(role) != self.spec.to_dict().get(role) and saved.get(role) is not None and (
                role in state["models"]
            ):
                raise InputError(
                    f"--resume: the {role} in {path} was {saved.get(role)}, not the one asked for now"
                )
        for role, net in self.trainable():
            net.load_state_dict(state["models"][role])
            self.opt[role].load_state_dict(state["optimizers"][role])
        self.epoch, self.step, self.elapsed = int(state["epoch"]), int(state["step"]), float(state["elapsed"])
        if state.get("select", "sam") != self.cfg.select:
            raise InputError(f"--resume: {path} kept checkpoints by validation {state.get('select', 'sam')}, "
                             f"not {self.cfg.select}: resume with --select {state.get('select', 'sam')}")
        self.best = {k: float(v) for k, v in state["best"].items()}
        self.base_metrics = dict(state.get("base_metrics") or {})
        self.plan = Plan(**state["plan"]) if state.get("plan") else None
        self.val_seconds = float(state.get("val_seconds", 0.0))
        saved_world = int(state.get("world_size", 1))
        if saved_world == self.dist.world_size:
            self.noise_gen.set_state(state.get("noise_rngs", [state["noise_rng"]])[self.dist.rank])
        else:
            self.noise_gen.manual_seed(ddp.rank_noise_seed(self.cfg.seed, self.dist.rank, self.epoch))
            if self.dist.is_main:
                log.info("%s was written by %d process(es), this run has %d: the training-noise generators are "
                         "reseeded from (seed, epoch, rank)", path, saved_world, self.dist.world_size)
        torch.set_rng_state(state["torch_rng"])
        if self.dist.is_main:
            log.info("resumed %s at epoch %d, step %d", path, self.epoch, self.step)

    def _log(self, scalars: dict[str, float], kind: str) -> None:
        """Append to ``metrics.jsonl`` and TensorBoard (rank 0 only)."""
        if not self.dist.is_main:
            return
        record = {"kind": kind, "epoch": self.epoch, "step": self.step, **scalars}
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:
                self.writer = False
                log.info("TensorBoard is not installed: scalars go to metrics.jsonl only")
        if self.writer:
            for k, v in scalars.items():
                self.writer.add_scalar(f"{kind}/{k}", v, self.step)

    # ------------------------------------------------------------------ loop
    def fit(self, *, stop_after_epochs: int | None = None, stop_after_steps: int | None = None) -> dict[str, Any]:
        """Train until the plan, the epochs or the time budget run out; return the summary.

        With ``max_minutes`` and no ``epochs`` the run is planned in steps (:class:`~csakd.train.plan.Plan`): the
        first steps are timed, the number of steps that fills the budget (validations included) is derived from
        them, and the networks are validated ``val_count`` times, evenly. Otherwise it runs ``epochs`` passes
        (validating every ``val_every``), stopped early by ``max_minutes`` if given.

        ``stop_after_epochs`` / ``stop_after_steps`` end this session early (after that many epochs or
        validation intervals / steps in total), as an interruption would; ``resume`` continues it. With several
        processes every rank calls this; rank 0 writes the files and its summary is returned on every rank.
        """
        cfg = self.cfg
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        budget = cfg.max_minutes * 60 if cfg.max_minutes else None
        started = time.monotonic() - self.elapsed
        from tqdm.auto import tqdm

        show = self.progress and self.dist.is_main
        if cfg.planned_by_budget:
            assert budget is not None
            # the bar counts the budget's seconds: its estimate is the time left, whatever a step costs
            bar = tqdm(total=round(budget), initial=min(round(self.elapsed), round(budget)), disable=not show,
                       unit="s", dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s "
                       "[{elapsed}<{remaining}{postfix}]")
        else:
            steps_per_epoch = max(1, len(self._loader(0)))
            bar = tqdm(total=steps_per_epoch * cfg.total_epochs, initial=self.step, disable=not show,
                       unit="step", dynamic_ncols=True)
        self._bar = bar
        reason = "interrupted"
        try:
            if self.step == 0 and self.epoch == 0 and self._starts_from_a_base():
                # the networks as initialised are their residual base exactly, so the kept checkpoints are never
                # worse on validation than the base itself (a short budget can be)
                self._validate_and_save(deadline=None)
            if cfg.planned_by_budget:
                assert budget is not None
                reason = self._run_planned(started, budget, stop_after_epochs, stop_after_steps)
            else:
                reason = self._run_epochs(started, budget, stop_after_epochs)
        finally:
            bar.close()
            if self.writer:
                self.writer.close()
                self.writer = None
        summary = None
        if self.dist.is_main:
            summary = {"epochs": self.epoch, "steps": self.step, "seconds": round(self.elapsed, 1),
                       "stopped": reason, "plan": None if self.plan is None else self.plan.to_dict(),
                       "best": self.best_metrics(), "base": self.base_metrics,
                       "gains": self.gains()}
            if reason != "paused" and not cfg.keep_last:
                self._drop_last()
        result: dict[str, Any] = ddp.broadcast_object(summary, self.dist)
        return result

    def _tick(self, started: float, budget: float | None, logs: dict[str, float]) -> None:
        """Move the progress bar: by one step, or to the seconds used of the budget."""
        bar = self._bar
        post = {k.split("/")[0][0] + "_loss": f"{v:.4g}" for k, v in logs.items() if k.endswith("/loss")}
        if self.cfg.planned_by_budget and budget is not None:
            used = min(time.monotonic() - started, budget)
            bar.update(max(0.0, round(used) - bar.n))
            total = self.plan.total_steps if self.plan is not None else "?"
            bar.set_postfix({"step": f"{self.step}/{total}", **post}, refresh=False)
        else:
            bar.update(1)
            bar.set_postfix(post, refresh=False)

    def _run_epochs(self, started: float, budget: float | None, stop_after_epochs: int | None) -> str:
        """The epoch loop (``epochs`` given, or no budget): returns why it ended."""
        cfg = self.cfg
        total_steps = max(1, len(self._loader(0))) * cfg.total_epochs
        if self.epoch >= cfg.total_epochs:
            return "epochs"
        if budget is not None and self.elapsed >= budget:
            return "budget"
        reason = ""
        while not reason:
            running: dict[str, float] = {}
            n = 0
            for batch in self._loader(self.epoch):
                now = self._clock(started) if budget else 0.0
                if budget is not None and n and now + self._step_seconds + self.val_seconds >= budget:
                    reason = "budget"  # the next step and the last validation would not fit
                    break
                progress = max(self.step / total_steps, now / budget if budget else 0.0)
                self._set_lr(min(progress, 1.0))
                tick = time.monotonic()
                logs = self.train_step(batch)
                self._step_seconds = time.monotonic() - tick
                n += 1
                for k, v in logs.items():
                    running[k] = running.get(k, 0.0) + v
                self._tick(started, budget, logs)
                if budget is not None and self._clock(started) >= budget:
                    reason = "budget"
                    break
            self.epoch += 1
            self.elapsed = self._clock(started)
            self._log_train(running, n)
            if self.epoch >= cfg.total_epochs:
                reason = reason or "epochs"
            if self.epoch % cfg.val_every == 0 or reason:
                self._validate_and_save(deadline=None if budget is None else started + budget)
            self._save_state()
            if not reason and stop_after_epochs is not None and self.epoch >= stop_after_epochs:
                reason = "paused"
        return reason

    def _run_planned(self, started: float, budget: float, stop_after_epochs: int | None,
                     stop_after_steps: int | None) -> str:
        """The loop of a run planned by its budget: time the first steps, plan, train and validate evenly.

        The data are one stream of samples (sample ``g`` is sample ``g mod N`` of pass ``g // N`` of the
        training set's per-pass order, the same as the epoch loop's), so the plan changes no sample.
        """
        cfg = self.cfg
        stream = SampleStream(self.train_set, self._epoch_order)
        deadline = started + budget
        if self.plan is None:
            step_seconds, n_timed = self._time_first_steps(stream, started, budget)
            save_tick = time.monotonic()
            self._save_state()
            save_seconds = ddp.max_over_ranks(time.monotonic() - save_tick, self.dist, self.device)
            self.plan = Plan.make(self.step, step_seconds, n_timed, self.val_seconds, save_seconds,
                                  budget - self._clock(started), cfg.val_count, has_val=self.val_set is not None)
            if self.dist.is_main:
                log.info("%s", self.plan.describe(budget))
        plan = self.plan
        reason = ""
        while not reason:
            end = min(plan.total_steps, self.step + plan.interval)
            if stop_after_steps is not None:
                end = min(end, stop_after_steps)
            running: dict[str, float] = {}
            n = 0
            interval_tick = time.monotonic()
            for batch in self._stream_loader(stream, self.step, end):
                val_seconds = max(plan.val_seconds, self.val_seconds)
                if n and self._clock(started) + plan.step_seconds + val_seconds + plan.save_seconds >= budget:
                    reason = "budget"  # the next step and the last validation and save would not fit
                    break
                self._set_lr(min(1.0, self._clock(started) / budget))
                logs = self.train_step(batch)
                n += 1
                for k, v in logs.items():
                    running[k] = running.get(k, 0.0) + v
                self._tick(started, budget, logs)
            step_seconds = ddp.max_over_ranks((time.monotonic() - interval_tick) / max(n, 1), self.dist, self.device)
            self.epoch += 1
            self.elapsed = self._clock(started)
            self._log_train(running, n)
            if n and not reason:  # steps that ran faster or slower than timed: the plan follows
                plan.replan(self.step, self.epoch, step_seconds, max(plan.val_seconds, self.val_seconds),
                            budget - self.elapsed)
            if self.step >= plan.total_steps:
                reason = reason or "steps"
            self._validate_and_save(deadline=deadline)
            self._save_state()
            self.elapsed = self._clock(started)
            if self.elapsed >= budget:
                reason = reason or "budget"
            paused = (stop_after_steps is not None and self.step >= stop_after_steps) or (
                stop_after_epochs is not None and self.epoch >= stop_after_epochs)
            if not reason and paused:
                reason = "paused"
        return reason

    def _time_first_steps(self, stream: SampleStream, started: float, budget: float) -> tuple[float, int]:
        """Train the first steps one at a time and return the seconds per step and how many were timed.

        At least 3 steps and 2% of the budget are spent (at most 20 steps, or 2 steps and 5%); the first step,
        which allocates, is not counted.

        Raises:
            InputError: the budget is too short for one step and a validation.
        """
        times: list[float] = []
        loader = iter(self._stream_loader(stream, self.step, self.step + 20))
        begun = self._clock(started)
        while True:
            if self._clock(started) >= budget:
                if not times:
                    raise InputError(
                        f"--max-minutes {budget / 60:g} is too short: the budget ran out before the first training "
                        f"step (validating the untrained networks took {self.val_seconds:.1f} s)")
                break
            tick = time.monotonic()
            batch = next(loader)
            self._set_lr(min(1.0, self._clock(started) / budget))
            logs = self.train_step(batch)
            times.append(ddp.max_over_ranks(time.monotonic() - tick, self.dist, self.device))
            self._tick(started, budget, logs)
            if len(times) == 1 and self._clock(started) + self.val_seconds >= budget:
                raise InputError(
                    f"--max-minutes {budget / 60:g} is too short: one training step took {times[0]:.1f} s and a "
                    f"validation {self.val_seconds:.1f} s; give at least {3 * (times[0] + self.val_seconds) / 60:.2g} "
                    "minutes, a smaller --crop/--batch-size or smaller networks")
            used = self._clock(started) - begun
            if len(times) >= 20 or (len(times) >= 2 and used >= 0.05 * budget) or (
                    len(times) >= 3 and used >= 0.02 * budget):
                break
        timed = times[1:] if len(times) > 1 else times
        return sorted(timed)[len(timed) // 2], len(timed)

    def _stream_loader(self, stream: SampleStream, first_step: int, end_step: int) -> DataLoader[Batch]:
        """This rank's batches of steps ``first_step .. end_step - 1`` of the sample stream."""
        batch_size = self.cfg.batch_size
        order = list(range(first_step * batch_size, end_step * batch_size))
        if self.dist.enabled:
            order = ddp.shard_order(order, batch_size, self.dist.rank, self.dist.world_size)
            batch_size //= self.dist.world_size
        return DataLoader(stream, batch_size=batch_size, sampler=order, num_workers=self.cfg.num_workers,
                          pin_memory=self.device.type == "cuda", drop_last=False, persistent_workers=False)

    def _log_train(self, running: dict[str, float], n: int) -> None:
        if n:  # the same on every rank: the mean over the global batches
            total = ddp.sum_over_ranks(running, self.dist, self.device)
            self._log({k: v / (n * self.dist.world_size) for k, v in total.items()}, "train")

    def _drop_last(self) -> None:
        """Remove ``last.pt`` at the end of a finished run (``keep_last`` keeps it)."""
        path = self.run_dir / "last.pt"
        if path.exists():
            size = path.stat().st_size / 2**20
            path.unlink()
            log.info("removed %s (%.0f MB: the weights and optimiser state of every trained network, for --resume); "
                     "pass --keep-last to keep it", path, size)

    def _starts_from_a_base(self) -> bool:
        """Whether some trained network starts as its residual base (a zero head) and there is validation data."""
        if self.val_set is None:
            return False
        nets = [net for role, net in (("teacher", self.teacher), ("student", self.student))
                if net is not None and not (role == "teacher" and self.frozen_teacher)]
        return any(net.config.residual != "none" for net in nets)

    def _clock(self, started: float) -> float:
        """Seconds since ``started`` (monotonic); the largest over the ranks, so that all agree."""
        return ddp.max_over_ranks(time.monotonic() - started, self.dist, self.device)

    def _validate_and_save(self, deadline: float | None) -> None:
        """Validate, log, and write each trained network that improves on its best so far by ``select``."""
        tick = time.monotonic()
        metrics = self.validate(deadline)  # on every rank; files are written by rank 0
        if metrics:  # the longest over the ranks, so that every rank plans alike
            seconds = ddp.max_over_ranks(time.monotonic() - tick, self.dist, self.device)
            self.val_seconds = max(self.val_seconds, seconds)
        key = self.cfg.select
        for role, m in metrics.items():
            self._log(m, f"val/{role}")
            if self.step == 0 and m:
                self.base_metrics[role] = dict(m)
            if self.dist.is_main:
                log.info("step %d %s: PSNR %.2f dB, SAM %.3f deg", self.step, role, m["psnr"], m["sam"])
        for role, net in (("teacher", self.teacher), ("student", self.student)):
            if net is None or (role == "teacher" and self.frozen_teacher):
                continue
            m = metrics.get(role, {})
            if not m and role in self.best:
                continue  # validation stopped early: nothing to compare
            value = m.get(key, float("nan"))
            score = -value if key == "psnr" else value  # lower is better
            improved = role not in self.best or (math.isfinite(score) and score < self.best[role])
            if improved:
                if math.isfinite(score):
                    self.best[role] = score
                if not self.dist.is_main:
                    continue
                save_payload(self.run_dir / f"{role}.pt", self._payload(role, net, m))
                write_json(self.run_dir / f"{role}_metrics.json", {"epoch": self.epoch, "step": self.step, **m})

    def gains(self) -> dict[str, dict[str, float]]:
        """Each kept network's validation metrics minus those of its untrained base (step 0)."""
        out: dict[str, dict[str, float]] = {}
        for role, best in self.best_metrics().items():
            base = self.base_metrics.get(role)
            if base and "psnr" in best:
                out[role] = {"step": int(best["step"]), "psnr": best["psnr"] - base["psnr"],
                             "sam": best["sam"] - base["sam"], "ergas": best["ergas"] - base["ergas"]}
        return out

    def best_metrics(self) -> dict[str, dict[str, float]]:
        out = {}
        for role in ("teacher", "student"):
            path = self.run_dir / f"{role}_metrics.json"
            if path.exists():
                out[role] = json.loads(path.read_text())
        return out
