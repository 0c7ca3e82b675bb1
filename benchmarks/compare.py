"""One comparison table: classical baselines, the teacher, the distilled student and the same student trained
without distillation, on one test folder.

Trains two runs under the same budget and settings (``--minutes`` of wall-clock time each, pairs simulated on
the fly from the HR-HSI cubes of ``--train`` through ``--srf``, a 9x9 Gaussian blur of sigma 2 and x4
decimation; best checkpoints by validation SAM on ``--val``):

- ``kd``: teacher and student co-trained (``csakd train --mode cotrain``, every loss term);
- ``plain``: the same student alone (``--mode student``: no teacher, no distillation terms);

then runs ``csakd eval`` once on ``--test`` with ``teacher``, ``student`` (both from ``kd``),
``student-no-kd`` (from ``plain``) and the baselines of ``--methods`` (bicubic always), and writes the table
as JSON (``--json``: every metric, per image too, with parameters, MACs, seconds per image, the commands, the
machine, versions and date), Markdown (``--md``) and the per-scene figure sheets (false-colour composites,
error maps, spectra) of the first ``--figures`` test scenes beside the Markdown file::

    python benchmarks/compare.py --train runs/cave5/train --val runs/cave5/val --test runs/cave5/test \
        --srf ../shared/data/srf/nikon_d700.csv --center-crop 256 --minutes 8 --widths small --device cpu \
        --out runs/compare --json benchmarks/results/compare_cave_cpu.json --md benchmarks/results/compare_cave_cpu.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ablations import WIDTHS, train_argv
from common import environment

from csakd.cli import main as csakd_main

RUNS = {"kd": ["--mode", "cotrain"], "plain": ["--mode", "student"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--train", type=Path, required=True, help="folder of HR-HSI training cubes")
    p.add_argument("--val", type=Path, required=True, help="validation cubes that pick the best checkpoints")
    p.add_argument("--test", type=Path, required=True, help="folder of HR-HSI test cubes")
    p.add_argument("--srf", required=True, help="spectral response (csakd train --srf)")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of each training run (default 8)")
    p.add_argument("--widths", choices=sorted(WIDTHS), default="small")
    p.add_argument("--recipe", default="default", choices=["default", "paper"])
    p.add_argument("--crop", type=int, default=64, help="HR training crop (default 64)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--center-crop", type=int, help="centre crop of each cube, train and test (e.g. 256)")
    p.add_argument("--methods", default="gsa,cnmf,hysure", help="baselines besides bicubic (default gsa,cnmf,hysure)")
    p.add_argument("--figures", type=int, default=2, help="figure sheets for the first N test scenes (default 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="folder for the runs and the evaluation (must not exist)")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--md", type=Path, required=True)
    p.set_defaults(extra=[])  # the ablation grid's shared training setting (ablations.train_argv), nothing added
    return p


def machine_text(machine: dict) -> str:
    return (f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('torch_threads', '?')} PyTorch thread(s)")


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    for folder in (args.train, args.val, args.test):
        if not folder.is_dir():
            p.error(f"{folder} is not a folder")
    if args.out.exists():
        p.error(f"{args.out} exists: give a new folder")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    commands: dict[str, list[str]] = {}
    runs: dict[str, dict] = {}
    for name, options in RUNS.items():
        argv_run = train_argv(args, args.out / name, options)
        commands[name] = ["csakd", *argv_run]
        t0 = time.monotonic()
        if csakd_main(argv_run):
            print(f"compare: the {name} run failed", file=sys.stderr)
            return 1
        summary = json.loads((args.out / name / "summary.json").read_text())
        runs[name] = {"train_seconds": round(time.monotonic() - t0, 1), "epochs": summary.get("epochs"),
                      "steps": summary.get("steps")}
    eval_dir = args.out / "eval"
    argv_eval = ["eval", "--checkpoint", f"teacher={args.out / 'kd' / 'teacher.pt'}",
                 "--checkpoint", f"student={args.out / 'kd' / 'student.pt'}",
                 "--checkpoint", f"student-no-kd={args.out / 'plain' / 'student.pt'}",
                 *[a for m in methods for a in ("--method", m)], "--data", str(args.test), "--device", args.device,
                 "--figures", str(args.figures), "--out", str(eval_dir), "--json", str(args.out / "eval.json")]
    if args.center_crop:
        argv_eval += ["--center-crop", str(args.center_crop)]
    commands["eval"] = ["csakd", *argv_eval]
    if csakd_main(argv_eval):
        print("compare: csakd eval failed", file=sys.stderr)
        return 1
    result = json.loads((args.out / "eval.json").read_text())
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    record = {
        "benchmark": "comparison table (benchmarks/compare.py)",
        "command": " ".join(sys.argv if argv is None else ["benchmarks/compare.py", *argv]),
        "commands": {k: " ".join(v) for k, v in commands.items()},
        **environment(),
        "train": str(args.train), "val": str(args.val), "test": str(args.test),
        "test_scenes": sorted({row["image"] for row in result.get("per_image", []) if "image" in row}),
        "widths": args.widths, "width_options": " ".join(WIDTHS[args.widths]), "recipe": args.recipe,
        "budget_minutes": args.minutes, "runs": runs,
        "methods": result["methods"], "complexity": metrics.get("complexity", {}),
        "per_image": result.get("per_image", []),
        "definitions": "psnr: per-band peak (paper); sam in degrees; ergas with the scale; rmse in the data's units; "
                       "ssim mean over bands; seconds per image on the device above",
    }
    for path in (args.json, args.md):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    figures = sorted(eval_dir.glob("*.png"))[: args.figures]
    stem = args.md.with_suffix("")
    copied = []
    for fig in figures:
        target = stem.parent / f"{stem.name}_{fig.name}"
        shutil.copyfile(fig, target)
        copied.append(target.name)
    runs_text = ", ".join(f"{k}: {v['steps']} steps in {v['train_seconds']:.0f} s" for k, v in runs.items())
    lines = [
        f"# Comparison on {args.test.name}: widths {args.widths}, recipe {args.recipe}, "
        f"{args.minutes:g} min per training run ({record.get('date', '')})",
        "",
        f"Machine: {machine_text(record.get('machine', {}))}. Runs: {runs_text}.",
        "",
        (eval_dir / "table.md").read_text().rstrip(),
        "",
        "Commands:",
        "",
        "```bash",
        *[" ".join(v) for v in commands.values()],
        "```",
        "",
        *[f"![{name}]({name})" for name in copied],
    ]
    args.md.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.json} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
