"""The paper's ablations as a grid of short ``csakd train`` runs, each student evaluated on a test folder.

Every grid entry is a named list of extra ``csakd train`` options on top of one shared setting (the recipe,
the widths, the budget); each entry trains under ``--minutes`` of wall-clock time (``--max-minutes``) on the
HR-HSI cubes of ``--train`` (pairs simulated on the fly through ``--srf``, a 9x9 Gaussian blur of sigma 2 and
x4 decimation), picks its best checkpoint by validation SAM on ``--val`` (default: the ``--test`` folder, so
the figures are validation figures, not a blind test) and is evaluated with ``csakd eval`` on ``--test``.

The grid (``--list`` prints it; ``--only NAME[,NAME]`` runs a part of it):

- ``default``: the shared setting (CSA fusion, co-training, every loss term, no training noise);
- fusion: ``fusion-none``, ``fusion-sigmoid``, ``fusion-cross_attention``, ``fusion-concat_gating``
  (``--fusion``; ``default`` is ``csa``);
- attention form of the CSA fusion: ``attention-paper`` (softmax of Q K^T / sqrt(d)), ``attention-reference``
  (the authors' code); ``default`` is ``normalized``;
- student blocks (joint HR, joint LR, HSI, MSI; the student never applies its joint-HR blocks):
  ``blocks-1441`` (the paper's student), ``blocks-1221``, ``blocks-0440``, ``blocks-1111``;
- student head: ``head-compact`` (3x3 nf -> nf, 1x1 nf -> C instead of 3x3 nf -> C, 3x3 C -> C), ``lite``
  (blocks 0,2,2,1 and the compact head: the ``lite`` preset's network at these widths);
- loss terms off: ``no-response-kd``, ``no-feature-kd``, ``no-kd`` (both), ``no-beba``, ``no-sam``;
- distillation: ``student-only`` (``--mode student``, no teacher), ``offline`` (``--mode offline`` from a teacher
  trained first with ``--mode teacher`` under the same budget; that teacher is tabulated as ``teacher-offline``);
  ``default`` is online co-training;
- training noise: ``train-snr-35`` (35 dB on the LR-HSI, the paper's setting);
- training alignment: ``mixed-alignment`` (LR-HSI crops randomly misregistered by up to ``--max-shift`` LR pixels).

Widths: ``paper`` (the paper's networks), ``small`` (widths 32/16, teacher 2,2,2,2, student 1,2,2,1: learns
something on 2 CPU cores in minutes), ``tiny`` (widths 8/4, every stream one block, crop 16, one epoch: for
tests). A grid entry's ``--student-blocks`` overrides the widths' student blocks.

Writes ``OUT/NAME/`` (run folder, ``eval.json``) per entry and one table as JSON (``--json``, with the machine,
versions and date) and Markdown (``--md``)::

    python benchmarks/ablations.py --train runs/cave-cpu/train --test runs/cave-cpu/test \
        --srf ../shared/data/srf/nikon_d700.csv --center-crop 256 --minutes 1 --widths small --device cpu \
        --out runs/ablations --json benchmarks/results/ablations_cpu.json --md benchmarks/results/ablations_cpu.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import environment

from csakd.cli import main as csakd_main

WIDTHS = {
    "paper": [],
    "small": ["--nf", "32", "--gc", "16", "--teacher-blocks", "2,2,2,2", "--student-blocks", "1,2,2,1"],
    "tiny": ["--nf", "8", "--gc", "4", "--teacher-blocks", "1,1,1,1", "--student-blocks", "1,1,1,1", "--crop", "16",
             "--batch-size", "2", "--epochs", "1", "--samples-per-epoch", "4", "--val-every", "1"],
}

# name -> (group, extra csakd train options)
GRID: dict[str, tuple[str, list[str]]] = {
    "default": ("reference", []),
    "fusion-none": ("fusion", ["--fusion", "none"]),
    "fusion-sigmoid": ("fusion", ["--fusion", "sigmoid"]),
    "fusion-cross_attention": ("fusion", ["--fusion", "cross_attention"]),
    "fusion-concat_gating": ("fusion", ["--fusion", "concat_gating"]),
    "attention-paper": ("attention form", ["--attention", "paper"]),
    "attention-reference": ("attention form", ["--attention", "reference"]),
    "blocks-1441": ("student blocks", ["--student-blocks", "1,4,4,1"]),
    "blocks-1221": ("student blocks", ["--student-blocks", "1,2,2,1"]),
    "blocks-0440": ("student blocks", ["--student-blocks", "0,4,4,0"]),
    "blocks-1111": ("student blocks", ["--student-blocks", "1,1,1,1"]),
    "head-compact": ("student head", ["--student-head", "compact"]),
    "lite": ("student head", ["--student-blocks", "0,2,2,1", "--student-head", "compact"]),
    "no-response-kd": ("loss terms", ["--w-response-kd", "0"]),
    "no-feature-kd": ("loss terms", ["--w-feature-kd", "0"]),
    "no-kd": ("loss terms", ["--w-response-kd", "0", "--w-feature-kd", "0"]),
    "no-beba": ("loss terms", ["--w-beba", "0"]),
    "no-sam": ("loss terms", ["--w-sam", "0"]),
    "student-only": ("distillation", ["--mode", "student"]),
    "offline": ("distillation", ["--mode", "offline"]),  # + --teacher-checkpoint of the teacher run
    "train-snr-35": ("training noise", ["--train-snr", "35"]),
    "mixed-alignment": ("training alignment", ["--mixed-alignment"]),
    "residual-bicubic": ("residual base", ["--residual", "bicubic"]),
    "residual-regression": ("residual base", ["--residual", "regression"]),
    "residual-none": ("residual base", ["--residual", "none"]),
    "lr-1e-4": ("learning rate", ["--lr-teacher", "1e-4", "--lr-student", "1e-4"]),
    "residual-scale-0.1": ("residual scale", ["--residual-scale", "0.1"]),
    "residual-scale-0.02": ("residual scale", ["--residual-scale", "0.02"]),
    "sam-weight-1": ("loss terms", ["--w-sam", "1"]),
}
TEACHER_RUN = "teacher-offline"
METRICS = ("psnr", "sam", "ergas", "rmse", "ssim")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--train", type=Path, help="folder of HR-HSI training cubes")
    p.add_argument("--test", type=Path, help="folder of HR-HSI test cubes")
    p.add_argument("--val", type=Path, help="validation cubes that pick the best checkpoint (default: --test)")
    p.add_argument("--srf", help="spectral response (csakd train --srf)")
    p.add_argument("--minutes", type=float, default=1.0, help="wall-clock budget of each training run (default 1)")
    p.add_argument("--only", help="comma-separated grid entries to run (default: all)")
    p.add_argument("--widths", choices=sorted(WIDTHS), default="small")
    p.add_argument("--recipe", default="default", choices=["default", "paper"])
    p.add_argument("--crop", type=int, default=64, help="HR training crop (default 64)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--center-crop", type=int, help="centre crop of each cube, train and test (e.g. 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for the runs (must not exist, or be empty)")
    p.add_argument("--json", type=Path, help="the table as JSON (default OUT/ablations.json)")
    p.add_argument("--md", type=Path, help="the table as Markdown (default OUT/ablations.md)")
    p.add_argument("--list", action="store_true", help="print the grid and exit")
    p.add_argument("--resume", action="store_true",
                   help="continue in a non-empty --out: finished entries (NAME/row.json) are reused, others rerun")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more csakd train options for every run")
    return p


def selected(only: str | None) -> list[str]:
    if not only:
        return list(GRID)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in GRID]
    if unknown:
        raise SystemExit(f"ablations: unknown grid entries {unknown}; known: {', '.join(GRID)}")
    return names


def train_argv(args: argparse.Namespace, run_dir: Path, options: Sequence[str]) -> list[str]:
    """The ``csakd train`` arguments of one run: the shared setting, the widths, ``--extra``, then ``options``."""
    argv = ["train", "--data", str(args.train), "--val-data", str(args.val or args.test), "--srf", str(args.srf),
            "--out", str(run_dir), "--max-minutes", str(args.minutes), "--epochs", "100000",
            "--crop", str(args.crop), "--batch-size", str(args.batch_size), "--samples-per-epoch", "64",
            "--val-every", "5", "--device", args.device, "--recipe", args.recipe, "--seed", str(args.seed),
            "--quiet", "--keep-last"]  # the last weights too, for comparisons of the trained networks
    if args.center_crop:
        argv += ["--center-crop", str(args.center_crop)]
    return [*argv, *WIDTHS[args.widths], *args.extra, *options]  # later options win


def train_run(args: argparse.Namespace, run_dir: Path, options: Sequence[str]) -> tuple[int, float]:
    t0 = time.monotonic()
    code = csakd_main(train_argv(args, run_dir, options))
    return code, time.monotonic() - t0


def eval_run(args: argparse.Namespace, checkpoint: Path, out: Path) -> tuple[int, dict[str, Any]]:
    argv = ["eval", "--checkpoint", str(checkpoint), "--data", str(args.test), "--device", args.device,
            "--figures", "0", "--out", str(out / "eval"), "--json", str(out / "eval.json")]
    if args.center_crop:
        argv += ["--center-crop", str(args.center_crop)]
    code = csakd_main(argv)
    if code:
        return code, {}
    return 0, json.loads((out / "eval.json").read_text())


def one_entry(args: argparse.Namespace, name: str, group: str, options: list[str], role: str,
              label: str | None = None) -> dict[str, Any]:
    run_dir = args.out / name
    row: dict[str, Any] = {"name": name, "group": group, "options": label or " ".join(options)}
    finished = run_dir / "row.json"
    if args.resume and finished.exists():  # done in an earlier, interrupted call
        print(f"ablations: {name} done before, reusing {finished}", file=sys.stderr)
        return dict(json.loads(finished.read_text()))
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an entry that did not finish starts again
    code, seconds = train_run(args, run_dir, options)
    row["train_seconds"] = round(seconds, 1)
    if code:
        row["error"] = f"csakd train exited with {code}"
        return row
    summary = json.loads((run_dir / "summary.json").read_text())
    row["epochs"], row["steps"] = summary.get("epochs"), summary.get("steps")
    # the epoch of the checkpoint kept (0: the network as initialised, i.e. its residual base)
    row["best_epoch"] = summary.get("best", {}).get(role, {}).get("epoch")
    code, result = eval_run(args, run_dir / f"{role}.pt", run_dir)
    if code:
        row["error"] = f"csakd eval exited with {code}"
        return row
    row.update({k: result["methods"][role][k] for k in METRICS if k in result["methods"][role]})
    row["params"] = result.get("complexity", {}).get(role, {}).get("params")
    row["bicubic"] = {k: result["methods"]["bicubic"][k] for k in METRICS if k in result["methods"]["bicubic"]}
    finished.write_text(json.dumps(row, indent=2) + "\n")
    return row


def _blank(value: Any) -> str:
    return "" if value is None else str(value)


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| entry | group | options | PSNR dB | SAM deg | ERGAS | RMSE (data units) | SSIM | params "
             "| epochs | "
             "best epoch | train s |", "| --- | --- | --- |" + " ---: |" * 9]

    def f(v: Any, digits: int) -> str:
        return "" if v is None else f"{v:.{digits}f}"

    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['group']} | `{r['options']}` | {r['error']} | | | | | | | | |")
            continue
        lines.append(f"| {r['name']} | {r['group']} | `{r['options']}` | {f(r.get('psnr'), 2)} | "
                     f"{f(r.get('sam'), 3)} | {f(r.get('ergas'), 3)} | {f(r.get('rmse'), 4)} | {f(r.get('ssim'), 4)} | "
                     f"{r.get('params') or ''} | {r.get('epochs') or ''} | {_blank(r.get('best_epoch'))} | "
                     f"{r.get('train_seconds')} |")
    bic = next((r["bicubic"] for r in rows if "bicubic" in r), None)
    if bic:
        lines.append(f"| bicubic | reference | | {f(bic.get('psnr'), 2)} | {f(bic.get('sam'), 3)} | "
                     f"{f(bic.get('ergas'), 3)} | {f(bic.get('rmse'), 4)} | {f(bic.get('ssim'), 4)} | 0 | | | |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    names = selected(args.only)
    if args.list:
        for name in names:
            group, options = GRID[name]
            print(f"{name:<24}{group:<16}{' '.join(options)}")
        return 0
    missing = [o for o in ("train", "test", "srf", "out") if getattr(args, o) is None]
    if missing:
        p.error("the following arguments are required: " + ", ".join(f"--{m}" for m in missing))
    for folder in (args.train, args.test, args.val):
        if folder is not None and not folder.is_dir():
            p.error(f"{folder} is not a folder")
    if args.out.exists() and any(args.out.iterdir()) and not args.resume:
        p.error(f"{args.out} exists and is not empty: pass --resume to reuse its finished entries")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.json or args.out / "ablations.json"
    md_path = args.md or args.out / "ablations.md"

    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    if "offline" in names:  # the offline student needs a trained teacher first
        rows.append(one_entry(args, TEACHER_RUN, "distillation", ["--mode", "teacher"], "teacher"))
    for name in names:
        group, options = GRID[name]
        if name == "offline":
            teacher = args.out / TEACHER_RUN / "teacher.pt"
            if not teacher.exists():
                rows.append({"name": name, "group": group, "options": " ".join(options),
                             "error": "no teacher checkpoint (the teacher run failed)"})
                continue
            options = [*options, "--teacher-checkpoint", str(teacher)]
        print(f"ablations: {name} ({' '.join(options) or 'shared setting'})", file=sys.stderr)
        label = " ".join(GRID[name][1])
        if name == "offline":
            label += f" --teacher-checkpoint {TEACHER_RUN}/teacher.pt"
        rows.append(one_entry(args, name, group, options, "student", label))

    record = {
        "benchmark": "ablations (benchmarks/ablations.py)",
        "command": " ".join(sys.argv if argv is None else ["benchmarks/ablations.py", *argv]),
        **environment(),
        "train": str(args.train), "test": str(args.test), "val": str(args.val or args.test),
        "srf": str(args.srf), "center_crop": args.center_crop, "widths": args.widths,
        "width_options": " ".join(WIDTHS[args.widths]), "extra_options": " ".join(args.extra), "recipe": args.recipe,
        "budget_minutes": args.minutes,
        "total_seconds": round(time.monotonic() - t0, 1),
        "rows": rows,
        "definitions": "psnr: per-band peak (paper); sam in degrees; ergas with the scale; rmse in the data's units; "
                       "ssim mean over bands; the student is evaluated unless the row is a teacher run",
    }
    for path in (json_path, md_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    header = (f"Ablations: widths {args.widths}, recipe {args.recipe}, {args.minutes:g} min per run, "
              + (f"every run with `{' '.join(args.extra)}`, " if args.extra else "") + f"{record.get('date', '')}")
    md_path.write_text(markdown(rows, header))
    print(f"wrote {json_path} and {md_path}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
