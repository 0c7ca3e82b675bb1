"""One table and one figure of finished ``csakd train`` runs: what each setting did to the networks' gains.

Reads each run folder's ``config.yaml``, ``summary.json`` and ``metrics.jsonl`` and writes, per run: its settings
(mode, crop, presets and blocks, loss weights, pixel loss), steps, minutes, the plan, and for teacher and student
the validation gain of the kept checkpoint over the untrained base (step 0) and the gain at the end; the figure
draws each run's validation PSNR and SAM minus its base's against the step.

    python benchmarks/training_runs.py NAME=RUN ... --note "one line on how the runs were made" \
        --json benchmarks/results/training_runs_cave_cpu.json --md ... --png ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from common import environment, plot_validation_gains, write_record


def read_run(name: str, folder: Path) -> dict[str, Any]:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    curve = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
             if line.strip() and json.loads(line).get("kind", "").startswith("val/")]
    train = config["train"]
    nets = {role: config[role] for role in ("teacher", "student") if config.get(role)}
    row: dict[str, Any] = {
        "name": name, "folder": str(folder), "mode": train["mode"], "crop": train["crop"],
        "batch_size": train["batch_size"], "lr": [train["lr_teacher"], train["lr_student"]],
        "pixel_loss": train.get("pixel_loss", "smooth_l1"), "losses": train["losses"],
        "networks": {role: {"name": c["name"], "blocks": c["blocks"], "nf": c["nf"]} for role, c in nets.items()},
        "budget_minutes": train["max_minutes"], "steps": summary["steps"], "seconds": summary["seconds"],
        "stopped": summary.get("stopped"), "plan": summary.get("plan"), "validation_curve": curve,
    }
    for role in nets:
        rows = [r for r in curve if r["kind"] == f"val/{role}"]
        if not rows:
            continue
        base, last = rows[0], rows[-1]
        kept = summary["best"].get(role, {})
        row[role] = {"base_psnr": base["psnr"], "base_sam": base["sam"],
                     "kept_step": kept.get("step"), "kept_gain_psnr": kept.get("psnr", base["psnr"]) - base["psnr"],
                     "kept_gain_sam": kept.get("sam", base["sam"]) - base["sam"],
                     "end_gain_psnr": last["psnr"] - base["psnr"], "end_gain_sam": last["sam"] - base["sam"]}
    return row


def markdown(record: dict[str, Any]) -> str:
    lines = [f"# csakd train runs ({record['machine'].get('cpu', '')})", "", record["note"], "",
             "Validation gains of the kept checkpoints over the untrained base (PSNR dB / SAM deg).", "",
             "| run | mode | crop | teacher blocks | pixel | KD resp / feat | steps | min | teacher gain "
             "| student gain |",
             "|" + "---|" * 10]
    for r in record["runs"]:
        t = r.get("teacher")
        s = r.get("student")
        blocks = r["networks"].get("teacher", {}).get("blocks", "-")
        cells = [f"{x['kept_gain_psnr']:+.2f} / {x['kept_gain_sam']:+.3f} (step {x['kept_step']})" if x else "-"
                 for x in (t, s)]
        kd = f"{r['losses']['response_kd']:g} / {r['losses']['feature_kd']:g}" if r["mode"] == "cotrain" else "-"
        lines.append(f"| {r['name']} | {r['mode']} | {r['crop']} | {blocks} | {r['pixel_loss']} | {kd} | "
                     f"{r['steps']} | {r['seconds'] / 60:.1f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def figure(record: dict[str, Any], path: Path) -> None:
    plot_validation_gains([(r["name"], r["validation_curve"]) for r in record["runs"]], path, (11, 4))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER")
    p.add_argument("--note", default="", help="how the runs were made (machine load, data, split)")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--md", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args(argv)
    runs = []
    for spec in args.runs:
        name, _, folder = spec.partition("=")
        if not folder or not (Path(folder) / "summary.json").exists():
            print(f"{spec}: expected NAME=RUN_FOLDER of a finished csakd train run", file=sys.stderr)
            return 2
        runs.append(read_run(name, Path(folder)))
    record = {"benchmark": "csakd train runs", "command": " ".join(["benchmarks/training_runs.py",
                                                                       *(sys.argv[1:] if argv is None else argv)]),
              **environment(), "note": args.note, "runs": runs}
    return write_record(record, args.json, args.md, args.png, markdown, figure)


if __name__ == "__main__":
    sys.exit(main())
