"""Every ``csakd ...`` command line the README shows runs (on tiny stand-in files) or at least parses.

The lines come from README.md itself: fenced code blocks (backslash continuations joined, ``&&`` chains split,
trailing ``# comments`` dropped; ``torchrun ... -m csakd ...`` lines from ``-m csakd`` on) and inline code spans
that start with ``csakd COMMAND``. ``[--opt VALUE]`` brackets are taken as given (their first alternative of
``a | b`` or ``x|y``). Then, for each line:

* every ``--option`` must be one of the command's own option strings, spelled out (an unknown option or an
  abbreviation fails: README and CLI cannot drift);
* placeholders (ALL-CAPS words: ``DIR``, ``FILE``, ``RUN/student.pt``, ``LR.tif``...) become tiny files this test
  makes, chosen by the option they follow (:data:`ROLES`); literal paths stay as they are, in one working folder
  where the lines run in README order (so ``runs/kd/student.pt`` is the one a README line trained);
* :data:`TINY` adds or replaces options that keep each command small (one epoch, narrow networks, a few steps);
* the line runs through :func:`csakd.cli.main` and must exit 0; a line that needs data that cannot exist here (a
  literal input file that is absent, such as ``../shared/data/...``, an ``--aviris`` root, a torchrun launch) or
  shows only part of a command (``...``) is checked by the parser alone.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from csakd.cli import build_parser, main
from csakd.data import Cube, read_cube, write_cube

pytestmark = pytest.mark.usefixtures("one_thread")

README = Path(__file__).resolve().parents[1] / "README.md"

#: What the value of each option is, for placeholders: an input role (a tiny file made here) or ``out``.
ROLES = {
    "--data": "cubes", "--val-data": "cubes", "--test-data": "cubes",
    "--srf": "srf", "--response": "srf",
    "--hr-hsi": "hr",
    "--lr-hsi": "lr", "--lr": "lr", "--hr-msi": "msi", "--msi": "msi",
    "--checkpoint": "checkpoint", "--teacher-checkpoint": "checkpoint",
    "--out": "out", "--out-lr": "out", "--out-msi": "out", "--report-dir": "out", "--json": "out",
    "--test-json": "out",
}
#: Values of placeholders that are numbers or names rather than files.
VALUES = {"N": "2", "NAME": "model"}
#: Output placeholders of file options get these extensions (a folder otherwise).
OUT_SUFFIX = {"--json": ".json", "--test-json": ".json", "--out-lr": ".npz", "--out-msi": ".npz"}
FILE_OUT_COMMANDS = {"fuse", "fit-scene", "export"}  # their --out is a file
#: A marker in TINY: drop the option (and its value).
DROP = object()
#: Options that keep each command tiny: value (None for a flag) or DROP; given values are replaced.
TINY: dict[str, dict[str, object]] = {
    # 18 s: the demo refuses a budget shorter than a step and a validation, which a loaded 2-core machine
    # stretched to 4.3 s + 0.9 s (64-pixel crops)
    "demo": {"--minutes": "0.3", "--quiet": None},
    "train": {"--epochs": "1", "--crop": "16", "--batch-size": "2", "--nf": "8", "--gc": "4",
              "--teacher-blocks": "1,1,1,1", "--student-blocks": "1,1,1,1", "--device": "cpu", "--quiet": None,
              "--val-fraction": "0.34", "--max-minutes": DROP, "--center-crop": DROP},
    "eval": {"--figures": "1", "--device": "cpu", "--center-crop": DROP},
    "fuse": {"--device": "cpu"},
    "fit-scene": {"--steps": "2", "--minutes": DROP, "--nf": "8", "--gc": "4", "--blocks": "0,1,1,1", "--crop": "16",
                  "--holdout": "0", "--quiet": None, "--no-figures": None, "--device": "cpu", "--threads": "1"},
    "bench": {"--bands": "8", "--msi-bands": "3", "--size": "32", "--repeats": "1", "--warmup": "0", "--batches": "1",
              "--no-onnx": None, "--train-step": DROP, "--device": "cpu"},
    "info": {"--size": "64"},
}
#: The one tiny run that ``RUN/...`` and checkpoint placeholders stand for (the test's own).
TINY_TRAIN = ["--epochs", "1", "--crop", "16", "--batch-size", "2", "--nf", "8", "--gc", "4", "--teacher-blocks",
              "1,1,1,1", "--student-blocks", "1,1,1,1", "--device", "cpu", "--quiet", "--val-fraction", "0.34"]

PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Za-z0-9]+)?$")


@dataclass
class Line:
    """One command line of the README: its tokens after ``csakd`` and where it came from."""

    text: str
    tokens: list[str]
    partial: bool = False  # shows part of a command ("..."): option names are checked, nothing runs
    parse_only: str = ""  # why it cannot run here
    fragment: bool = False  # an inline span in prose: run when it is a whole command, else names checked only


@dataclass
class Workspace:
    root: Path
    made: dict[str, Path] = field(default_factory=dict)
    count: int = 0


# ------------------------------------------------------------------------------------------------ extraction
def _unbracket(text: str) -> str:
    """``[--a X | --b Y]`` -> ``--a X``; ``[--mode x|y]`` -> ``--mode x``."""
    text = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(" | ")[0], text)
    return " ".join(t.split("|")[0] if "|" in t and not t.startswith("|") else t for t in text.split())


def _line(text: str, *, parse_only: str = "", fragment: bool = False) -> Line | None:
    text = _unbracket(text.strip())
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    if len(tokens) < 2 or tokens[0] != "csakd":
        return None
    partial = "..." in tokens
    return Line(text, [t for t in tokens[1:] if t != "..."], partial=partial, parse_only=parse_only,
                fragment=fragment)


def readme_lines(text: str) -> list[Line]:
    """The ``csakd`` command lines of a README's text, in order (see the module docstring)."""
    lines: list[Line] = []
    fence = False
    pending = ""
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            fence, pending = not fence, ""
            continue
        if fence:
            pending += raw.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            full, pending = pending, ""
            full = re.sub(r"\s+#\s.*$", "", full)
            if full.lstrip().startswith("#"):
                continue
            for segment in full.split("&&"):
                seg = segment.strip()
                if " -m csakd " in f" {seg} " and not seg.startswith("csakd"):
                    found = _line("csakd " + seg.split("-m csakd", 1)[1], parse_only="a torchrun launch")
                else:
                    found = _line(seg)
                if found:
                    lines.append(found)
        else:
            for span in re.findall(r"`(csakd [^`]+)`", raw):
                found = _line(span, fragment=not raw.lstrip().startswith("|"))  # table rows are whole commands
                if found:
                    lines.append(found)
    return lines


# ------------------------------------------------------------------------------------------------ checking
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def check_option_names(line: Line, parser: argparse.ArgumentParser) -> None:
    """Every ``--option`` of ``line`` is one of its command's option strings, spelled out."""
    subs = _subparsers(parser)
    command = line.tokens[0]
    assert command in subs, f"README line {line.text!r}: unknown command {command!r} (known: {', '.join(subs)})"
    known = set(subs[command]._option_string_actions)
    for token in line.tokens[1:]:
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            assert name in known, f"README line {line.text!r}: csakd {command} has no option {name}"


def _is_placeholder(value: str) -> bool:
    return any(PLACEHOLDER.match(part) for part in re.split(r"[/=]", value) if part)


def _set_option(tokens: list[str], option: str, value: object) -> list[str]:
    """``tokens`` with ``option`` set to ``value`` (a flag for None; removed for DROP)."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == option:
            takes_value = i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
            i += 2 if takes_value else 1
            continue
        out.append(tokens[i])
        i += 1
    if value is DROP:
        return out
    return [*out, option] if value is None else [*out, option, str(value)]


def _stand_in(ws: Workspace, command: str, option: str, value: str) -> str | None:
    """The tiny file (or new output path) a placeholder ``value`` of ``option`` stands for; None: no stand-in."""
    if value in VALUES:
        return VALUES[value]
    role = ROLES.get(option)
    if role == "out":
        ws.count += 1
        suffix = OUT_SUFFIX.get(option, ".npz" if option == "--out" and command in FILE_OUT_COMMANDS else "")
        if option == "--out" and command == "export":
            suffix = ".onnx"
        return str(ws.root / "outputs" / f"{ws.count}{Path(value).suffix or suffix}")
    if role == "checkpoint":
        name, sep, path = value.rpartition("=")
        kind = "teacher" if "teacher" in Path(path).stem.lower() else "student"
        target = ws.made["onnx"] if path.endswith(".onnx") else ws.made[kind]
        return f"{name}{sep}{target}"
    if role in ("lr", "msi"):
        suffix = Path(value).suffix or ".npz"
        key = f"{role}{suffix}"
        if key not in ws.made:
            ws.made[key] = write_cube(ws.root / "inputs" / key, read_cube(ws.made[f"{role}.npz"]))
        return str(ws.made[key])
    if role in ws.made:
        return str(ws.made[role])
    return None


def prepare(line: Line, ws: Workspace) -> tuple[list[str], str]:
    """The argv to run for ``line`` and, when it cannot run here, why (then it is only parsed)."""
    command, tokens = line.tokens[0], list(line.tokens)
    why = line.parse_only or ("it shows part of a command" if line.partial else "")
    out: list[str] = [command]
    i = 1
    while i < len(tokens):
        token = tokens[i]
        out.append(token)
        has_value = token.startswith("--") and i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
        if not has_value:
            i += 1
            continue
        value = tokens[i + 1]
        role = ROLES.get(token)
        if _is_placeholder(value):
            stand_in = _stand_in(ws, command, token, value)
            if stand_in is None:
                why = why or f"no tiny stand-in for {token} {value}"
                stand_in = value
            value = stand_in
        elif role not in (None, "out") and value != "-":
            path = value.rpartition("=")[2] if role == "checkpoint" else value
            if not Path(path).exists():  # relative to the working folder, where earlier lines wrote
                why = why or f"needs {path}, which cannot exist here"
        if token == "--aviris":
            why = why or "needs an AVIRIS reference layout"
        out.append(value)
        i += 2
    for option, value in TINY.get(command, {}).items():
        out = _set_option(out, option, value)
    if "--overwrite" in _subparsers(build_parser())[command]._option_string_actions and "--overwrite" not in out:
        out.append("--overwrite")
    return out, why


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    import os

    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


# ------------------------------------------------------------------------------------------------ fixtures
def _smooth_cube(bands: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    maps = [np.sin(2 * np.pi * (a * xx + b * yy) + c) for a, b, c in rng.random((3, 3)) * 3]
    spectra = rng.random((3, bands)) + 0.2
    cube = sum(0.5 * (1 + m)[None] * s[:, None, None] for m, s in zip(maps, spectra, strict=True))
    return (cube / cube.max()).astype(np.float32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Tiny stand-ins: 3 cubes (8 bands, 32x32, wavelengths), a 3-band SRF CSV, a 128x128 HR-HSI and its simulated
    LR-HSI / HR-MSI pair, one tiny trained run (teacher.pt, student.pt)."""
    root = tmp_path_factory.mktemp("readme")
    ws = Workspace(root)
    wl = np.linspace(420, 680, 8)
    for i in range(3):
        write_cube(root / "inputs" / "cubes" / f"scene{i}.npz", Cube(_smooth_cube(8, 32, i), wavelengths=wl))
    grid = np.arange(400, 701, 10)
    curves = [np.exp(-0.5 * ((grid - c) / 30) ** 2) for c in (460, 550, 620)]
    srf = root / "inputs" / "srf.csv"
    srf.write_text("wavelength_nm,B,G,R\n" + "\n".join(
        f"{g},{curves[0][i]:.6f},{curves[1][i]:.6f},{curves[2][i]:.6f}" for i, g in enumerate(grid)))
    write_cube(root / "inputs" / "hr.npz", Cube(_smooth_cube(8, 128, 7), wavelengths=wl))
    ws.made.update(cubes=root / "inputs" / "cubes", srf=srf, hr=root / "inputs" / "hr.npz")
    ws.made["lr.npz"], ws.made["msi.npz"] = root / "inputs" / "lr.npz", root / "inputs" / "msi.npz"
    assert main(["simulate", "--hr-hsi", str(ws.made["hr"]), "--srf", str(srf), "--out-lr", str(ws.made["lr.npz"]),
                 "--out-msi", str(ws.made["msi.npz"])]) == 0
    run = root / "inputs" / "tiny"
    assert main(["train", "--data", str(ws.made["cubes"]), "--srf", str(srf), "--out", str(run), *TINY_TRAIN]) == 0
    ws.made.update(teacher=run / "teacher.pt", student=run / "student.pt")
    (root / "work").mkdir()
    return ws


def _onnx(ws: Workspace) -> None:
    """The tiny run's student as ONNX, made on first need (a placeholder ``*.onnx`` checkpoint)."""
    if "onnx" not in ws.made:
        ws.made["onnx"] = ws.root / "inputs" / "tiny.onnx"
        assert main(["export", "--checkpoint", str(ws.made["student"]), "--out", str(ws.made["onnx"])]) == 0


# ------------------------------------------------------------------------------------------------ tests
def test_readme_lines_are_found() -> None:
    lines = readme_lines(README.read_text())
    commands = {line.tokens[0] for line in lines}
    every = set(_subparsers(build_parser()))
    assert commands >= every, f"the README shows no line of {every - commands}"


def test_every_readme_command_runs_or_parses(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    lines = readme_lines(README.read_text())
    parser = build_parser()
    ran, parsed, failures = [], [], []
    for line in lines:
        check_option_names(line, parser)
        if any(ROLES.get(t) == "checkpoint" and t2.endswith(".onnx") and _is_placeholder(t2)
               for t, t2 in zip(line.tokens, line.tokens[1:], strict=False)):
            _onnx(workspace)
        with _cwd(workspace.root / "work"):
            argv, why = prepare(line, workspace)
            if line.fragment:  # prose: a bare command name, or a piece that does not parse, is checked by name
                try:
                    parser.parse_args(argv)
                    whole = len(line.tokens) > 1
                except SystemExit:
                    capsys.readouterr()
                    whole = False
                if not whole:
                    parsed.append(f"{line.text}  (a piece of a command: option names checked)")
                    continue
            if why:
                if not line.partial:
                    try:
                        parser.parse_args(argv)
                    except SystemExit:
                        failures.append(f"{line.text!r} does not parse as {argv}: {capsys.readouterr().err[-300:]}")
                parsed.append(f"{line.text}  ({why})")
                continue
            code = main(argv)
            err = capsys.readouterr().err
            if code != 0:
                failures.append(f"{line.text!r} -> exit {code} (ran {argv}): {err[-500:]}")
            ran.append(line.text)
    print(f"ran {len(ran)} README lines; parsed {len(parsed)} more:\n  " + "\n  ".join(parsed))
    assert not failures, "\n".join(failures)
    assert len(ran) >= 10, ran


@pytest.mark.parametrize("text", [
    "`csakd fuse --lr-hsi FILE --hr-msi FILE --checkpoint FILE --out FILE --bogus 1`",
    "```\ncsakd fit-scene --lr FILE --lr-varia x --msi FILE --out FILE --report-dir DIR\n```",  # an abbreviation
    "```\ncsakd frobnicate --out DIR\n```",
])
def test_a_readme_line_the_cli_does_not_know_fails(text: str) -> None:
    (line,) = readme_lines(text)
    with pytest.raises(AssertionError, match=r"no option|unknown command"):
        check_option_names(line, build_parser())


def test_extraction_joins_continuations_and_takes_first_alternatives() -> None:
    text = ("```bash\n# a comment\npip install x && csakd demo --out D  # trailing\n"
            "torchrun --nproc_per_node 2 -m csakd train --data DIR \\\n  --out RUN\n```\n"
            "and `csakd train --data DIR [--mode cotrain|offline] [--minutes 3 | --steps N]` and "
            "`csakd fuse ... --tile 5`")
    lines = readme_lines(text)
    assert [ln.tokens for ln in lines] == [
        ["demo", "--out", "D"], ["train", "--data", "DIR", "--out", "RUN"],
        ["train", "--data", "DIR", "--mode", "cotrain", "--minutes", "3"], ["fuse", "--tile", "5"]]
    assert lines[1].parse_only and lines[3].partial
