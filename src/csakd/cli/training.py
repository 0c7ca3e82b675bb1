"""``csakd train`` and ``csakd eval``: a training run (and its test), and an evaluation on data with ground truth."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from csakd.cli.common import (
    _LOSS_DEFAULTS,
    _PRESET_NAMES,
    DEVICE_HELP,
    PRESET_NAMES,
    _check_io,
    _int_tuple,
    _json_out,
    add_cube_args,
    add_degradation_args,
)
from csakd.errors import InputError
from csakd.train.report import training_report

log = logging.getLogger("csakd")


# ---------------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from csakd.files import write_json
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

    from csakd.files import atomic_write

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
    from csakd.files import check_outputs

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


def add_parsers(sub: Any) -> None:
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
    m.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=None,
                   help="the joint streams also read the base's disagreement with the LR-HSI, Y - S(base) "
                        "(regression residual only; default: on with the regression base, off with --recipe paper "
                        "or --residual none/bicubic; a learned correction that starts at zero)")
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
