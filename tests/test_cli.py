"""The command line: info counts, simulate -> train -> eval -> fuse round trip, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from csakd.checkpoint import load_checkpoint
from csakd.cli import main
from csakd.data import Cube, read_cube, write_cube
from csakd.models import count_params, create_model


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "preset,params,macs",
    [("teacher", 26.8e6, 941.77e9), ("student", 7.44e6, 144.77e9)],
)
def test_info_prints_the_paper_counts(capsys, preset: str, params: float, macs: float) -> None:
    # csakd's presets add feedback (C more inputs of the joint streams' first convolutions and a 1x1 C x C
    # convolution); without it they are the paper's networks
    code, out, _ = run(capsys, "info", "--preset", preset, "--bands", "172", "--msi-bands", "4", "--scale", "4",
                       "--size", "256", "--no-feedback", "--json", "-")
    assert code == 0
    info = json.loads(out)
    assert isinstance(info["params"], int) and isinstance(info["macs"], int)
    assert info["params"] == pytest.approx(params, rel=0.03)
    assert info["macs"] == pytest.approx(macs, rel=0.10)


def fp32_psnr_tolerance(psnr_db: float, ulps: float = 2.0) -> float:
    """The PSNR change (dB) that ``ulps`` float32 units of rounding (relative to a peak of 1) cause at ``psnr_db``.

    With the error's RMSE ``e = 10^(-psnr/20)`` (peak 1) and a perturbation of RMS ``d``, PSNR moves by at most
    about ``20 log10(1 + d / e)``; ``d = ulps * 2^-23`` (one ulp of values in [1, 2)).
    """
    rmse = 10 ** (-psnr_db / 20)
    return max(1e-4, 20 * np.log10(1 + ulps * 2.0**-24 * 2 / rmse))


def smooth_cube(bands: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    maps = [np.sin(2 * np.pi * (a * xx + b * yy) + c) for a, b, c in rng.random((3, 3)) * 3]
    spectra = rng.random((3, bands)) + 0.2
    cube = sum(0.5 * (1 + m)[None] * s[:, None, None] for m, s in zip(maps, spectra, strict=True))
    return (cube / cube.max()).astype(np.float32)


def write_cube_folder(tmp_path, count: int = 3):
    """``count`` small smooth cubes (8 bands, 420-680 nm) in tmp_path/cubes and a 3-band Gaussian SRF file."""
    folder = tmp_path / "cubes"
    wl = np.linspace(420, 680, 8)
    for i in range(count):
        write_cube(folder / f"scene{i}.npz", Cube(smooth_cube(seed=i), wavelengths=wl))
    srf = tmp_path / "srf.csv"
    grid = np.arange(400, 701, 10)
    curves = [np.exp(-0.5 * ((grid - c) / 30) ** 2) for c in (460, 550, 620)]
    srf.write_text("wavelength_nm,B,G,R\n" + "\n".join(
        f"{g},{curves[0][i]:.6f},{curves[1][i]:.6f},{curves[2][i]:.6f}" for i, g in enumerate(grid)))
    return folder, srf


@pytest.fixture()
def cube_folder(tmp_path):
    return write_cube_folder(tmp_path)


def test_simulate_train_eval_fuse(capsys, tmp_path, cube_folder) -> None:
    folder, srf = cube_folder
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", str(folder), "--srf", str(srf), "--out", str(run_dir),
                       "--epochs", "2", "--batch-size", "2", "--crop", "16", "--nf", "8", "--gc", "4",
                       "--teacher-blocks", "1,1,1,1", "--student-blocks", "1,1,1,1", "--device", "cpu", "--quiet",
                       "--val-fraction", "0.34")
    assert code == 0, err
    assert (run_dir / "config.yaml").exists() and (run_dir / "student.pt").exists()
    ckpt = load_checkpoint(run_dir / "student.pt")
    assert ckpt.config.bands == 8 and ckpt.config.msi_bands == 3

    code, out, err = run(capsys, "info", "--checkpoint", str(run_dir / "student.pt"), "--json", "-")
    info = json.loads(out)
    assert (info["bands"], info["msi_bands"], info["scale"]) == (8, 3, 4)
    assert info["params"] == count_params(ckpt.model)

    code, out, err = run(capsys, "eval", "--checkpoint", str(run_dir / "student.pt"), "--data", str(folder),
                         "--out", str(tmp_path / "eval"), "--json", "-", "--figures", "1")
    assert code == 0, err
    result = json.loads(out[out.index("{"):])
    assert set(result["methods"]) == {"bicubic", "student"}
    assert {"psnr", "sam", "ergas", "rmse", "ssim"} <= set(result["methods"]["student"])
    assert len(list((tmp_path / "eval").glob("*.png"))) == 1
    table = (tmp_path / "eval" / "table.md").read_text()
    assert table.count("\n") == 4 and "| student |" in table and f"{count_params(ckpt.model) / 1e6:.2f}M" in table
    assert (tmp_path / "eval" / "metrics.csv").read_text().count("\n") == 7  # header + 2 methods x 3 images

    # the CPU fast path (ONNX Runtime) beside fp32 eager: the same numbers, its differences reported
    pytest.importorskip("onnxruntime")
    code, out, err = run(capsys, "eval", "--checkpoint", str(run_dir / "student.pt"), "--data", str(folder),
                         "--figures", "0", "--fast-paths", "--json", "-")
    assert code == 0, err
    result = json.loads(out[out.index("{"):])
    assert set(result["methods"]) == {"bicubic", "student", "student@onnxruntime"}
    delta = result["fast_path_deltas"]["student@onnxruntime"]
    expected = result["methods"]["student@onnxruntime"]["psnr"] - result["methods"]["student"]["psnr"]
    assert delta["psnr_delta"] == pytest.approx(expected)
    # These scenes are sums of three spectra over smooth maps, linear in the three MSI bands, so the regression
    # base restores them almost exactly (PSNR ~100 dB, RMSE ~1e-5). ONNX Runtime and eager PyTorch differ by
    # float32 rounding (measured: 3e-8 RMS, 1.8e-7 at most, i.e. about one ulp of values near 1), and at an error
    # of 1e-5 that rounding alone moves PSNR by up to ~0.005 dB. The tolerance is that rounding's effect at the
    # measured PSNR for a perturbation of 2 ulps (2^-22) RMS, in the worst case where it adds to the error.
    assert abs(delta["psnr_delta"]) < fp32_psnr_tolerance(result["methods"]["student"]["psnr"])
    assert abs(delta["sam_delta"]) < 1e-3

    lr_path, msi_path = tmp_path / "lr.npy", tmp_path / "msi.npy"
    code, _, err = run(capsys, "simulate", "--hr-hsi", str(folder / "scene0.npz"), "--srf", str(srf),
                       "--out-lr", str(lr_path), "--out-msi", str(msi_path))
    assert code == 0, err
    assert np.load(lr_path).shape == (8, 8, 8) and np.load(msi_path).shape == (3, 32, 32)

    out_path = tmp_path / "fused.npz"
    code, _, err = run(capsys, "fuse", "--lr-hsi", str(lr_path), "--hr-msi", str(msi_path), "--checkpoint",
                       str(run_dir / "student.pt"), "--out", str(out_path))
    assert code == 0, err
    fused = read_cube(out_path)
    assert fused.data.shape == (8, 32, 32) and np.isfinite(fused.data).all()
    # the same as running the network by hand on the normalised inputs
    lr, msi = np.load(lr_path), np.load(msi_path)
    peak = lr.max()
    with torch.no_grad():
        net, _ = ckpt.model(torch.from_numpy(lr / peak)[None] * 2 - 1, torch.from_numpy(msi / peak)[None] * 2 - 1)
    np.testing.assert_allclose(fused.data, ((net[0] + 1) / 2 * peak).numpy(), atol=1e-5)

    # tiled fusion through the CLI: with the default overlap (the receptive field) it equals the single pass
    tiled_path = tmp_path / "fused_tiled.npy"
    code, _, err = run(capsys, "fuse", "--lr-hsi", str(lr_path), "--hr-msi", str(msi_path), "--checkpoint",
                       str(run_dir / "student.pt"), "--out", str(tiled_path), "--tile", "16")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tiled_path), fused.data, atol=1e-4)

    # an existing output is never overwritten without --overwrite
    before = out_path.read_bytes()
    code, _, err = run(capsys, "fuse", "--lr-hsi", str(lr_path), "--hr-msi", str(msi_path), "--checkpoint",
                       str(run_dir / "student.pt"), "--out", str(out_path))
    assert code == 2 and "--overwrite" in err and out_path.read_bytes() == before

    # the training run folder is protected too
    code, _, err = run(capsys, "train", "--data", str(folder), "--srf", str(srf), "--out", str(run_dir))
    assert code == 2 and "--resume" in err


def test_fuse_refuses_mismatched_inputs_before_writing(capsys, tmp_path) -> None:
    model = create_model("student", bands=8, msi_bands=3, nf=8, gc=4, blocks=(1, 1, 1, 1))
    from csakd.checkpoint import model_payload, save_payload
    from csakd.normalization import Normalization

    ckpt = tmp_path / "m.pt"
    save_payload(ckpt, model_payload(model, role="student", normalization=Normalization("per_image")))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "lr.npy", rng.random((8, 8, 8), dtype=np.float32))
    np.save(tmp_path / "msi_bad_grid.npy", rng.random((3, 30, 32), dtype=np.float32))
    np.save(tmp_path / "msi_bands.npy", rng.random((4, 32, 32), dtype=np.float32))
    nan = rng.random((8, 8, 8), dtype=np.float32)
    nan[0, 0, 0] = np.nan
    np.save(tmp_path / "lr_nan.npy", nan)
    cases = [
        ("lr.npy", "msi_bad_grid.npy", "grid ratio"),
        ("lr.npy", "msi_bands.npy", "4 MSI bands (the checkpoint expects 3)"),
        ("lr_nan.npy", "msi_bands.npy", "NaN"),
    ]
    for lr, msi, message in cases:
        code, _, err = run(capsys, "fuse", "--lr-hsi", str(tmp_path / lr), "--hr-msi", str(tmp_path / msi),
                           "--checkpoint", str(ckpt), "--out", str(tmp_path / "out.tif"))
        assert code == 2 and message in err, err
        assert "Traceback" not in err
        assert not (tmp_path / "out.tif").exists()
    code, _, err = run(capsys, "fuse", "--lr-hsi", str(tmp_path / "lr.npy"), "--hr-msi", str(tmp_path / "x.npy"),
                       "--checkpoint", str(ckpt), "--out", str(tmp_path / "out.tif"))
    assert code == 2 and "x.npy" in err


def test_train_errors(capsys, tmp_path, cube_folder) -> None:
    folder, _ = cube_folder
    code, _, err = run(capsys, "train", "--data", str(folder), "--out", str(tmp_path / "r"))
    assert code == 2 and "--srf" in err
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "nowhere"), "--srf", "x.csv", "--out",
                       str(tmp_path / "r"))
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "info", "--preset", "giant")
    assert code == 2 and "unknown model preset" in err


def test_eval_classical_baselines_without_a_checkpoint(capsys, tmp_path, cube_folder) -> None:
    folder, srf = cube_folder
    code, out, err = run(capsys, "eval", "--method", "gsa", "--data", str(folder), "--srf", str(srf),
                         "--figures", "0", "--json", "-")
    assert code == 0, err
    result = json.loads(out[out.index("{"):])
    assert set(result["methods"]) == {"bicubic", "gsa"}
    assert result["methods"]["gsa"]["psnr"] > result["methods"]["bicubic"]["psnr"]
    code, _, err = run(capsys, "eval", "--method", "magic", "--data", str(folder), "--srf", str(srf))
    assert code == 2 and "unknown baseline 'magic'" in err
    code, _, err = run(capsys, "eval", "--data", str(folder), "--srf", str(srf))
    assert code == 2 and "nothing to evaluate" in err


def test_eval_names_checkpoints_and_refuses_two_of_one_name(capsys, tmp_path, cube_folder) -> None:
    folder, srf = cube_folder
    runs = []
    for k in range(2):  # on a bicubic base (the regression base is exact on these smooth cubes, so that runs
        run_dir = tmp_path / f"run{k}"  # keep it and two trained networks would be the same)
        code, _, err = run(capsys, "train", "--data", str(folder), "--srf", str(srf), "--out", str(run_dir),
                           "--mode", "student", "--epochs", "1", "--batch-size", "2", "--crop", "16", "--nf", "8",
                           "--gc", "4", "--student-blocks", "1,1,1,1", "--device", "cpu", "--quiet",
                           "--val-fraction", "0.34", "--seed", str(k), "--residual", "bicubic")
        assert code == 0, err
        runs.append(run_dir / "student.pt")
    out = tmp_path / "compare"
    code, _, err = run(capsys, "eval", "--checkpoint", str(runs[0]), "--checkpoint", str(runs[1]), "--data",
                       str(folder), "--out", str(out), "--figures", "0")
    assert code == 2 and "two checkpoints are named 'student'" in err and "NAME=FILE" in err
    assert not out.exists()
    code, _, err = run(capsys, "eval", "--checkpoint", f"gsa={runs[0]}", "--method", "gsa", "--data", str(folder))
    assert code == 2 and "like a baseline method" in err
    code, stdout, err = run(capsys, "eval", "--checkpoint", f"a={runs[0]}", "--checkpoint", f"b={runs[1]}",
                            "--data", str(folder), "--out", str(out), "--figures", "0", "--json", "-")
    assert code == 0, err
    result = json.loads(stdout[stdout.index("{"):])
    assert {"a", "b", "bicubic"} <= set(result["methods"])
    assert result["methods"]["a"]["psnr"] != result["methods"]["b"]["psnr"]  # two different networks
    assert "| a |" in (out / "table.md").read_text()


def test_eval_refuses_a_test_folder_of_mixed_band_counts_before_writing(capsys, tmp_path, cube_folder) -> None:
    folder, srf = cube_folder
    write_cube(folder / "scene9.npz", Cube(smooth_cube(seed=9)[:6], wavelengths=np.linspace(420, 640, 6)))
    out = tmp_path / "compare"
    code, _, err = run(capsys, "eval", "--method", "gsa", "--data", str(folder), "--srf", str(srf),
                       "--out", str(out), "--json", str(tmp_path / "m.json"))
    assert code == 2
    assert "different band counts" in err and "scene9" in err and "expected one band count" in err
    assert not out.exists() and not (tmp_path / "m.json").exists()
