"""Probes of the demo's recipe: why does ``csakd demo`` keep the base? (issue 12, point 4)

Rebuilds ``csakd demo``'s scene, response, degradation and split (left 5/8 of the columns train, the right
3/8 validate and test), co-trains a teacher and a student for ``--minutes`` with one knob changed, and reports
on the held-out part and on the training part: the base (untrained network), the kept checkpoints and the
*last* weights (so that a run whose kept checkpoint is the base still shows where training went), PSNR
(per-band peak, the headline metric), PSNR at peak 1 (``psnr_fixed``: the RMSE in dB) and SAM, and the
per-band PSNR of the base and the last weights. Knobs: crop and batch, learning rate, more metamer fields for
training (``--seeds``), a per-band weighting of the pixel loss (``--band-weight``: by each band's peak, by the
current per-band error, or the mean per-band log-MSE), a loss margin (``--margin``: losses on the crop's
interior only), an exponential moving average of the weights used for validation and saving (``--ema``), the
normalisation and the scene size. The loss and EMA knobs patch csakd's loss functions and two Trainer methods
in this process only: they are experiments, not options of ``csakd train``.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/demo_probes.py --out runs/probe --crop 64 --batch 4

Results: benchmarks/results/probes_demo_cpu.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import csakd.losses as losses
from csakd.checkpoint import LoadedModel, load_checkpoint
from csakd.data.pairs import SimulatedPairs
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse
from csakd.demo import lift_shadows
from csakd.demo_scene import demo_response, demo_scene
from csakd.evaluate import EvalPair, evaluate, model_method
from csakd.metrics import psnr
from csakd.models import DTSNet, preset_config
from csakd.normalization import Normalization
from csakd.train.config import TrainConfig, apply_recipe
from csakd.train.plan import RunSpec
from csakd.train.trainer import Trainer


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--minutes", type=float, default=3.5, help="training budget (the demo's: 3.5)")
    p.add_argument("--lr", type=float, default=1e-3, help="both networks' learning rate (the demo's: 1e-3)")
    p.add_argument("--seeds", type=int, default=1, help="metamer fields whose left columns train (1: the demo's)")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--band-weight", choices=["none", "peak", "err", "psnr"], default="none",
                   help="pixel-loss weight of each band: 1/peak, 1/current RMSE, or the mean per-band log-MSE")
    p.add_argument("--margin", type=int, default=0, help="HR pixels of each crop's border left out of the losses")
    p.add_argument("--ema", type=float, default=0.0, help="decay of a weight average validated and saved (0: none)")
    p.add_argument("--norm", default="per_image", choices=["per_image", "none"])
    p.add_argument("--size", type=int, default=128, help="scene side (the demo's: 128)")
    return p.parse_args()


def patch_losses(a: argparse.Namespace) -> None:
    """Replace csakd.losses' pixel, SAM and BEBA terms by the probe's variants (this process only)."""
    pixel, sam, beba = losses.pixel_loss, losses.sam_loss, losses.beba_loss

    def weighted(pred: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
        if a.band_weight == "none":
            return pixel(pred, target, kind)
        if a.band_weight == "psnr":
            mse = ((pred - target) ** 2).mean(dim=(0, 2, 3))
            return 0.01 * torch.log10(mse + 1e-10).mean() + 0.05
        if a.band_weight == "err":
            scale = (pred.detach() - target).pow(2).mean(dim=(0, 2, 3)).sqrt().clamp_min(1e-5)
        else:
            scale = ((target.detach() + 1) / 2).amax(dim=(0, 2, 3)).clamp_min(1e-3)
        w = 1.0 / scale
        w = (w / w.mean()).view(1, -1, 1, 1)
        d = (pred - target).abs() if kind == "l1" else F.smooth_l1_loss(pred, target, reduction="none")
        return (d * w).mean()

    def interior(f: Any) -> Any:
        def g(pred: torch.Tensor, target: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
            m = a.margin
            if m:
                pred, target = pred[..., m:-m, m:-m], target[..., m:-m, m:-m]
            return f(pred, target, *args, **kw)
        return g

    losses.pixel_loss = interior(weighted)  # type: ignore[assignment]
    losses.sam_loss = interior(sam)  # type: ignore[assignment]
    losses.beba_loss = interior(beba)  # type: ignore[assignment]


def patch_ema(decay: float) -> None:
    """Keep a weight average per trained network; validate and save it instead of the current weights."""
    ema: dict[str, dict[str, torch.Tensor]] = {}
    apply, validate = Trainer._apply, Trainer._validate_and_save

    def _apply(self: Trainer, role: str, loss: torch.Tensor, net: torch.nn.Module) -> bool:
        ok = apply(self, role, loss, net)
        state = net.state_dict()
        avg = ema.setdefault(role, {k: v.detach().clone() for k, v in state.items()})
        with torch.no_grad():
            for k, v in state.items():
                if v.dtype.is_floating_point:
                    avg[k].mul_(decay).add_(v, alpha=1 - decay)
                else:
                    avg[k].copy_(v)
        return ok

    def _validate_and_save(self: Trainer, deadline: float | None) -> None:
        current = {}
        for role, avg in ema.items():
            net = getattr(self, role)
            current[role] = {k: v.clone() for k, v in net.state_dict().items()}
            net.load_state_dict(avg)
        try:
            validate(self, deadline)
        finally:
            for role, state in current.items():
                getattr(self, role).load_state_dict(state)

    Trainer._apply = _apply  # type: ignore[method-assign]
    Trainer._validate_and_save = _validate_and_save  # type: ignore[method-assign]


def main() -> int:
    a = parse()
    torch.set_num_threads(1)
    patch_losses(a)
    if a.ema:
        patch_ema(a.ema)
    split = (a.size * 5 // 8) // 4 * 4
    cube, wl = lift_shadows(*demo_scene(a.size, seed=0))
    matrix, names = demo_response(wl)
    response = SpectralResponse.from_matrix(matrix, band_names=names, source="colour-science Nikon 5100 (NPL)")
    deg = Degradation(DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0), response)
    train_cubes = [np.ascontiguousarray(cube[:, :, :split])]
    for s in range(1, a.seeds):
        train_cubes.append(np.ascontiguousarray(lift_shadows(*demo_scene(a.size, seed=s))[0][:, :, :split]))
    train_set = SimulatedPairs(train_cubes, deg, crop=a.crop, augment=True, samples_per_epoch=32, seed=0)
    val_set = SimulatedPairs([np.ascontiguousarray(cube[:, :, split:])], deg)
    fields: dict[str, Any] = dict(mode="cotrain", max_minutes=a.minutes, batch_size=a.batch, crop=a.crop,
                                  lr_teacher=a.lr, lr_student=a.lr, val_every=10, seed=0, device="cpu")
    widths: dict[str, Any] = {"bands": cube.shape[0], "msi_bands": 3, "scale": 4, "nf": 24, "gc": 12}
    spec = RunSpec(
        train=apply_recipe(TrainConfig(**fields), set(fields)),
        teacher=preset_config("teacher", blocks=(1, 2, 1, 1), **widths),
        student=preset_config("student", blocks=(1, 1, 1, 1), **widths),
        normalization=Normalization(a.norm), wavelengths=[float(w) for w in wl], response=response.to_dict(),
        degradation=deg.config.to_dict(), data={"source": "benchmarks/demo_probes.py"})
    out = Path(a.out)
    t0 = time.time()
    trainer = Trainer(spec, train_set, val_set, out, progress=False)
    summary = trainer.fit()
    trainer.close()

    def method(net: torch.nn.Module, role: str) -> Any:
        return model_method(LoadedModel(net.cpu().eval(), role, spec.normalization, spec.wavelengths,  # type: ignore[arg-type]
                                        spec.response, spec.degradation, {}), torch.device("cpu"))

    assert spec.student is not None and trainer.teacher is not None and trainer.student is not None
    methods = {"base": method(DTSNet(spec.student), "base"),
               "teacher": model_method(load_checkpoint(out / "teacher.pt"), torch.device("cpu")),
               "student": model_method(load_checkpoint(out / "student.pt"), torch.device("cpu")),
               "teacher_last": method(trainer.teacher, "teacher"), "student_last": method(trainer.student, "student")}
    parts = {"heldout": val_set[0], "train_region": SimulatedPairs(train_cubes[:1], deg)[0]}
    report: dict[str, Any] = {"args": vars(a), "steps": summary["steps"], "gains": summary["gains"]}
    for part, item in parts.items():
        pair = EvalPair(part, item["lr_hsi"], item["hr_msi"], item["hr_hsi"], 1.0, wl)
        result = evaluate(methods, [pair], scale=4, out_dir=None, figures=0)["methods"]
        report[part] = {k: {m: round(result[k][m], 3) for m in ("psnr", "psnr_fixed", "sam")} for k in methods}
        target = item["hr_hsi"]
        report[part]["per_band_psnr"] = {
            k: [round(float(psnr(o[c : c + 1][None], target[c : c + 1][None])), 2) for c in range(target.shape[0])]
            for k in ("base", "teacher_last", "student_last")
            for o in [methods[k](item["lr_hsi"][None], item["hr_msi"][None])[0]]
        }
    report["wall_seconds"] = round(time.time() - t0)
    (out / "probe.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("steps", "gains", "heldout")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
