"""``csakd demo`` and ``csakd simulate``: the embedded demo run, and a pair simulated from an HR-HSI file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from csakd.cli.common import _check_io, _json_out, _wavelengths, add_cube_args, add_degradation_args, degradation_config
from csakd.errors import InputError


# ---------------------------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from csakd.demo import run_demo

    _check_io(args, {"--out": args.out, "--json": args.json}, {}, folders=["--out"])
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(f"{out} exists and is not empty: pass --overwrite or another --out")
    report = run_demo(out, minutes=args.minutes, progress=not args.quiet, threads=args.threads)
    print(f"demo run in {out}  (teacher.pt, student.pt, eval/)")
    from csakd.evaluate import RMSE_01, RMSE_DATA

    print(f"{'method':<10}{'PSNR dB':>9}{'SAM deg':>9}{'ERGAS':>8}{RMSE_01:>13}{RMSE_DATA:>19}")
    for name in ("bicubic", "base", "teacher", "student"):
        m = report[name]
        print(f"{name:<10}{m['psnr']:>9.2f}{m['sam']:>9.3f}{m['ergas']:>8.3f}{m['rmse_01']:>13.4f}{m['rmse']:>19.4f}")
    _json_out(args.json, report)
    return 0


# ---------------------------------------------------------------------------------------------- simulate
def cmd_simulate(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from csakd.data import Cube, read_cube, write_cube
    from csakd.data.hr_cubes import center_crop
    from csakd.degradation import Degradation
    from csakd.files import check_writable

    _check_io(args, {"--out-lr": args.out_lr, "--out-msi": args.out_msi, "--json": args.json},
              {"--hr-hsi": args.hr_hsi, "--srf": args.srf, "--psf": args.psf, "--wavelengths": args.wavelengths})
    for path in (args.out_lr, args.out_msi):
        check_writable(path, overwrite=args.overwrite)
    if Path(args.out_lr).resolve() == Path(args.out_msi).resolve():
        raise InputError("--out-lr and --out-msi are the same file")
    cube = read_cube(args.hr_hsi, variable=args.variable, layout=args.layout)
    cube.check_finite("hr_hsi")
    wavelengths = cube.wavelengths if cube.wavelengths is not None else _wavelengths(args)
    data = center_crop(cube.data, args.crop, args.scale)
    config = degradation_config(args, hsi_snr_db=args.hsi_snr, msi_snr_db=args.msi_snr, shift=args.shift)
    degradation = Degradation.from_config(config, wavelengths=wavelengths, bands=data.shape[0])
    g = torch.Generator().manual_seed(args.seed)
    lr, msi = degradation.simulate(torch.from_numpy(np.ascontiguousarray(data)), generator=g)
    write_cube(args.out_lr, Cube(lr.numpy(), wavelengths=wavelengths, source=str(args.hr_hsi)),
               overwrite=args.overwrite)
    write_cube(args.out_msi, Cube(msi.numpy(), band_names=list(degradation.response.band_names),
                                  source=str(args.hr_hsi)), overwrite=args.overwrite)
    result = {"lr_hsi": str(args.out_lr), "hr_msi": str(args.out_msi), "lr_shape": list(lr.shape),
              "msi_shape": list(msi.shape), "degradation": config.to_dict()}
    print(f"wrote {args.out_lr} {tuple(lr.shape)} and {args.out_msi} {tuple(msi.shape)}")
    _json_out(args.json, result)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("demo", help="co-train a small teacher and student on an embedded scene (CPU, minutes)")
    p.add_argument("--out", default="csakd-demo", help="run folder (default ./csakd-demo)")
    p.add_argument("--json", help="write the metrics as JSON to FILE (- for stdout; default: none)")
    p.add_argument("--minutes", type=float, default=3.5, help="training budget in minutes (default 3.5)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's, the cores)")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="make an LR-HSI / HR-MSI pair from an HR-HSI file")
    p.add_argument("--hr-hsi", required=True, help="the HR-HSI file (CAVE folder, .mat, .npy/.npz, ENVI, GeoTIFF)")
    p.add_argument("--out-lr", required=True, help="the LR-HSI to write (format by extension)")
    p.add_argument("--out-msi", required=True, help="the HR-MSI to write (format by extension)")
    add_degradation_args(p, required_srf=True)
    p.add_argument("--hsi-snr", type=float, help="white noise on the LR-HSI at this SNR in dB (default: none)")
    p.add_argument("--msi-snr", type=float, help="white noise on the HR-MSI at this SNR in dB (default: none)")
    p.add_argument("--shift", type=int, default=0, help="misregister the LR-HSI by this many LR pixels (default 0)")
    p.add_argument("--crop", type=int, help="centre crop of the HR-HSI (default: the largest multiple of the scale)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--json", help="write a summary as JSON to FILE (- for stdout; default: none)")
    add_cube_args(p)
    p.set_defaults(func=cmd_simulate)
