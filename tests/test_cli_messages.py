"""What the commands tell a user: help for every option, clean output, units in table headers, clear errors."""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from csakd.cli import _LOSS_DEFAULTS, _PRESET_NAMES, EXAMPLES, HelpFormatter, build_parser, main
from csakd.data import Cube, write_cube
from tests.test_export import BANDS, MSI_BANDS, make_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# ------------------------------------------------------------------------------------------------ --help
@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_option_has_help_with_its_default_and_the_help_ends_with_an_example(command: str) -> None:
    sub = _subparsers()[command]
    formatter = HelpFormatter(prog=f"csakd {command}")
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings)
        assert action.help and action.help.strip(), f"csakd {command} {name} has no help"
        text = formatter._get_help_string(action) or ""
        if action.nargs != 0 and not action.required:  # an option with a value: its default, or what None means
            assert "default" in text, f"csakd {command} {name}: the help names no default: {text!r}"
    assert sub.epilog and f"csakd {command} " in sub.epilog
    example = next(ln.strip() for ln in sub.epilog.splitlines() if ln.strip().startswith("csakd "))
    assert example == EXAMPLES[command]
    build_parser().parse_args(shlex.split(example)[1:])  # the example is a valid command line
    rendered = sub.format_help()
    assert rendered.rstrip().endswith(example), "the epilog keeps its line breaks, at the end of the help"


def test_the_parser_imports_no_torch() -> None:
    """``csakd --help`` and the parser stay fast: importing csakd.cli and building its parser load no PyTorch."""
    code = ("import sys; from csakd.cli import build_parser, main, training_report; build_parser(); "
            "assert 'torch' not in sys.modules, 'import csakd.cli imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_preset_names_and_loss_defaults_in_the_help_are_the_library_s() -> None:
    from csakd.losses import LossWeights
    from csakd.models import list_models

    assert _PRESET_NAMES == ", ".join(list_models())
    assert _LOSS_DEFAULTS == LossWeights().to_dict()
    text = _subparsers()["train"].format_help()
    flat = re.sub(r"-\s+", "-", " ".join(text.split()))  # argparse wraps lines after hyphens too
    assert "--teacher-preset" in text and ", ".join(list_models()) in flat


def test_info_paper_prints_the_preset_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--paper", "--bands", "16", "--msi-bands", "3", "--size", "32"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["teacher", "student", "student, `apply_joint_hr_blocks=True`",
                                                       "lite"]
    assert main(["info", "--paper", "--json", "-"]) == 0
    info = json.loads(capsys.readouterr().out)
    params = {r["preset"]: r["params"] for r in info["presets"]}
    assert params["teacher"] == pytest.approx(26.81e6, rel=1e-3)
    assert params["student"] == pytest.approx(7.45e6, rel=1e-3)


# ------------------------------------------------------------------------------------------------ clean output
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("messages")
    response = {"matrix": np.full((MSI_BANDS, BANDS), 1.0 / BANDS).tolist(), "band_names": ["b", "g", "r"],
                "source": "test"}
    return make_checkpoint(root / "student.pt", response=response, wavelengths=[400.0 + 10 * i for i in range(BANDS)],
                           degradation={"scale": 4, "blur_size": 9})


def test_export_json_holds_values_a_response_summary_and_paths_as_given(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["export", "--checkpoint", str(checkpoint), "--out", "model.onnx", "--json", "info.json"]) == 0
    assert not [w for w in caught if "TracerWarning" in w.category.__name__ or "onnx" in str(w.filename)]
    info = json.loads(Path("info.json").read_text())
    assert info["out"] == "model.onnx" and info["checkpoint"] == str(checkpoint)
    md = info["metadata"]
    assert md["csakd_format"] == "csakd-onnx" and md["bands"] == BANDS and md["role"] == "student"
    assert md["response"] == {"msi_bands": MSI_BANDS, "hsi_bands": BANDS, "band_names": ["b", "g", "r"],
                              "source": "test"}

    def strings(value: object) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return []

    assert not [s for s in strings(info) if s.startswith('"')], "no repr'd strings"


def test_bench_prints_no_exporter_warnings(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("onnxruntime")
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["bench", "--preset", "lite", "--bands", "8", "--msi-bands", "3", "--size", "32", "--repeats", "1",
                     "--warmup", "0", "--device", "cpu"]) == 0
    raw = [w for w in caught if issubclass(w.category, UserWarning) and "torch" in str(w.filename)]
    assert not raw, [str(w.message)[:100] for w in raw]
    assert any("the ONNX exporter gave" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------ units
def test_every_table_names_the_rmse_units(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from csakd.evaluate import format_table, markdown_table

    m = {"bicubic": {"psnr": 30.0, "sam": 2.0, "ergas": 3.0, "rmse": 601.7, "rmse_01": 0.0092, "ssim": 0.9}}
    for table in (format_table(m), markdown_table(m)):
        assert "RMSE ([0,1])" in table and "RMSE (data units)" in table and "601.7" in table and "0.0092" in table

    wl = np.linspace(420, 680, 8)
    rng = np.random.default_rng(0)
    for i in range(2):
        write_cube(tmp_path / "cubes" / f"s{i}.npz", Cube(rng.uniform(0, 4095, (8, 16, 16)).astype(np.float32),
                                                          wavelengths=wl))
    assert main(["eval", "--method", "bicubic", "--data", str(tmp_path / "cubes"), "--srf", str(_srf(tmp_path)),
                 "--out", str(tmp_path / "ev"), "--figures", "0", "--json", "-"]) == 0
    out = capsys.readouterr().out
    assert "RMSE ([0,1])" in out.splitlines()[0] and "RMSE (data units)" in out.splitlines()[0]
    result = json.loads(out[out.index("{"):])
    row = result["methods"]["bicubic"]
    assert row["rmse"] == pytest.approx(row["rmse_01"] * 4095, rel=0.01)  # the cubes' peaks are ~4095
    assert "RMSE ([0,1])" in (tmp_path / "ev" / "table.md").read_text()

    import csakd.demo

    report = {k: {"psnr": 30.0, "sam": 2.0, "ergas": 3.0, "rmse": 0.04, "rmse_01": 0.04, "ssim": 0.9}
              for k in ("bicubic", "base", "teacher", "student")}
    monkeypatch.setattr(csakd.demo, "run_demo", lambda *a, **k: report)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    header = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("method"))
    assert "RMSE ([0,1])" in header and "RMSE (data units)" in header


def _srf(root: Path) -> Path:
    grid = np.arange(400, 701, 10)
    curves = [np.exp(-0.5 * ((grid - c) / 30) ** 2) for c in (460, 550, 620)]
    path = root / "srf.csv"
    path.write_text("wavelength_nm,B,G,R\n" + "\n".join(
        f"{g},{curves[0][i]:.6f},{curves[1][i]:.6f},{curves[2][i]:.6f}" for i, g in enumerate(grid)))
    return path


# ------------------------------------------------------------------------------------------------ errors
def test_simulate_without_wavelengths_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "hr.npy", np.random.default_rng(0).random((8, 16, 16)).astype(np.float32))
    code = main(["simulate", "--hr-hsi", str(tmp_path / "hr.npy"), "--srf", str(_srf(tmp_path)),
                 "--out-lr", str(tmp_path / "lr.npz"), "--out-msi", str(tmp_path / "msi.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "--wavelengths FILE" in err
    wl = tmp_path / "wl.txt"
    wl.write_text("\n".join(str(w) for w in np.linspace(420, 680, 8)))
    assert main(["simulate", "--hr-hsi", str(tmp_path / "hr.npy"), "--srf", str(_srf(tmp_path)), "--wavelengths",
                 str(wl), "--out-lr", str(tmp_path / "lr.npz"), "--out-msi", str(tmp_path / "msi.npz")]) == 0


def test_fuse_names_a_model_file_of_the_other_runtime(checkpoint: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "lr.npy", rng.random((BANDS, 4, 4)).astype(np.float32))
    np.save(tmp_path / "msi.npy", rng.random((MSI_BANDS, 16, 16)).astype(np.float32))
    pair = ["--lr-hsi", str(tmp_path / "lr.npy"), "--hr-msi", str(tmp_path / "msi.npy")]
    code = main(["fuse", *pair, "--checkpoint", str(checkpoint), "--runtime", "onnx", "--out", str(tmp_path / "a.npy")])
    err = capsys.readouterr().err
    assert code == 2 and "is not an ONNX file" in err and "PyTorch checkpoint" in err and "InvalidProtobuf" not in err
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--no-check"]) == 0
    (tmp_path / "m.onnx").rename(tmp_path / "m.pt")  # an ONNX file under a checkpoint's name
    code = main(["fuse", *pair, "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "b.npy")])
    err = capsys.readouterr().err
    assert code == 2 and "is an ONNX file" in err and "--runtime onnx" in err
    assert not (tmp_path / "a.npy").exists() and not (tmp_path / "b.npy").exists()
