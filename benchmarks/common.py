"""What every benchmark records beside its figures: the machine, the versions and the date."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from csakd.envinfo import environment

__all__ = ["SHARED_DATA", "environment", "plot_validation_gains", "write_record"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"




def plot_validation_gains(runs: list[tuple[str, list[dict[str, Any]]]], path: Path, size: tuple[float, float]) -> None:
    """Validation PSNR and SAM minus the base's (step 0) against the step: teacher dashed, student solid, one
    colour per run. ``runs``: (label, the ``val/...`` records of a run's metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=size)
    for label, curve in runs:
        for role, style in (("teacher", "--"), ("student", "-")):
            rows = [r for r in curve if r["kind"] == f"val/{role}"]
            if not rows:
                continue
            steps = [r["step"] for r in rows]
            (line,) = axes[0].plot(steps, [r["psnr"] - rows[0]["psnr"] for r in rows], style, label=f"{label} {role}")
            axes[1].plot(steps, [r["sam"] - rows[0]["sam"] for r in rows], style, color=line.get_color())
    axes[0].set(xlabel="step", ylabel="validation PSNR - base (dB)")
    axes[1].set(xlabel="step", ylabel="validation SAM - base (deg)")
    for ax in axes:
        ax.axhline(0, color="k", lw=0.5)
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_record(record: dict[str, Any], json_path: Path, md_path: Path | None, png_path: Path | None,
                 markdown: Any, figure: Any) -> int:
    """Write a benchmark's record as JSON, its Markdown table and figure where asked, and print the table."""
    import json

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    if md_path:
        md_path.write_text(markdown(record))
    if png_path:
        figure(record, png_path)
    print(markdown(record))
    return 0
