"""A learning probe: the lite student alone on whole CAVE scenes with a hand-written loop and a chosen loss.

Written to find why training did not beat the regression base before the trainer was changed: the same
networks, data and degradation as ``csakd train`` (8 scenes train, clay_ms and watercolors_ms validate on their
centre 256x256 crops, Nikon D700, 9x9 Gaussian sigma 2, x4), but the loss is chosen here (``paper``: the
teacher loss, SmoothL1 + 0.1 SAM + 0.1 BEBA on the [-1, 1] scale; ``l1``, ``mse``, ``charb`` on [0, 1], plus
``--wsam`` times the SAM loss; ``logpsnr``: the mean over bands of log MSE; ``logboth``: that plus log(1 - cos)),
as are the learning rate, EMA of the weights, and a budget in minutes or in steps (``--steps``, which machine
load does not change). It prints the validation PSNR and SAM against the base at ``--nval`` points and writes
the curve as JSON.

    python benchmarks/learning_probe.py --steps 400 --loss l1 --wsam 0 --out probe.json
"""

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
import torch.nn.functional as F
from common import SHARED_DATA, environment

from csakd.data.hr_cubes import build_degradation, list_cube_files, load_hr_cubes
from csakd.data.pairs import SimulatedPairs
from csakd.degradation import DegradationConfig
from csakd.losses import sam_loss
from csakd.metrics import compute_metrics, summarize
from csakd.models import DTSNet, preset_config
from csakd.normalization import from_network, to_network

p = argparse.ArgumentParser()
p.add_argument("--minutes", type=float, default=4)
p.add_argument("--crop", type=int, default=64)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--nf", type=int, default=32)
p.add_argument("--gc", type=int, default=16)
p.add_argument("--blocks", default="0,2,2,1")
p.add_argument("--head", default="compact")
p.add_argument("--preset", default="lite")
p.add_argument("--loss", default="paper")  # paper | l1_01 | mse01 | l1_01_sam01
p.add_argument("--wsam", type=float, default=0.1)
p.add_argument("--rscale", type=float, default=1.0)
p.add_argument("--val", default="clay_ms,watercolors_ms")
p.add_argument("--center", type=int, default=0, help="train on the 256 centre crop only")
p.add_argument("--nval", type=int, default=8)
p.add_argument("--warm", type=float, default=0.05)
p.add_argument("--wd", type=float, default=0.0)
p.add_argument("--out", required=True)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--ema", type=float, default=0.0)
p.add_argument("--wlog", type=float, default=1.0)
p.add_argument("--steps", type=int, default=0)
p.add_argument("--cotrain", type=int, default=0)
p.add_argument("--wkd", type=float, default=0.1)
p.add_argument("--wfeat", type=float, default=0.1)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
root = SHARED_DATA / "cave"
files = list_cube_files(root)
val_names = a.val.split(",")
tr = [f for f in files if f.name not in val_names]
va = [f for f in files if f.name in val_names]
trc = load_hr_cubes(
    tr, scale=4, crop=256 if a.center else None, normalize="max", wavelengths=None, variable=None, layout="auto"
)
vac = load_hr_cubes(va, scale=4, crop=256, normalize="max", wavelengths=None, variable=None, layout="auto")
deg = build_degradation(
    DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0, srf=str(SHARED_DATA / "srf" / "nikon_d700.csv")), trc
)
ds = SimulatedPairs([c.data for c in trc], deg, crop=a.crop, augment=True, samples_per_epoch=10**7, seed=0)
vs = SimulatedPairs([c.data for c in vac], deg)
cfg = preset_config(
    a.preset,
    bands=31,
    msi_bands=3,
    scale=4,
    nf=a.nf,
    gc=a.gc,
    blocks=tuple(int(b) for b in a.blocks.split(",")),
    head=a.head,
    residual_scale=a.rscale,
)
net = DTSNet(cfg)
opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=a.wd)
vitems = [vs[i] for i in range(len(vs))]

ema = copy.deepcopy(net) if a.ema else None


@torch.no_grad()
def validate():
    m_ = ema if ema is not None else net
    m_.eval()
    rows = []
    for it in vitems:
        out, _ = m_(to_network(it["lr_hsi"][None]), to_network(it["hr_msi"][None]))
        m = compute_metrics(from_network(out).clamp(0, 1), it["hr_hsi"][None], scale=4)
        rows.append({k: float(v[0]) for k, v in m.items()})
    net.train()
    per = [(r["psnr"], r["sam"]) for r in rows]
    s = summarize(rows)
    s["per"] = per
    return s


def loss_fn(out, hr):
    if a.loss == "paper":
        from csakd.losses import teacher_loss

        return teacher_loss(out, hr)["loss"]
    o01, h01 = (out + 1) / 2, (hr + 1) / 2
    if a.loss == "l1":
        l = F.l1_loss(o01, h01)
    elif a.loss == "mse":
        l = F.mse_loss(o01, h01)
    elif a.loss == "charb":
        l = torch.sqrt((o01 - h01) ** 2 + 1e-6).mean()
    elif a.loss in ("logpsnr", "logboth"):
        mse_b = (o01 - h01).pow(2).mean(dim=(-2, -1))
        l = torch.log(mse_b + 1e-12).mean()
        if a.loss == "logboth":
            cos = (o01 * h01).sum(1) / (o01.norm(dim=1) * h01.norm(dim=1)).clamp_min(1e-8)
            l = l + a.wlog * torch.log((1 - cos).mean() + 1e-12)
        return l
    if a.wsam:
        l = l + a.wsam * sam_loss(o01.clamp_min(0) + 1e-6, h01 + 1e-6)
    return l


budget = a.minutes * 60
curve = []
b0 = validate()
b0.update(step=0, t=0.0)
curve.append(b0)
print(f"base: {b0['psnr']:.3f} dB {b0['sam']:.4f} deg", flush=True)
it = iter(torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=False))
t0 = time.monotonic()
step = 0
tval = 0.0
nextv = 1
while True:
    el = time.monotonic() - t0 - tval
    if a.steps:
        if step >= a.steps:
            break
        prog = step / a.steps
    else:
        if el >= budget:
            break
        prog = el / budget
    f = prog / a.warm if prog < a.warm else 0.5 * (1 + math.cos(math.pi * (prog - a.warm) / (1 - a.warm)))
    for g in opt.param_groups:
        g["lr"] = a.lr * max(f, 1e-3)
    b = next(it)
    lr, msi, hr = (to_network(b[k]) for k in ("lr_hsi", "hr_msi", "hr_hsi"))
    out, feat = net(lr, msi)
    loss = loss_fn(out, hr)
    opt.zero_grad()
    loss.backward()
    opt.step()
    step += 1
    if ema is not None:
        d = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(pn, 1 - d)
    if prog >= nextv / a.nval:
        tv = time.monotonic()
        m = validate()
        tval += time.monotonic() - tv
        m.update(step=step, t=el)
        curve.append(m)
        nextv += 1
        print(
            f"step {step} t {el:.0f}s: {m['psnr']:.3f} dB ({m['psnr'] - b0['psnr']:+.3f}) {m['sam']:.4f} deg "
            f"({m['sam'] - b0['sam']:+.4f}) per {[(round(x, 2), round(y, 3)) for x, y in m['per']]}",
            flush=True,
        )
m = validate()
m.update(step=step, t=budget)
curve.append(m)
print(
    f"END step {step}: {m['psnr']:.3f} dB ({m['psnr'] - b0['psnr']:+.3f}) {m['sam']:.4f} "
    f"({m['sam'] - b0['sam']:+.4f}) steps/min {step / a.minutes:.0f}",
    flush=True,
)
Path(a.out).write_text(json.dumps({"args": vars(a), **environment(), "curve": curve}))
