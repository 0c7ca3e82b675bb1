"""Does training pay? ``csakd train`` with its defaults on CAVE, evaluated on held-out scenes by rotation.

The ten CAVE scenes sorted by name are cut into folds of two: fold k tests on scenes 2k and 2k+1, which the run
never sees (neither training nor validation); ``csakd train`` gets the other eight with exactly the options the
training issue checks (``--srf nikon_d700.csv --scale 4 --max-minutes M --device cpu``: whole 512x512 scenes,
random crops, its own default validation split of the eight), then ``csakd eval --center-crop 256`` scores on the
test scenes (cave256-x4): the kept teacher and student, their residual base (the untrained network: its head's
last convolution is zero), bicubic upsampling and GSA. Each run's peak RSS, wall time, plan and validation curve
are recorded, and one figure draws the curves (validation PSNR and SAM over the base's, against the step).

    python benchmarks/cave_folds.py --minutes 30 --out runs/folds --json benchmarks/results/folds_cave_cpu.json \
        --md benchmarks/results/folds_cave_cpu.md --png benchmarks/results/folds_cave_cpu.png [--folds 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import SHARED_DATA, environment, plot_validation_gains, write_record

from csakd.data.hr_cubes import list_cube_files

METHODS = ("bicubic", "gsa", "base", "teacher", "student")


def write_base_checkpoint(student_pt: Path, out: Path) -> None:
    """The untrained network of ``student_pt``'s config (its residual base), with the same data facts."""
    from csakd.checkpoint import load_checkpoint, model_payload, save_payload
    from csakd.models import DTSNet

    loaded = load_checkpoint(student_pt)
    base = DTSNet(loaded.config)
    save_payload(out, model_payload(base, role="student", normalization=loaded.normalization,
                                    wavelengths=loaded.wavelengths, response=loaded.response,
                                    degradation=loaded.degradation))


def run_child(argv: list[str], log_path: Path, threads: int | None, cpus: str | None) -> tuple[int, float, float]:
    """Run ``csakd ARGV`` in a child; return its exit code, wall seconds and peak RSS in MB."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    prefix = ["taskset", "-c", cpus] if cpus else []
    tick = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "csakd", *argv], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code, time.monotonic() - tick, usage.ru_maxrss / 1024


def fold_record(k: int, fold_dir: Path, test: list[Path], train_result: tuple[int, float, float],
                minutes: float) -> dict[str, Any]:
    run = fold_dir / "run"
    summary = json.loads((run / "summary.json").read_text())
    evaluation = json.loads((fold_dir / "eval.json").read_text())
    means = {m: evaluation["methods"][m] for m in METHODS if m in evaluation["methods"]}
    curve = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
             if line.strip() and json.loads(line).get("kind", "").startswith("val/")]
    gains = {role: {key: means[role][key] - means["base"][key] for key in ("psnr", "sam")}
             for role in ("teacher", "student") if role in means}
    return {
        "fold": k, "test_scenes": [f.name for f in test], "budget_minutes": minutes,
        "train_exit_code": train_result[0], "train_wall_seconds": round(train_result[1], 1),
        "train_peak_rss_mb": round(train_result[2]), "steps": summary["steps"], "stopped": summary["stopped"],
        "plan": summary.get("plan"), "validation_gains": summary.get("gains"), "kept": summary.get("best"),
        "test": means, "test_gain_over_base": gains, "per_image": evaluation.get("per_image"),
        "validation_curve": curve,
    }


def markdown(record: dict[str, Any]) -> str:
    lines = [f"# csakd train defaults on CAVE, {record['budget_minutes']:g} min per fold ({record['device']})", "",
             f"`{record['command']}`", "",
             "Test scenes of each fold never seen in training or validation; cave256-x4 scoring (centre 256x256, "
             "Nikon D700, 9x9 Gaussian sigma 2, x4). PSNR dB / SAM deg; gains over the residual base.", "",
             "| fold | test scenes | steps | wall s | peak RSS MB | bicubic | GSA | base | teacher | student | "
             "teacher gain | student gain |", "|" + "---|" * 12]
    for f in record["folds"]:
        t = f["test"]
        cells = [f"{t[m]['psnr']:.2f} / {t[m]['sam']:.3f}" if m in t else "-" for m in METHODS]
        gains = [f"{f['test_gain_over_base'][r]['psnr']:+.2f} dB / {f['test_gain_over_base'][r]['sam']:+.3f}"
                 if r in f["test_gain_over_base"] else "-" for r in ("teacher", "student")]
        lines.append(f"| {f['fold']} | {', '.join(f['test_scenes'])} | {f['steps']} | {f['train_wall_seconds']:.0f} | "
                     f"{f['train_peak_rss_mb']} | " + " | ".join(cells + gains) + " |")
    m = record["mean"]
    cells = [f"{m[k]['psnr']:.2f} / {m[k]['sam']:.3f}" if k in m else "-" for k in METHODS]
    gains = [f"{record['mean_gain'][r]['psnr']:+.2f} dB / {record['mean_gain'][r]['sam']:+.3f}"
             if r in record["mean_gain"] else "-" for r in ("teacher", "student")]
    lines.append("| mean | | | | | " + " | ".join(cells + gains) + " |")
    return "\n".join(lines) + "\n"


def figure(record: dict[str, Any], path: Path) -> None:
    plot_validation_gains([(f"fold {f['fold']}", f["validation_curve"]) for f in record["folds"]], path, (10, 3.6))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cave", type=Path, default=SHARED_DATA / "cave", help="the CAVE scene folders")
    p.add_argument("--srf", type=Path, default=SHARED_DATA / "srf" / "nikon_d700.csv", help="the Nikon D700 response")
    p.add_argument("--minutes", type=float, default=30, help="each fold's --max-minutes (default 30)")
    p.add_argument("--folds", default="0,1,2,3,4", help="which folds of two scenes to run (default all five)")
    p.add_argument("--parallel", type=int, default=1, help="folds run at once (default 1)")
    p.add_argument("--threads", type=int, help="threads per run (default: PyTorch's, all cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="work folder (must not exist)")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--md", type=Path)
    p.add_argument("--png", type=Path)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more csakd train options")
    p.add_argument("--combine", type=Path, nargs="+",
                   help="instead of running: merge the folds of these JSON files (runs made in turns) into --json")
    args = p.parse_args(argv)
    if args.combine:
        parts = [json.loads(f.read_text()) for f in args.combine]
        record = dict(parts[0], folds=sorted((f for part in parts for f in part["folds"]), key=lambda f: f["fold"]),
                      command=" ".join(part["command"] for part in parts))
        record.update(summarize(record["folds"]))
        return write_outputs(record, args)
    for needed in (args.cave, args.srf):
        if not needed.exists():
            print(f"{needed} not found: this benchmark needs ../shared/data (or --cave / --srf)", file=sys.stderr)
            return 2
    if args.out is None or args.out.exists():
        print(f"--out {args.out}: give a new work folder", file=sys.stderr)
        return 2
    scenes = list_cube_files(args.cave)
    if len(scenes) < 4:
        print(f"{args.cave}: {len(scenes)} scenes; expected at least 4", file=sys.stderr)
        return 2
    folds = [int(k) for k in args.folds.split(",")]
    jobs = []
    for k in folds:
        test = scenes[2 * k: 2 * k + 2]
        train = [s for s in scenes if s not in test]
        fold_dir = args.out / f"fold{k}"
        for name, files in (("train", train), ("test", test)):
            (fold_dir / name).mkdir(parents=True)
            for f in files:
                (fold_dir / name / f.name).symlink_to(f.resolve())
        jobs.append((k, fold_dir, test))
    train_results: dict[int, tuple[int, float, float]] = {}
    cores = os.cpu_count() or 1
    for start in range(0, len(jobs), args.parallel):
        batch = jobs[start: start + args.parallel]
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(len(batch)) as pool:
            futures = {}
            for slot, (k, fold_dir, _) in enumerate(batch):
                cpus = str(slot % cores) if args.parallel > 1 else None
                argv_train = ["train", "--data", str(fold_dir / "train"), "--srf", str(args.srf), "--scale", "4",
                              "--max-minutes", str(args.minutes), "--device", args.device, "--out",
                              str(fold_dir / "run"), "--quiet", *args.extra]
                futures[k] = pool.submit(run_child, argv_train, fold_dir / "train.log", args.threads, cpus)
            for k, fut in futures.items():
                train_results[k] = fut.result()
                print(f"fold {k}: train exit {train_results[k][0]}, {train_results[k][1]:.0f} s, "
                      f"peak RSS {train_results[k][2]:.0f} MB", flush=True)
    records = []
    for k, fold_dir, test in jobs:
        if train_results[k][0]:
            print(f"fold {k}: training failed, see {fold_dir / 'train.log'}", file=sys.stderr)
            return 1
        run = fold_dir / "run"
        write_base_checkpoint(run / "student.pt", fold_dir / "base.pt")
        kept = [a for role in ("teacher", "student") if (run / f"{role}.pt").exists()
                for a in ("--checkpoint", f"{role}={run / f'{role}.pt'}")]
        code, _, _ = run_child(["eval", "--checkpoint", f"base={fold_dir / 'base.pt'}", *kept, "--method", "gsa",
                                "--data", str(fold_dir / "test"), "--center-crop", "256", "--device", args.device,
                                "--figures", "0", "--json", str(fold_dir / "eval.json")],
                               fold_dir / "eval.log", args.threads, None)
        if code:
            print(f"fold {k}: eval failed, see {fold_dir / 'eval.log'}", file=sys.stderr)
            return 1
        records.append(fold_record(k, fold_dir, test, train_results[k], args.minutes))
    record = {
        "benchmark": "csakd train defaults, CAVE folds of two held-out scenes",
        "command": " ".join(["benchmarks/cave_folds.py", *(sys.argv[1:] if argv is None else argv)]),
        **environment(), "device": args.device, "budget_minutes": args.minutes, "parallel": args.parallel,
        "threads": args.threads, "folds": records, **summarize(records),
        "definitions": "psnr: per-band peak (paper); sam in degrees; ergas with scale 4; scored on each test "
                       "scene's centre 256x256 (cave256-x4)",
    }
    return write_outputs(record, args)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each method over the folds, and the networks' mean gains over the base."""
    mean = {m: {key: sum(r["test"][m][key] for r in records) / len(records) for key in ("psnr", "sam", "ergas")}
            for m in METHODS if all(m in r["test"] for r in records)}
    mean_gain = {role: {key: mean[role][key] - mean["base"][key] for key in ("psnr", "sam")}
                 for role in ("teacher", "student") if role in mean}
    return {"mean": mean, "mean_gain": mean_gain}


def write_outputs(record: dict[str, Any], args: argparse.Namespace) -> int:
    return write_record(record, args.json, args.md, args.png, markdown, figure)


if __name__ == "__main__":
    sys.exit(main())
