"""The ``csakd`` parser (each command group adds its own subcommands), and :func:`main`: run a command, print
csakd's errors as one line, and turn SIGTERM into a clean interrupt."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import csakd.cli
from csakd import __version__
from csakd.cli import data, describe, fusion, training
from csakd.cli.common import _add_examples
from csakd.errors import CsakdError


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csakd", description=(csakd.cli.__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"csakd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    for group in (data, training, fusion, describe):  # the commands' order in --help
        group.add_parsers(sub)
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

