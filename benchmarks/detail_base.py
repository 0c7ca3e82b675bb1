"""How good is each residual base on its own (no training): bicubic upsampling, GSA, one regression of the
LR-HSI on the degraded MSI over the whole image, and the ``regression`` base's local windows of several radii
(``--cnmf`` adds CNMF, given the true response and blur; ``--back-projection 1,5`` adds the radius-2 base
after that many classical iterative back-projection steps, ``x <- x + U(Y - S(x))``: the classical counterpart
of the networks' ``feedback``).

On the cave256-x4 protocol (each scene's centre crop divided by its maximum, the Nikon D700 response, a 9x9
Gaussian blur of sigma 2, x4), per scene and averaged; JSON with the machine, versions and date::

    python benchmarks/detail_base.py --cave ../shared/data/cave --srf ../shared/data/srf/nikon_d700.csv --cnmf \
        --json benchmarks/results/detail_base_cave.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from common import environment

from csakd.baselines import cnmf, gsa
from csakd.data import read_cube
from csakd.degradation import Degradation, DegradationConfig
from csakd.degradation.spatial import upsample_in_phase
from csakd.files import write_json
from csakd.metrics import psnr, sam
from csakd.models import create_model


def whole_image_regression(lr: torch.Tensor, msi: torch.Tensor, msi_lr: torch.Tensor, scale: int) -> torch.Tensor:
    """``U(Y) + A (Z - U(S(Z)))`` with one ``A`` from least squares (with a constant) over all LR pixels."""
    c, m = lr.shape[0], msi.shape[0]
    design = torch.cat([msi_lr.reshape(m, -1).T, torch.ones(msi_lr[0].numel(), 1)], dim=1).double()
    coef = torch.linalg.lstsq(design, lr.reshape(c, -1).T.double()).solution[:m].T.float()  # (C, m)
    up = upsample_in_phase(lr[None], scale)[0]
    return up + torch.einsum("cm,mhw->chw", coef, msi - upsample_in_phase(msi_lr[None], scale)[0])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cave", type=Path, required=True, help="folder of CAVE scene folders")
    p.add_argument("--srf", required=True)
    p.add_argument("--center-crop", type=int, default=256)
    p.add_argument("--radii", default="1,2,3,4,6", help="local window radii in LR pixels (default 1,2,3,4,6)")
    p.add_argument("--cnmf", action="store_true", help="add CNMF (given the response and blur; ~30 s per scene)")
    p.add_argument("--back-projection", default="", help="back-projection step counts for the radius-2 base, "
                   "e.g. 1,5 (default none)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    scenes = sorted(d for d in args.cave.iterdir() if d.is_dir())
    if not scenes:
        p.error(f"{args.cave} holds no scene folders")
    radii = [int(r) for r in args.radii.split(",")]
    torch.set_num_threads(1)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    for folder in scenes:
        cube = read_cube(folder)
        n, (_, h, w) = args.center_crop, cube.data.shape
        r0, c0 = (h - n) // 2, (w - n) // 2
        x = torch.from_numpy(np.ascontiguousarray(cube.data[:, r0 : r0 + n, c0 : c0 + n], dtype=np.float32))
        x = x / x.max()
        deg = Degradation.from_config(DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0, srf=args.srf),
                                      wavelengths=cube.wavelengths, bands=x.shape[0])
        lr, msi = deg.simulate(x)
        results: dict[str, torch.Tensor] = {"bicubic": upsample_in_phase(lr[None], 4)[0]}
        t0 = time.perf_counter()
        results["gsa"] = torch.as_tensor(gsa(lr, msi, 4, blur_kernel=deg.kernel))
        seconds["gsa"] = seconds.get("gsa", 0.0) + time.perf_counter() - t0
        if args.cnmf:
            t0 = time.perf_counter()
            results["cnmf"] = torch.as_tensor(cnmf(lr, msi, 4, response=deg.response.matrix, blur_kernel=deg.kernel))
            seconds["cnmf"] = seconds.get("cnmf", 0.0) + time.perf_counter() - t0
        for radius in radii:
            model = create_model("lite", bands=x.shape[0], msi_bands=msi.shape[0], residual="regression",
                                 detail_radius=radius).eval()
            if radius == radii[0]:
                msi_lr = model.detail_base.degrade(msi[None])[0]
                results["whole-image regression"] = whole_image_regression(lr, msi, msi_lr, 4)
            t0 = time.perf_counter()
            with torch.no_grad():  # the base alone, on the network's [-1, 1] scale: U(Y) + A (Z - U(S(Z)))
                lr_net, msi_net = lr[None] * 2 - 1, msi[None] * 2 - 1
                base = model.detail_base(upsample_in_phase(lr_net, 4), lr_net, msi_net)[0]
            seconds[f"local r={radius}"] = seconds.get(f"local r={radius}", 0.0) + time.perf_counter() - t0
            results[f"local r={radius}"] = (base + 1) / 2
            if radius == 2 and args.back_projection:
                steps = sorted(int(k) for k in args.back_projection.split(","))
                assert model.detail_base is not None
                current = base[None]
                with torch.no_grad():
                    for k in range(1, steps[-1] + 1):
                        current = current + upsample_in_phase(lr_net - model.detail_base.degrade_bands(current), 4)
                        if k in steps:
                            results[f"local r=2 + back-projection x{k}"] = (current[0] + 1) / 2
        rows[folder.name] = {k: {"psnr": float(psnr(v, x)), "sam": float(sam(v, x))} for k, v in results.items()}
        print(folder.name, " ".join(f"{k}: {v['psnr']:.2f}" for k, v in rows[folder.name].items()), file=sys.stderr)
    methods = list(next(iter(rows.values())))
    mean = {m: {k: statistics.mean(r[m][k] for r in rows.values()) for k in ("psnr", "sam")} for m in methods}
    for m in methods:
        print(f"{m:<24} PSNR {mean[m]['psnr']:6.2f} dB  SAM {mean[m]['sam']:.3f} deg")
    write_json(args.json, {
        "protocol": f"cave{args.center_crop}-x4: centre crop / max, {args.srf}, 9x9 Gaussian sigma 2, x4, no noise",
        "scenes": [f.name for f in scenes], "mean": mean, "per_scene": rows,
        "seconds_total": {k: round(v, 3) for k, v in seconds.items()},
        "definitions": "psnr: per-band peak (paper); sam in degrees; no training: each base alone",
        "environment": environment(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
