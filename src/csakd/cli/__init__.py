"""The ``csakd`` command: demo, simulate, train, eval, fuse, fit-scene, export, bench, info.

Every command checks its inputs before it writes anything; ``--json FILE`` writes its result as JSON
(``-`` for stdout). csakd's own errors print as one line (``csakd: error: ...``) with exit code 2.

The parser and :func:`main` are in :mod:`csakd.cli.main`, what the commands share in :mod:`csakd.cli.common`,
and each group of commands (its options and what it runs) in :mod:`~csakd.cli.data` (demo, simulate),
:mod:`~csakd.cli.training` (train, eval), :mod:`~csakd.cli.fusion` (fuse, fit-scene, export) and
:mod:`~csakd.cli.describe` (bench, info). Importing it imports no PyTorch.
"""

from __future__ import annotations

from csakd.cli.common import (
    _LOSS_DEFAULTS,
    _PRESET_NAMES,
    DEVICE_HELP,
    EXAMPLES,
    PRESET_NAMES,
    HelpFormatter,
    add_cube_args,
    add_degradation_args,
    degradation_config,
)
from csakd.cli.main import Terminated, build_parser, main
from csakd.cli.training import eval_options, training_report

__all__ = [
    "DEVICE_HELP",
    "EXAMPLES",
    "PRESET_NAMES",
    "_LOSS_DEFAULTS",
    "_PRESET_NAMES",
    "HelpFormatter",
    "Terminated",
    "add_cube_args",
    "add_degradation_args",
    "build_parser",
    "degradation_config",
    "eval_options",
    "main",
    "training_report",
]
