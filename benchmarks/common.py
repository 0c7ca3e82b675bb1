"""What every benchmark records beside its figures: the machine, the versions and the date."""

from __future__ import annotations

from pathlib import Path

from csakd.envinfo import environment

__all__ = ["SHARED_DATA", "environment"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


