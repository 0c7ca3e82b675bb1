"""``csakd fuse``, ``csakd fit-scene`` and ``csakd export``: fusing a pair with a trained model, fitting one to a
pair, and exporting a model to ONNX."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from csakd.cli.common import _PRESET_NAMES, DEVICE_HELP, _check_io, _int_tuple, _json_out, _wavelengths, add_cube_args
from csakd.errors import InputError


# ---------------------------------------------------------------------------------------------- fuse
def cmd_fuse(args: argparse.Namespace) -> int:
    from csakd.inference.onnx_runtime import sniff_model_file

    _check_io(args, {"--out": args.out, "--json": args.json},
              {"--lr-hsi": args.lr_hsi, "--hr-msi": args.hr_msi, "--checkpoint": args.checkpoint})
    runtime = args.runtime or ("onnx" if str(args.checkpoint).lower().endswith(".onnx") else "torch")
    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    if runtime == "onnx":  # never imports torch
        from csakd.inference.onnx_runtime import fuse_files_onnx, providers_for_device

        if args.tile:
            raise InputError("--tile is not available with --runtime onnx: the attention needs a whole-scene pass")
        out = fuse_files_onnx(args.lr_hsi, args.hr_msi, args.checkpoint, args.out, overwrite=args.overwrite,
                              providers=providers_for_device(args.device), variable_lr=args.variable,
                              variable_msi=args.variable, layout=args.layout, strict=args.strict, clip=args.clip,
                              report=report)
    else:
        if str(args.checkpoint).lower().endswith(".onnx") or sniff_model_file(args.checkpoint) == "onnx":
            raise InputError(f"{args.checkpoint} is an ONNX file, not a PyTorch checkpoint: fuse it with "
                             "--runtime onnx")
        if args.tile or args.overlap is not None:
            from csakd.inference.tiled import fuse_files_tiled

            out = fuse_files_tiled(args.lr_hsi, args.hr_msi, args.checkpoint, args.out, tile=args.tile,
                                   overlap=args.overlap, batch_tiles=args.batch_tiles, blend=args.blend,
                                   overwrite=args.overwrite, device=args.device, variable_lr=args.variable,
                                   variable_msi=args.variable, layout=args.layout, progress=sys.stderr.isatty(),
                                   strict=args.strict, clip=args.clip, report=report)
        else:
            from csakd.inference import fuse_files

            out = fuse_files(args.lr_hsi, args.hr_msi, args.checkpoint, args.out, overwrite=args.overwrite,
                             device=args.device, variable_lr=args.variable, variable_msi=args.variable,
                             layout=args.layout, strict=args.strict, clip=args.clip, report=report)
    seconds = time.perf_counter() - t0
    print(f"wrote {out} in {seconds:.2f} s")
    _json_out(args.json, {"out": str(args.out), "seconds": seconds, **report})
    return 0


# ---------------------------------------------------------------------------------------------- fit-scene
def cmd_fit_scene(args: argparse.Namespace) -> int:
    from csakd.fit import FitOptions, fit_scene, summary_lines

    _check_io(args, {"--out": args.out, "--report-dir": args.report_dir, "--json": args.json},
              {"--lr": args.lr_hsi, "--msi": args.hr_msi, "--wavelengths": args.wavelengths,
               "--response": args.response}, folders=["--report-dir"])
    options = FitOptions(
        scale=args.scale, phase=args.phase, blur_sigma=args.blur_sigma, psf=args.psf, response=args.response,
        hsi_scale=args.hsi_scale, msi_scale=args.msi_scale, preset=args.preset,
        model_overrides={"nf": args.nf, "gc": args.gc, "blocks": args.blocks, "fusion": args.fusion},
        minutes=args.minutes if args.minutes is not None else (None if args.steps else 3.0), steps=args.steps,
        batch_size=args.batch_size, crop=args.crop, learning_rate=args.learning_rate, holdout=args.holdout,
        fit=args.fit, base=args.base, full_learning_rate=args.full_learning_rate, force_fit=args.force_fit,
        baselines=tuple(b for b in (args.baseline or ["gsa"]) if b.lower() != "none"), tile=args.tile,
        device=args.device, seed=args.seed, threads=args.threads,
        variable_lr=args.lr_variable or args.variable, variable_msi=args.msi_variable or args.variable,
        layout=args.layout, wavelengths=_wavelengths(args), figures=not args.no_figures, overwrite=args.overwrite,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    result = fit_scene(args.lr_hsi, args.hr_msi, args.out, args.report_dir, options)
    for line in summary_lines(result.report):
        print(line)
    print(f"wrote {result.out}; report, figures and the fitted checkpoint ({result.checkpoint}) in {result.report_dir}")
    _json_out(args.json, result.report)
    return 0


# ---------------------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from csakd.inference.export import export_onnx

    _check_io(args, {"--out": args.out, "--json": args.json}, {"--checkpoint": args.checkpoint})
    result = export_onnx(args.checkpoint, args.out, opset=args.opset, overwrite=args.overwrite,
                         check=not args.no_check, atol=args.atol, exporter=args.exporter, scale=args.scale)
    print(f"wrote {result['out']} ({result['exporter']} exporter, opset {result['opset']}; "
          f"max |ONNX Runtime - PyTorch| = {result['max_abs_diff']})")
    from csakd.inference.export import export_summary

    _json_out(args.json, export_summary(result, checkpoint=args.checkpoint, out=args.out))
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("fuse", help="fuse an LR-HSI and an HR-MSI file with a trained model")
    p.add_argument("--lr-hsi", required=True, help="the LR-HSI file (.tif, ENVI .hdr, .npy/.npz, .mat, CAVE folder)")
    p.add_argument("--hr-msi", required=True, help="the HR-MSI file, on a grid --scale times finer")
    p.add_argument("--checkpoint", required=True,
                   help="a csakd checkpoint (.pt, e.g. RUN/student.pt), a reference state dict, or an .onnx export")
    p.add_argument("--out", required=True,
                   help="output file; format by extension (.tif GeoTIFF, .hdr ENVI, .npy, .npz, .mat)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--runtime", choices=["torch", "onnx"],
                   help="torch (a .pt checkpoint) or onnx (an exported .onnx, no PyTorch needed) "
                        "(default: by the checkpoint's extension)")
    p.add_argument("--tile", type=int, default=0, help="tile side in HR pixels (0 = one pass)")
    p.add_argument("--overlap", type=int,
                   help="tile overlap in HR pixels (default: the receptive field, exact; less is faster)")
    p.add_argument("--batch-tiles", type=int, default=1, help="tiles per forward pass (default 1)")
    p.add_argument("--blend", choices=["cosine", "linear", "none"], default="cosine",
                   help="seam blending when the overlap is below the receptive field (default cosine)")
    p.add_argument("--strict", action="store_true",
                   help="refuse inputs with negative values or values far beyond the checkpoint's training range "
                        "(default: a warning)")
    p.add_argument("--no-clip", dest="clip", action="store_false",
                   help="keep fused values below 0 (by default they are set to 0, and counted: reflectance and "
                        "radiance are not negative)")
    p.add_argument("--json", help="write a summary as JSON to FILE (- for stdout; default: none)")
    add_cube_args(p)
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("fit-scene", help="fit a network to one real pair without ground truth (Wald protocol), "
                                         "fuse it and report no-reference consistency")
    p.add_argument("--lr", "--lr-hsi", dest="lr_hsi", required=True, help="the LR-HSI file")
    p.add_argument("--msi", "--hr-msi", dest="hr_msi", required=True, help="the HR-MSI file")
    p.add_argument("--out", required=True,
                   help="the fused HR-HSI to write; format by extension (.tif GeoTIFF, .hdr ENVI, .npy, .npz, .mat)")
    p.add_argument("--report-dir", required=True,
                   help="folder for report.json, the figures and the fitted checkpoint (model/student.pt)")
    add_cube_args(p)
    p.add_argument("--lr-variable", "--lr-var", help="the LR-HSI's array in a .mat/.npz file (default: --variable)")
    p.add_argument("--msi-variable", "--msi-var", help="the HR-MSI's array in a .mat/.npz file (default: --variable)")
    p.add_argument("--wavelengths",
                   help="a text/CSV file of the LR-HSI's band centres (nm) when the file lacks them (default: the "
                        "file's)")
    e = p.add_argument_group("degradation (estimated from the pair unless given)")
    e.add_argument("--scale", type=int, help="HR / LR grid ratio (default: from the grids; must agree with them)")
    e.add_argument("--phase", type=int, help="decimation phase (default: the best fit of 0..scale-1)")
    e.add_argument("--blur-sigma", type=float,
                   help="Gaussian blur sigma in HR pixels (default: estimated; given, the PSF is that Gaussian)")
    e.add_argument("--psf", choices=["estimate", "gaussian"], default="estimate",
                   help="estimate: a PSF of any shape, estimated jointly with the response and per-band offsets "
                        "(default); gaussian: the best isotropic Gaussian")
    e.add_argument("--response", default="estimate",
                   help="estimate (non-negative, one gain and offset per MSI band, jointly with the PSF; "
                        "default), or a response (CSV of curves, matrix file, sensor name), used up to one fitted "
                        "gain per MSI band")
    e.add_argument("--hsi-scale", type=float, help="divisor bringing the LR-HSI to [0, 1] (default: its maximum)")
    e.add_argument("--msi-scale", type=float, help="divisor bringing the HR-MSI to [0, 1] (default: its maximum)")
    f = p.add_argument_group("fitting")
    f.add_argument("--fit", choices=["full", "reduced", "both"], default="full",
                   help="full: fit at full scale to the observation model (S(X) ~ LR-HSI, R X + o ~ HR-MSI), from the "
                        "network's base (default); reduced: Wald's protocol one scale down; both: reduced, then "
                        "full from it (the budget split in two)")
    f.add_argument("--base", choices=["denoised", "plain"], default="denoised",
                   help="the network's residual base: denoised (a detail ridge at the HR-MSI's noise, the output "
                        "in the LR-HSI's noise-whitened principal subspace; default) or plain (as csakd train)")
    f.add_argument("--force-fit", action="store_true",
                   help="write the fitted image even when it is less consistent than its base on the held-out "
                        "columns (by default the base is written then, and the report says so)")
    f.add_argument("--full-learning-rate", type=float, default=1e-4,
                   help="Adam's learning rate of the full-scale fit (default 1e-4)")
    f.add_argument("--preset", default="lite", help=f"network preset: {_PRESET_NAMES} (default lite)")
    f.add_argument("--nf", type=int, help="feature width (default: the preset's, lite 32)")
    f.add_argument("--gc", type=int, help="growth width (default: the preset's, lite 16)")
    f.add_argument("--blocks", type=_int_tuple,
                   help="joint HR, joint LR, HSI, MSI block counts, e.g. 0,2,2,1 (default: the "
                        "preset's)")
    f.add_argument("--fusion", choices=["none", "sigmoid", "cross_attention", "csa", "concat_gating"],
                   help="how the four streams are combined (default: the preset's, csa)")
    f.add_argument("--minutes", type=float, help="training budget in minutes (default 3, or none with --steps)")
    f.add_argument("--steps", type=int, help="training budget in steps (default: none, --minutes)")
    f.add_argument("--batch-size", type=int, default=4, help="crops per step (default 4)")
    f.add_argument("--crop", type=int, default=64, help="crop side in LR-HSI pixels (default 64)")
    f.add_argument("--learning-rate", type=float, default=5e-4, help="AdamW learning rate (default 5e-4)")
    f.add_argument("--holdout", type=float, default=0.2,
                   help="share of LR-HSI columns (right-hand side) kept out of training for validation "
                        "(default 0.2; 0 validates on the training image)")
    f.add_argument("--device", default="auto", help=DEVICE_HELP)
    f.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's, the cores)")
    f.add_argument("--seed", type=int, default=0, help="seed of the weights and crops (default 0)")
    r = p.add_argument_group("fusion and report")
    r.add_argument("--baseline", action="append",
                   help="classical method to compare with (repeatable; default gsa; none for no baseline): "
                        "gsa, cnmf, hysure")
    r.add_argument("--tile", type=int, default=0,
                   help="tile side in HR pixels for the full-scale fusion (0 = one pass, the default)")
    r.add_argument("--no-figures", action="store_true", help="write report.json only")
    r.add_argument("--overwrite", action="store_true", help="replace --out and reuse a non-empty --report-dir")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--json", help="write the report as JSON to FILE as well (- for stdout; default: none)")
    p.set_defaults(func=cmd_fit_scene)

    p = sub.add_parser("export", help="export a checkpoint to ONNX (checked against PyTorch)")
    p.add_argument("--checkpoint", required=True, help="the checkpoint to export (e.g. RUN/student.pt)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, at least 16 (default 17)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    p.add_argument("--atol", type=float, default=1e-4, help="largest difference allowed by the check (default 1e-4)")
    p.add_argument("--exporter", choices=["auto", "torchscript", "dynamo"], default="auto",
                   help="PyTorch's ONNX exporter; auto: torchscript, then dynamo if it fails (default auto)")
    p.add_argument("--scale", type=int, default=4, help="scale of a reference state dict (not stored in it; default 4)")
    p.add_argument("--json", help="write a summary as JSON to FILE (- for stdout; default: none)")
    p.set_defaults(func=cmd_export)
