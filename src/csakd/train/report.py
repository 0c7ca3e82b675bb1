"""What ``csakd train`` reports when a run ends: why it ended, and what each kept network gained over its base.

Plain Python (no PyTorch), so that the command line can import it cheaply.
"""

from __future__ import annotations

from typing import Any

STOP_REASONS = {
    "budget": "the time budget (--max-minutes) ran out",
    "steps": "the planned steps were done",
    "epochs": "the epochs (--epochs) were done",
    "paused": "it was paused before the end",
}


def training_report(summary: dict[str, Any], select: str) -> list[str]:
    """The lines ``csakd train`` ends with: why it ended, and what each kept network gained over its base."""
    lines = [f"training ended after {summary['steps']} steps in {summary['seconds'] / 60:.1f} min: "
             f"{STOP_REASONS.get(summary['stopped'], summary['stopped'])}"]
    gains = summary.get("gains", {})
    for role, m in summary["best"].items():
        if "psnr" not in m:
            continue
        line = (f"kept {role}: step {m['step']}, validation PSNR {m['psnr']:.2f} dB, SAM {m['sam']:.3f} deg "
                f"(best by {select})")
        gain = gains.get(role)
        if gain is not None:
            if int(gain["step"]) == 0:
                line += f"; this is its untrained base: training did not improve on it by validation {select}"
            else:
                line += f"; over its base: {gain['psnr']:+.2f} dB, {gain['sam']:+.3f} deg"
        lines.append(line)
    return lines
