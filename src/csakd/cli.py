"""The ``csakd`` command: demo, simulate, train, eval, fuse, fit-scene, export, bench, info.

Every command checks its inputs before it writes anything; ``--json FILE`` writes its result as JSON
(``-`` for stdout). csakd's own errors print as one line (``csakd: error: ...``) with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csakd import __version__
from csakd.errors import CsakdError, InputError
from csakd.train.report import training_report

log = logging.getLogger("csakd")



def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers like 1,4,4,1") from exc


def _check_io(args: argparse.Namespace, outputs: dict[str, Any], inputs: dict[str, Any],
              folders: Sequence[str] = ()) -> None:
    """Before any work: no output may be an input (or lie in an input folder), two outputs may not be one
    file, and an existing output file needs ``--overwrite`` (:func:`csakd.io_utils.check_outputs`)."""
    from csakd.io_utils import check_outputs

    check_outputs(outputs, inputs, overwrite=getattr(args, "overwrite", None), folders=folders)


def _json_out(path: str | None, data: Any) -> None:
    if path:
        from csakd.io_utils import write_json

        write_json(path, data)


# ---------------------------------------------------------------------------------------------- help
#: The model presets (csakd.models.list_models(), written out so that the parser needs no PyTorch; a test
#: keeps the two equal).
PRESET_NAMES = ("lite", "lite-teacher", "student", "teacher")
_PRESET_NAMES = ", ".join(PRESET_NAMES)
#: csakd.losses.LossWeights' defaults (written out for the same reason; a test keeps them equal).
_LOSS_DEFAULTS = {"pixel": 1.0, "sam": 0.1, "beba": 0.1, "response_kd": 0.1, "feature_kd": 0.1}
DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N (default auto)"

#: One example per command, shown at the end of its --help.
EXAMPLES = {
    "demo": "csakd demo --out csakd-demo --json csakd-demo/metrics.json",
    "simulate": "csakd simulate --hr-hsi scene.npz --srf srf.csv --out-lr lr.npz --out-msi msi.npz --hsi-snr 35",
    "train": "csakd train --data cubes --srf srf.csv --out runs/kd --max-minutes 10",
    "eval": "csakd eval --checkpoint runs/kd/student.pt --method gsa --data test_cubes --out runs/kd/eval",
    "fuse": "csakd fuse --lr-hsi lr.tif --hr-msi msi.tif --checkpoint runs/kd/student.pt --out fused.tif",
    "fit-scene": "csakd fit-scene --lr scene.mat --lr-variable hsi --msi scene.mat --msi-variable rgb "
                 "--out fused.tif --report-dir report --minutes 3",
    "info": "csakd info --preset student --bands 172 --msi-bands 4 --scale 4",
    "export": "csakd export --checkpoint runs/kd/student.pt --out student.onnx",
    "bench": "csakd bench --preset lite --device cpu --bands 172 --msi-bands 4 --size 256 --json bench.json",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks, and adds ``(default: X)`` to options whose help does not name a default
    (not to flags, nor to defaults of None: those say in words what None means)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" not in text and action.option_strings and default is not None and default is not False
                and default is not argparse.SUPPRESS and not action.required):
            text += " (default: %(default)s)"
        return text


def _add_examples(sub: Any) -> None:
    """Each command's help ends with its example (:data:`EXAMPLES`)."""
    for name, parser in sub.choices.items():
        parser.formatter_class = HelpFormatter
        parser.epilog = f"example:\n  {EXAMPLES[name]}"


# ---------------------------------------------------------------------------------------------- shared args
def add_degradation_args(p: argparse.ArgumentParser, *, required_srf: bool = False) -> None:
    g = p.add_argument_group("degradation (how pairs are simulated)")
    g.add_argument("--srf", required=required_srf,
                   help="spectral response: a CSV (wavelength_nm, one column per MSI band), a matrix file "
                        "(.npy/.mat/.txt, MSI bands x HSI bands), or a sensor name (colour:NAME, pyrsr:NAME[:BANDS])"
                        + ("" if required_srf else " (default: none; train --data needs one, eval uses the "
                                                   "checkpoint's)"))
    g.add_argument("--scale", type=int, default=4, help="ratio of the HR and LR grids (default 4)")
    g.add_argument("--blur-size", type=int, default=9, help="Gaussian blur kernel size in HR pixels (default 9)")
    g.add_argument("--blur-sigma", type=float, default=2.0, help="Gaussian blur sigma in HR pixels (default 2)")
    g.add_argument("--psf", help="a 2-D PSF array file to use instead of the Gaussian (default: none, the Gaussian)")
    g.add_argument("--phase", type=int, default=0, help="decimation phase: the kept pixel of each cell (default 0)")
    g.add_argument("--wavelengths",
                   help="a text/CSV file of the HR-HSI band centres (nm) when the files lack them (default: the "
                        "files')")


def degradation_config(args: argparse.Namespace, **extra: Any) -> Any:
    from csakd.degradation import DegradationConfig

    return DegradationConfig(scale=args.scale, blur_size=args.blur_size, blur_sigma=args.blur_sigma,
                             psf=args.psf, phase=args.phase, srf=args.srf, **extra)


def add_cube_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--variable", help="name of the array in .mat/.npz files (default: the only 3-D array)")
    p.add_argument("--layout", choices=["auto", "chw", "hwc"], default="auto",
                   help="array layout: bands first (chw) or last (hwc); auto (the default): hwc for .mat (MATLAB's), "
                        "chw for .npy/.npz, the file's own for TIFF")


def _wavelengths(args: argparse.Namespace) -> Any:
    if getattr(args, "wavelengths", None):
        from csakd.data.readers import read_wavelengths

        return read_wavelengths(args.wavelengths)
    return None


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
    from csakd.io_utils import check_writable

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


# ---------------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from csakd.io_utils import write_json
    from csakd.train.recipe import build_run, train_config
    from csakd.train.setup import setup_process, teardown_process
    from csakd.train.trainer import Trainer

    _check_io(args, {"--out": args.out, "--json": args.json, "--test-json": args.test_json},
              {"--data": args.data, "--val-data": args.val_data, "--test-data": args.test_data, "--aviris": args.aviris,
               "--teacher-checkpoint": args.teacher_checkpoint, "--srf": args.srf, "--psf": args.psf,
               "--wavelengths": args.wavelengths}, folders=["--out"])
    if args.test_json and args.test_json != "-" and Path(args.test_json).exists():  # eval has no --overwrite
        raise InputError(f"--test-json {args.test_json} already exists: remove it or choose another name")
    train_config(args)  # bad settings fail here, before the data are read
    run_dir = Path(args.out)
    if run_dir.exists() and any(run_dir.iterdir()) and not (args.resume or args.overwrite):
        raise InputError(f"run folder {run_dir} is not empty: pass --resume to continue it, or another --out")
    built = build_run(args)
    spec = built.spec
    process = setup_process(spec.train, samples_per_epoch=len(built.train_set))  # rank, group, seed
    try:
        trainer = Trainer(spec, built.train_set, built.val_set, run_dir, resume=args.resume,
                          progress=not args.quiet, process=process)
        if process.dist.is_main:
            for note in built.notes:
                log.info("%s", note)
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_yaml(run_dir / "config.yaml", spec.to_dict())
        t0 = time.monotonic()
        summary = trainer.fit()  # rank 0's summary on every rank
        summary["wall_seconds"] = round(time.monotonic() - t0, 1)
    finally:
        teardown_process(process)
    if not process.dist.is_main:
        return 0
    write_json(run_dir / "summary.json", summary)
    for line in training_report(summary, spec.train.select):
        print(line)
    if args.test_data:
        from csakd.eval_run import EvalOptions

        checkpoints = [str(run_dir / f"{role}.pt") for role in ("teacher", "student")
                       if (run_dir / f"{role}.pt").exists()]
        _evaluate(EvalOptions(checkpoints=checkpoints, data=args.test_data, normalize=args.normalize,
                              center_crop=args.center_crop or None, out=str(run_dir / "test"),
                              device=args.device or "auto", figures=3), args.test_json)
    _json_out(args.json, summary)
    return 0


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    import yaml

    from csakd.io_utils import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(data, sort_keys=False)))


# ---------------------------------------------------------------------------------------------- eval
def eval_options(args: argparse.Namespace) -> Any:
    """``csakd eval``'s options as a :class:`csakd.eval_run.EvalOptions`."""
    from csakd.eval_run import EvalOptions

    return EvalOptions(
        checkpoints=args.checkpoint or [], methods=args.method or [], data=args.data, aviris=args.aviris,
        split=args.split, msi_bands=args.msi_bands, center_crop=args.center_crop, normalize=args.normalize,
        variable=args.variable, layout=args.layout, wavelengths=args.wavelengths, srf=args.srf, scale=args.scale,
        blur_size=args.blur_size, blur_sigma=args.blur_sigma, psf=args.psf, phase=args.phase, snr=args.snr,
        shift=args.shift, bicubic=not args.no_bicubic, fast_paths=args.fast_paths, figures=args.figures,
        out=args.out, device=args.device, seed=args.seed,
    )


def _evaluate(options: Any, json_path: str | None) -> None:
    """Check the outputs of an evaluation, run it (:func:`csakd.eval_run.run_evaluation`) and report it."""
    from csakd.eval_run import run_evaluation
    from csakd.evaluate import format_table
    from csakd.io_utils import check_outputs

    check_outputs({"--out": options.out, "--json": json_path},
                  {"--checkpoint": options.checkpoint_files(), "--data": options.data, "--aviris": options.aviris,
                   "--srf": options.srf, "--psf": options.psf, "--wavelengths": options.wavelengths},
                  overwrite=None, folders=["--out"])
    if options.out and Path(options.out).exists() and not Path(options.out).is_dir():
        raise InputError(f"--out {options.out} is a file: expected a folder for the metrics and figures")
    result = run_evaluation(options)
    print(format_table(result["methods"]))
    for name, delta in result.get("fast_path_deltas", {}).items():
        print(f"{name}: PSNR {delta['psnr_delta']:+.4f} dB, SAM {delta['sam_delta']:+.4f} deg vs fp32 eager")
    if options.out:
        print(f"per-image metrics, table.md and figures in {Path(options.out)}")
    _json_out(json_path, result)


def cmd_eval(args: argparse.Namespace) -> int:
    _evaluate(eval_options(args), args.json)
    return 0


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


# ---------------------------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    from csakd.models import count_config_params, count_macs, count_params, preset_config

    _check_io(args, {"--json": args.json}, {"--checkpoint": args.checkpoint})
    if args.checkpoint:
        from csakd.checkpoint import load_checkpoint

        lm = load_checkpoint(args.checkpoint, scale=args.scale or 4)
        cfg = lm.config
        info: dict[str, Any] = {
            "checkpoint": str(args.checkpoint), "role": lm.role, "bands": cfg.bands, "msi_bands": cfg.msi_bands,
            "scale": cfg.scale, "params": count_params(lm.model), "macs": count_macs(cfg, args.size),
            "size": args.size, "config": cfg.to_dict(), "normalization": lm.normalization.to_dict(),
            "wavelengths": lm.wavelengths, "metrics": lm.metadata.get("metrics"),
        }
    elif args.preset is None and args.paper:
        return _preset_table(args)
    else:
        if args.preset is None:
            raise InputError("csakd info needs --preset NAME or --checkpoint FILE (or --paper alone: the preset table)")
        overrides: dict[str, Any] = {"bands": args.bands, "msi_bands": args.msi_bands, "scale": args.scale or 4}
        cfg = preset_config(args.preset, paper=args.paper, **overrides)
        info = {"preset": args.preset, "bands": cfg.bands, "msi_bands": cfg.msi_bands, "scale": cfg.scale,
                "size": args.size, "params": count_config_params(cfg), "macs": count_macs(cfg, args.size),
                "config": cfg.to_dict()}
    if args.json:
        _json_out(args.json, info)
    if args.json != "-":
        print(f"{info.get('preset', info.get('role'))}: {info['bands']} bands, {info['msi_bands']} MSI bands, "
              f"x{info['scale']}: {info['params'] / 1e6:.2f}M parameters, "
              f"{info['macs'] / 1e9:.2f} GMACs at {args.size}x{args.size}")
    return 0


#: The rows of ``csakd info --paper``: (label, preset, overrides).
PRESET_TABLE: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("teacher", "teacher", {}),
    ("student", "student", {}),
    ("student, `apply_joint_hr_blocks=True`", "student", {"apply_joint_hr_blocks": True}),
    ("lite", "lite", {}),
)


def _preset_table(args: argparse.Namespace) -> int:
    """``csakd info --paper``: parameters and MACs of every preset as the paper's network (the README's table)."""
    from csakd.models import count_config_params, count_macs, preset_config

    shape = {"bands": args.bands, "msi_bands": args.msi_bands, "scale": args.scale or 4}
    rows: list[dict[str, Any]] = []
    for label, name, extra in PRESET_TABLE:
        cfg = preset_config(name, paper=True, **shape, **extra)
        rows.append({"preset": label, "blocks": list(cfg.blocks), "nf": cfg.nf, "gc": cfg.gc, "head": cfg.head,
                     "params": count_config_params(cfg), "macs": count_macs(cfg, args.size)})
    info = {**shape, "size": args.size, "network": "the paper's (reference attention, no residual base)",
            "presets": rows}
    if args.json:
        _json_out(args.json, info)
    if args.json != "-":
        print(f"presets at {shape['bands']} bands, {shape['msi_bands']}-band MSI, x{shape['scale']}, "
              f"{args.size}x{args.size}, as the paper's networks (reference attention, no residual base):")
        print("| preset | blocks (joint HR, joint LR, HSI, MSI) | widths nf/gc | head | parameters | GMACs |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            blocks = ", ".join(str(b) for b in r["blocks"])
            print(f"| {r['preset']} | {blocks} | {r['nf']}/{r['gc']} | {r['head']} "
                  f"| {r['params'] / 1e6:.2f}M | {r['macs'] / 1e9:.1f} |")
    return 0


# ---------------------------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from csakd.bench import bench

    _check_io(args, {"--json": args.json}, {})
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = bench(args.preset, bands=args.bands, msi_bands=args.msi_bands, scale=args.scale, size=args.size,
                   device=args.device, batches=args.batches, repeats=args.repeats, warmup=args.warmup,
                   train_step=args.train_step, paper=args.paper, onnx=not args.no_onnx, residual=args.residual)
    from csakd.envinfo import environment

    result.update(environment())
    for name, entry in result["paths"].items():
        for key, val in entry.items():
            if key.startswith("b"):
                print(f"{name:<26} batch {key[1:]:>3}: {val['median_ms']:9.1f} ms  {val['images_per_s']:8.2f} img/s")
    print(f"fastest at batch {args.batches[0]}: {result['path']}")
    for rate in result["matmul"]:
        bound = result["arithmetic_bound_ms_b1"][rate["dtype"]]
        print(f"{rate['dtype']} matmul {rate['gflops']:.0f} GFLOP/s: "
              f"the network's arithmetic alone takes {bound:.1f} ms")
    _json_out(args.json, result)
    return 0


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csakd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"csakd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("train", help="train teacher and/or student")
    d = p.add_argument_group("data")
    d.add_argument("--data",
                   help="folder of HR-HSI cubes (pairs simulated on the fly; this or --aviris; default: none)")
    d.add_argument("--val-data", help="folder of validation cubes (default: a deterministic split of --data)")
    d.add_argument("--val-fraction", type=float, default=0.2, help="validation share of --data (default 0.2)")
    d.add_argument("--test-data",
                   help="after training, evaluate the best checkpoints on this folder of cubes (default: no "
                        "test)")
    d.add_argument("--test-json", help="with --test-data: write the test metrics as JSON to FILE (default: none)")
    d.add_argument("--aviris",
                   help="root of the reference implementation's AVIRIS layout (train/val.txt; this or "
                        "--data; default: none)")
    d.add_argument("--msi-bands", type=int, default=4, choices=[4, 6],
                   help="AVIRIS layout: hrmsi4 or hrmsi6 (default "
                        "4)")
    d.add_argument("--center-crop", type=int, help="centre crop of each cube (e.g. 256 for cave256-x4; default: none)")
    d.add_argument("--val-crop", type=int,
                   help="validate on the centre crop of this size of each validation cube, 0 for whole cubes "
                        "(default 256: a fixed set that costs little beside the budget)")
    d.add_argument("--normalize", default="max", help="max (each cube by its maximum), none, or a number (default max)")
    add_cube_args(d)
    add_degradation_args(p)
    t = p.add_argument_group("training")
    t.add_argument("--out", required=True, help="run folder (config.yaml, teacher.pt, student.pt, last.pt, ...)")
    t.add_argument("--mode", choices=["cotrain", "offline", "teacher", "student"],
                   help="cotrain: teacher and distilled student together; offline: distil from "
                        "--teacher-checkpoint; teacher / student: one model alone (default cotrain)")
    t.add_argument("--recipe", choices=["default", "paper"],
                   help="settings the options below default to: csakd's (default) or the paper's exactly")
    t.add_argument("--epochs", type=int,
                   help="passes over the training set (default: with --max-minutes, as many steps as the budget "
                        "holds, planned after timing the first steps; without it, 100)")
    t.add_argument("--max-minutes", type=float,
                   help="wall-clock budget in minutes, validations included (default: none)")
    t.add_argument("--val-count", type=int,
                   help="a run planned by --max-minutes validates this many times, evenly (default 10)")
    t.add_argument("--select", choices=["psnr", "sam", "ergas"],
                   help="the validation metric that picks teacher.pt and student.pt (default psnr; sam is the "
                        "paper's rule, which dark pixels dominate on some scenes)")
    t.add_argument("--keep-last", action=argparse.BooleanOptionalAction, default=None,
                   help="keep last.pt (every trained network's weights and optimiser state, for --resume) when the "
                        "run ends by its budget or epochs (default: removed; an interrupted run keeps it)")
    t.add_argument("--warmup", type=float, help="learning-rate warm-up, as a fraction of the run (default 0.05)")
    t.add_argument("--batch-size", type=int,
                   help="the global batch (default 8); under torchrun it is split evenly over the processes")
    t.add_argument("--crop", type=int, help="HR training crop (default: 48 on a CPU, 128 on a GPU; paper 128)")
    t.add_argument("--spectral-augment", type=float, metavar="A",
                   help="strength of the spectral augmentation of simulated pairs: each crop's cube times a random "
                        "brightness exp(U[-A, A]) and a smooth random spectral curve, before it is degraded "
                        "(default 0: none; paper 0)")
    t.add_argument("--lr-teacher", type=float,
                   help="the teacher's AdamW learning rate (default: the recipe's, 5e-4; paper "
                        "1e-4)")
    t.add_argument("--lr-student", type=float,
                   help="the student's AdamW learning rate (default: the recipe's, 5e-4; paper "
                        "1e-4)")
    t.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    t.add_argument("--schedule", choices=["paper", "cosine"],
                   help="cosine: warm-up, then cosine over the run; paper: the paper's schedules "
                        "(default: the recipe's, cosine; paper paper)")
    t.add_argument("--train-snr", type=float,
                   help="training noise on the LR-HSI in dB (default: the recipe's, none; paper "
                        "35)")
    t.add_argument("--mixed-alignment", action="store_true", default=None,
                   help="train on a mix of aligned and shifted (0..--max-shift LR pixels) LR-HSIs")
    t.add_argument("--max-shift", type=int, help="largest shift of --mixed-alignment in LR pixels (default 3)")
    t.add_argument("--val-every", type=int, help="validate every N epochs (default: the recipe's, 1; paper 2)")
    t.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision; auto: bf16 on CUDA, off on the CPU (default: the recipe's, auto; paper off)")
    t.add_argument("--grad-clip", type=float, help="clip the gradient norm at this value (default: none)")
    t.add_argument("--samples-per-epoch", type=int, help="training crops per epoch (default: one per training image)")
    t.add_argument("--workers", type=int, help="data-loader worker processes (default 0: in the main process)")
    t.add_argument("--seed", type=int, help="seed of the weights, crops and noise (default 0)")
    t.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic algorithms (exact resume on the CPU; slower)")
    t.add_argument("--device", help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N (default auto)")
    t.add_argument("--teacher-checkpoint", help="trained teacher for --mode offline (default: none)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    t.add_argument("--overwrite", action="store_true", help="train into a non-empty --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--json", help="write the summary as JSON to FILE (- for stdout; default: none)")
    m = p.add_argument_group("models")
    m.add_argument("--teacher-preset", choices=PRESET_NAMES,
                   help=f"the teacher's network preset: {_PRESET_NAMES} (default: lite-teacher on a CPU, teacher on "
                        "a GPU)")
    m.add_argument("--student-preset", choices=PRESET_NAMES,
                   help=f"the student's network preset: {_PRESET_NAMES} (default: lite on a CPU, student on a GPU)")
    m.add_argument("--teacher-blocks", type=_int_tuple, help="joint HR, joint LR, HSI, MSI (default 6,6,4,4)")
    m.add_argument("--student-blocks", type=_int_tuple, help="joint HR, joint LR, HSI, MSI (default 1,4,4,1)")
    m.add_argument("--student-head", choices=["paper", "compact"],
                   help="the student's head: paper (3x3, 3x3 C->C) or compact (3x3 nf->nf, 1x1 nf->C) "
                        "(default: the preset's, paper; lite compact)")
    m.add_argument("--fusion", choices=["none", "sigmoid", "cross_attention", "csa", "concat_gating"],
                   help="how the four streams are combined (default: the preset's, csa)")
    m.add_argument("--attention", choices=["reference", "paper", "normalized"],
                   help="the attention's form (default: the recipe's, normalized; paper reference)")
    m.add_argument("--residual", choices=["none", "bicubic", "regression"],
                   help="the base the head's output is added to: bicubic upsampling of the LR-HSI, or that plus "
                        "the HR-MSI's detail regressed onto the HSI bands (regression); none = the paper's "
                        "(default: the recipe's, regression; paper none)")
    m.add_argument("--residual-scale", type=float,
                   help="multiply the head's output by this before adding it to the base (default 1)")
    m.add_argument("--nf", type=int, help="feature width of both networks (default: the preset's, 86)")
    m.add_argument("--gc", type=int, help="growth width of both networks (default: the preset's, 43)")
    w = p.add_argument_group("loss weights (0 switches a term off)")
    w.add_argument("--pixel-loss", choices=["smooth_l1", "l1"],
                   help="the pixel and response-distillation terms' distance (default: l1; the paper's recipe: "
                        "smooth_l1)")
    for name in ("pixel", "sam", "beba", "response_kd", "feature_kd"):
        w.add_argument(f"--w-{name.replace('_', '-')}", dest=f"w_{name}", type=float,
                       help=f"weight of the {name.replace('_', ' ')} term (default "
                            + ("0 in the default recipe, 0.1 in the paper's)" if name == "feature_kd"
                               else f"{_LOSS_DEFAULTS[name]:g})"))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="metrics, tables and figures on test data with ground truth")
    p.add_argument("--checkpoint", action="append",
                   help="a checkpoint, FILE or NAME=FILE (repeatable; named by the file's stem by default)")
    p.add_argument("--method", action="append",
                   help="classical baseline to evaluate alongside any checkpoints (repeatable): bicubic, gsa, "
                        "cnmf, hysure (default: bicubic only)")
    p.add_argument("--data",
                   help="folder of HR-HSI test cubes (pairs simulated as the checkpoint was trained; this or "
                        "--aviris; default: none)")
    p.add_argument("--aviris", help="root of the AVIRIS reference layout (this or --data; default: none)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="--aviris split (default test)")
    p.add_argument("--msi-bands", type=int, default=4, choices=[4, 6], help="--aviris: hrmsi4 or hrmsi6 (default 4)")
    p.add_argument("--center-crop", type=int, help="centre crop of each test cube (default: none)")
    p.add_argument("--normalize", default="max", help="max (each cube by its maximum), none, or a number (default max)")
    add_cube_args(p)
    add_degradation_args(p)
    p.add_argument("--snr", type=float, help="noise on the test LR-HSI in dB (default: none)")
    p.add_argument("--shift", type=int, default=0, help="misregister the test LR-HSI by LR pixels (default 0)")
    p.add_argument("--no-bicubic", action="store_true", help="leave out the bicubic baseline")
    p.add_argument("--fast-paths", action="store_true",
                   help="also run each checkpoint through the device's fast path (CPU: ONNX Runtime; GPU: bf16 "
                        "autocast, channels-last) and report its PSNR / SAM difference from fp32 eager")
    p.add_argument("--figures", type=int, default=3, help="figures for the first N images (default 3)")
    p.add_argument("--out", help="folder for metrics.json, metrics.csv, table.md and figures (default: print only)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the test noise (default 0)")
    p.add_argument("--json", help="write the metrics as JSON to FILE (- for stdout; default: none)")
    p.set_defaults(func=cmd_eval)

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

    p = sub.add_parser("bench", help="latency, throughput, memory and training-step time of a preset")
    p.add_argument("--preset", default="student", help=f"network preset: {_PRESET_NAMES} (default student)")
    p.add_argument("--paper", action="store_true", help="the paper's exact network (reference attention, no residual)")
    p.add_argument("--residual", choices=["none", "bicubic", "regression"],
                   help="the residual base (default: the preset's, regression)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--bands", type=int, default=172, help="HSI bands (default 172)")
    p.add_argument("--msi-bands", type=int, default=4, help="MSI bands (default 4)")
    p.add_argument("--scale", type=int, default=4, help="HR / LR grid ratio (default 4)")
    p.add_argument("--size", type=int, default=256, help="HR image side (default 256)")
    p.add_argument("--batches", type=_int_tuple, default=(1,), help="batch sizes, e.g. 1,16 (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per path and batch (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before them (default 2)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's, the cores)")
    p.add_argument("--train-step", action="store_true", help="also time a training step (batch 8, crop 128)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime path")
    p.add_argument("--json", help="write the results as JSON to FILE (- for stdout; default: none)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("info", help="parameters and MACs of a preset or a checkpoint")
    p.add_argument("--preset", help=f"network preset: {_PRESET_NAMES} (default: none; this, --checkpoint or --paper)")
    p.add_argument("--checkpoint", help="a checkpoint to describe instead of a preset (default: none)")
    p.add_argument("--bands", type=int, default=172, help="HSI bands of --preset (default 172)")
    p.add_argument("--msi-bands", type=int, default=4, help="MSI bands of --preset (default 4)")
    p.add_argument("--scale", type=int, help="HR / LR grid ratio of --preset, or of a reference state dict (default 4)")
    p.add_argument("--size", type=int, default=256, help="HR image side for the MAC count (default 256)")
    p.add_argument("--paper", action="store_true",
                   help="the paper's exact network (reference attention, no residual); alone, the table of every "
                        "preset at the paper's setting (172 bands, 4-band MSI, x4, 256x256)")
    p.add_argument("--json", help="write JSON to FILE (- for stdout; default: none)")
    p.set_defaults(func=cmd_info)
    _add_examples(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    if os.environ.get("RANK", "0") != "0":  # other processes of a torchrun launch: warnings only
        level = logging.WARNING
    logging.basicConfig(level=level,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    previous = _handle_sigterm()
    try:
        return int(args.func(args))
    except CsakdError as exc:
        print(f"csakd: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("csakd: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("csakd: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """Raised by SIGTERM while a command runs: it unwinds as Ctrl-C does (temporary files removed, the last
    complete checkpoint kept), then ``main`` prints ``csakd: terminated`` and returns 143 (128 + SIGTERM)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _handle_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; return the previous handler (None elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:  # nohup-style launches that ignore SIGTERM keep ignoring it
        return None
    signal.signal(signal.SIGTERM, _on_sigterm)
    return signal.SIG_DFL if previous is None else previous


if __name__ == "__main__":
    sys.exit(main())
