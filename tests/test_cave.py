"""Real data: train and evaluate on CAVE scenes (Nikon D700 response, x4, 9x9 Gaussian blur of sigma 2).

A CPU smoke run of the whole path (reader, simulation, co-training, checkpoints, evaluation) on three real
scenes, centre-cropped to 64x64 and tiny networks, so that it runs in seconds.
"""

from __future__ import annotations

import json

import numpy as np

from csakd.cli import main
from csakd.data.hr_cubes import list_cube_files, load_hr_cubes
from tests.conftest import shared_path

SCENES = ("balloons_ms", "beads_ms", "cd_ms")


def test_cave_reader_and_protocol_crop() -> None:
    cave = shared_path("data", "cave")
    files = list_cube_files(cave / "balloons_ms")
    cubes = load_hr_cubes(files, scale=4, crop=256)
    assert cubes[0].data.shape == (31, 256, 256)
    assert float(cubes[0].data.max()) == 1.0
    np.testing.assert_allclose(cubes[0].wavelengths, np.arange(400, 701, 10))


def test_cave_train_and_eval_smoke(tmp_path, capsys) -> None:
    cave = shared_path("data", "cave")
    srf = shared_path("data", "srf", "nikon_d700.csv")
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    train_dir.mkdir()
    test_dir.mkdir()
    for name in SCENES[:2]:
        (train_dir / name).symlink_to(cave / name)
    (test_dir / SCENES[2]).symlink_to(cave / SCENES[2])
    run = tmp_path / "run"
    common = ["--center-crop", "64", "--srf", str(srf), "--scale", "4", "--blur-size", "9", "--blur-sigma", "2"]
    code = main(["train", "--data", str(train_dir), "--val-data", str(test_dir), *common, "--out", str(run),
                 "--epochs", "3", "--batch-size", "4", "--crop", "32", "--samples-per-epoch", "8", "--nf", "8",
                 "--gc", "4", "--teacher-blocks", "1,1,1,1", "--student-blocks", "1,1,1,1", "--device", "cpu",
                 "--quiet", "--test-data", str(test_dir), "--test-json", str(tmp_path / "test.json")])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    tested = json.loads((tmp_path / "test.json").read_text())
    assert set(tested["methods"]) == {"bicubic", "teacher", "student"}
    code = main(["eval", "--checkpoint", str(run / "teacher.pt"), "--checkpoint", str(run / "student.pt"),
                 "--data", str(test_dir), "--center-crop", "64", "--out", str(tmp_path / "eval"), "--json", "-"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out[out.index("{"):])
    methods = result["methods"]
    assert set(methods) == {"bicubic", "teacher", "student"}
    # the residual networks start from the bicubic image: after three short epochs they are at least close to it
    for name in ("teacher", "student"):
        assert np.isfinite(methods[name]["psnr"]) and methods[name]["psnr"] > methods["bicubic"]["psnr"] - 1.0
    assert (tmp_path / "eval" / "cd_ms.png").exists()
