"""csakd fit-scene: estimates, the fitted run's outputs and report, the real Houston pair, and bad inputs.

The synthetic pair is made from a real CAVE scene with a known blur, phase and camera response, so the
estimates can be checked against the truth; the Houston pair is real (no HR-HSI) and checks reading two
variables of one .mat file. Everything runs with one CPU thread and tiny networks (a few seconds each).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from csakd.checkpoint import load_checkpoint
from csakd.cli import main
from csakd.data import Cube, read_cube, write_cube
from csakd.data.hr_cubes import center_crop
from csakd.degradation import Degradation, DegradationConfig, upsample_in_phase
from csakd.fit import (
    FitOptions,
    estimate_scene,
    fit_scene,
    spatial_consistency,
    spectral_consistency,
)
from csakd.metrics import cc
from tests.conftest import shared_path

SIGMA, PHASE, SCALE = 1.5, 1, 4
HSI_UNITS, MSI_UNITS = 4000.0, 200.0  # the two files in different units, as real sensors are
TINY = ["--nf", "8", "--gc", "4", "--blocks", "0,1,1,1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def cave_pair(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 128x128 CAVE crop degraded with a known Gaussian blur, phase and Nikon D700 response, as two files."""
    cube = read_cube(shared_path("data", "cave", "balloons_ms"))
    srf = shared_path("data", "srf", "nikon_d700.csv")
    hr = center_crop(cube.data, 128, SCALE)
    hr = np.ascontiguousarray(hr / hr.max(), dtype=np.float32)
    config = DegradationConfig(scale=SCALE, blur_size=11, blur_sigma=SIGMA, phase=PHASE, srf=str(srf))
    degradation = Degradation.from_config(config, wavelengths=cube.wavelengths, bands=hr.shape[0])
    lr, msi = degradation.simulate(torch.from_numpy(hr))
    folder = tmp_path_factory.mktemp("cave_pair")
    write_cube(folder / "lr.npz", Cube(lr.numpy() * HSI_UNITS, wavelengths=cube.wavelengths))
    write_cube(folder / "msi.npy", Cube(msi.numpy() * MSI_UNITS))
    return {"folder": folder, "hr": hr, "lr": lr.double(), "msi": msi.double(), "srf": srf,
            "response": degradation.response.matrix, "kernel": degradation.kernel, "wavelengths": cube.wavelengths}


def _normalised(pair: dict) -> tuple[torch.Tensor, torch.Tensor]:
    lr, msi = pair["lr"], pair["msi"]
    return lr / lr.max(), msi / msi.max()


def test_estimates_recover_the_simulated_blur_phase_and_response(cave_pair: dict) -> None:
    torch.set_num_threads(1)
    lr, msi = _normalised(cave_pair)
    est = estimate_scene(lr, msi, SCALE)
    assert est.phase == PHASE
    assert abs(est.sigma - SIGMA) < 0.1
    assert est.phase_scores[PHASE]["relative_residual"] < min(
        v["relative_residual"] for p, v in est.phase_scores.items() if p != PHASE) / 10
    assert max(est.response_residual) < 1e-3
    # R's entries are not identifiable from correlated bands; what it must do is reproduce the MSI from the HSI
    hr = torch.from_numpy(cave_pair["hr"]).double()
    z_true = msi.reshape(3, -1)
    z_pred = torch.from_numpy(est.response) @ (hr * float(cave_pair["lr"].max() ** -1)).reshape(hr.shape[0], -1)
    assert float((z_pred - z_true).norm() / z_true.norm()) < 0.01


def test_a_given_response_gets_one_gain_per_band(cave_pair: dict) -> None:
    torch.set_num_threads(1)
    lr, msi = _normalised(cave_pair)
    truth = np.asarray(cave_pair["response"])
    est = estimate_scene(lr, msi, SCALE, phase=PHASE, sigma=SIGMA, response=truth, response_source="nikon")
    expected_gain = float(cave_pair["lr"].max() / cave_pair["msi"].max())  # Z/zmax = g R Y/ymax
    assert est.response_gain == pytest.approx([expected_gain] * 3, rel=1e-3)
    assert np.allclose(est.response, truth * expected_gain, rtol=1e-3)


def test_no_reference_metrics_favour_the_truth(cave_pair: dict) -> None:
    """The true HR-HSI is (nearly) perfectly consistent with both inputs; bicubic upsampling is not."""
    hr = torch.from_numpy(cave_pair["hr"]).double()
    lr, msi, kernel = cave_pair["lr"], cave_pair["msi"], cave_pair["kernel"].numpy()
    truth_spec = spectral_consistency(hr, lr, kernel, SCALE, PHASE)
    bic = upsample_in_phase(lr, SCALE, PHASE)
    bic_spec = spectral_consistency(bic, lr, kernel, SCALE, PHASE)
    assert truth_spec["psnr"] > 60 and truth_spec["sam"] < 0.01
    assert bic_spec["psnr"] < truth_spec["psnr"] and bic_spec["sam"] > truth_spec["sam"]
    response = np.asarray(cave_pair["response"])
    truth_spat = spatial_consistency(hr, msi, response, units=MSI_UNITS)
    bic_spat = spatial_consistency(bic, msi, response, units=MSI_UNITS)
    assert truth_spat["cc"] == pytest.approx(1.0, abs=1e-6) and truth_spat["rmse"] < 1e-3
    assert bic_spat["cc"] < truth_spat["cc"] and bic_spat["ssim"] < truth_spat["ssim"]
    assert float(cc(3 * msi + 1, msi)[0]) == pytest.approx(1.0)


def test_fit_scene_writes_the_fused_image_report_figures_and_a_loadable_checkpoint(
    cave_pair: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = cave_pair["folder"]
    out, report_dir = tmp_path / "fused.npz", tmp_path / "report"
    options = FitOptions(steps=12, minutes=None, crop=16, batch_size=4, steps_per_epoch=6, threads=1,
                         model_overrides={"nf": 8, "gc": 4, "blocks": (0, 1, 1, 1)}, holdout=0.25)
    threads = torch.get_num_threads()
    result = fit_scene(folder / "lr.npz", folder / "msi.npy", out, report_dir, options)
    assert torch.get_num_threads() == threads  # the library call leaves the thread count as it was
    fused = read_cube(out)
    assert fused.data.shape == (31, 128, 128)
    assert np.allclose(fused.wavelengths, cave_pair["wavelengths"])
    report = json.loads((report_dir / "report.json").read_text())
    assert report == json.loads(json.dumps(result.report))
    for key in ("inputs", "normalization", "estimates", "settings", "training", "metrics", "outputs",
                "timings_seconds", "environment"):
        assert key in report
    assert report["inputs"]["scale"] == SCALE
    assert report["normalization"]["hsi_scale"] == pytest.approx(float(cave_pair["lr"].max()) * HSI_UNITS, rel=1e-5)
    assert report["normalization"]["msi_scale"] == pytest.approx(float(cave_pair["msi"].max()) * MSI_UNITS, rel=1e-5)
    assert report["estimates"]["phase"] == PHASE
    assert np.asarray(report["estimates"]["response"]["matrix"]).shape == (3, 31)
    assert report["training"]["steps"] == 12
    metrics = report["metrics"]
    for kind in ("spectral_consistency", "spatial_consistency"):
        assert set(metrics[kind]) == {"fitted", "base", "bicubic", "gsa"}
        assert all(np.isfinite(v) for m in metrics[kind].values() for v in m.values())
    assert set(metrics["wald_validation"]["heldout"]) == {"fitted", "base", "bicubic", "gsa"}
    first, last = metrics["wald_validation"]["columns"]["heldout"]
    assert last == 32 and (last - first) % SCALE == 0 and last - first >= 8  # a strip on the right, on LLR pixels
    # noise-free data whose MSI is an exact mix of the HSI bands: GSA reproduces the MSI far better than bicubic
    spatial = metrics["spatial_consistency"]
    assert spatial["gsa"]["psnr"] > spatial["bicubic"]["psnr"]
    for name in ("composite", "estimates", "spectral_consistency", "spatial_consistency", "spectra", "wald_validation"):
        assert (report_dir / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    # the fitted network is a normal checkpoint: csakd fuse reproduces the fused image from it
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.config.residual_phase == PHASE and loaded.normalization.kind == "fixed"
    again = tmp_path / "again.npy"
    code = main(["fuse", "--lr-hsi", str(folder / "lr.npz"), "--hr-msi", str(folder / "msi.npy"),
                 "--checkpoint", str(result.checkpoint), "--out", str(again), "--device", "cpu"])
    capsys.readouterr()
    assert code == 0
    assert np.allclose(np.load(again), fused.data, atol=1e-4 * float(np.abs(fused.data).max()))


def test_houston_pair_from_one_mat_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mat = shared_path("data", "houston_pair", "houston_dataset.mat")
    out, report_dir = tmp_path / "houston.npy", tmp_path / "report"
    base = ["fit-scene", "--lr", str(mat), "--msi", str(mat), "--out", str(out), "--report-dir", str(report_dir)]
    # two 3-D arrays in the file: without the variable names the error lists them
    code = main([*base, "--steps", "1", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "hyprImg" in err and "rgbImg" in err
    assert not out.exists() and not report_dir.exists()
    # a given (flat) response and blur keep this quick: the estimates are checked on the CAVE pair above
    response = tmp_path / "flat.npy"
    np.save(response, np.ones((3, 48)))
    code = main([*base, "--lr-var", "hyprImg", "--msi-var", "rgbImg", "--steps", "2", "--crop", "32",
                 "--phase", "1", "--blur-sigma", "2", "--response", str(response), "--baseline", "none",
                 "--no-figures", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "spectral consistency" in captured.out
    assert np.load(out, mmap_mode="r").shape == (48, 512, 512)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["inputs"]["scale"] == 4
    assert report["inputs"]["lr_hsi"]["variable"] == "hyprImg"
    assert report["inputs"]["hr_msi"]["shape"] == [3, 512, 512]
    assert report["estimates"]["blur"]["sigma_hr_pixels"] == 2.0
    assert len(report["estimates"]["response"]["gain_per_msi_band"]) == 3
    assert "fit-scene" in report["command"] and "--lr-variable hyprImg" in report["command"]
    assert set(report["metrics"]["spectral_consistency"]) == {"fitted", "base", "bicubic"}
    assert (report_dir / "model" / "student.pt").exists()


def _pair_files(folder: Path, msi_shape: tuple[int, int, int]) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    lr, msi = folder / "lr.npy", folder / "msi.npy"
    write_cube(lr, Cube(rng.random((6, 32, 32), dtype=np.float32)))
    write_cube(msi, Cube(rng.random(msi_shape, dtype=np.float32)))
    return lr, msi


@pytest.mark.parametrize(
    ("msi_shape", "extra", "message"),
    [
        ((3, 128, 100), [], "integer scale"),
        ((3, 100, 100), [], "integer scale"),
        ((3, 128, 128), ["--scale", "2"], "a ratio of 4"),
        ((3, 128, 128), ["--baseline", "magic"], "unknown baseline"),
        ((3, 128, 128), ["--preset", "huge"], "unknown model preset"),
        ((3, 128, 128), ["--phase", "4"], "phase 4"),
    ],
)
def test_bad_inputs_fail_before_any_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], msi_shape: tuple[int, int, int], extra: list[str],
    message: str,
) -> None:
    lr, msi = _pair_files(tmp_path, msi_shape)
    out, report_dir = tmp_path / "fused.npy", tmp_path / "report"
    code = main(["fit-scene", "--lr", str(lr), "--msi", str(msi), "--out", str(out), "--report-dir",
                 str(report_dir), "--steps", "1", *extra, *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("csakd: error:") and message in err
    assert not out.exists() and not report_dir.exists()


def test_existing_outputs_are_refused_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lr, msi = _pair_files(tmp_path, (3, 128, 128))
    out, report_dir = tmp_path / "fused.npy", tmp_path / "report"
    out.write_bytes(b"keep me")
    argv = ["fit-scene", "--lr", str(lr), "--msi", str(msi), "--out", str(out), "--report-dir", str(report_dir),
            "--steps", "1", *TINY]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me" and not report_dir.exists()
    out.unlink()
    report_dir.mkdir()
    (report_dir / "other.txt").write_text("not ours")
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert not out.exists()
    assert main([*argv[:6], str(tmp_path / "fused.xyz"), *argv[7:]]) == 2
    assert "cannot write" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- not worth it
def test_decide_writes_the_fitted_image_only_when_it_is_more_consistent(cave_pair: dict) -> None:
    from csakd.fit.fullscale import decide

    torch.set_num_threads(1)
    lr, msi = _normalised(cave_pair)
    est = estimate_scene(lr, msi, SCALE)
    base = upsample_in_phase(lr, SCALE, est.phase)
    worse = base + 0.05 * torch.randn(base.shape, generator=torch.Generator().manual_seed(0), dtype=base.dtype)
    d = decide(worse, base, lr, msi, est, 20)
    assert d["written"] == "base" and not d["fit_beats_base"] and d["gain_db"] < 0
    assert "NOT more consistent" in " ".join(d["lines"]) and "--force-fit" in " ".join(d["lines"])
    forced = decide(worse, base, lr, msi, est, 20, force=True)
    assert forced["written"] == "fitted" and not forced["fit_beats_base"]
    truth = torch.from_numpy(cave_pair["hr"]).double() / float(cave_pair["lr"].max())
    better = decide(truth, base, lr, msi, est, 20)  # the truth (noise-free pair) is more consistent than bicubic
    assert better["written"] == "fitted" and better["gain_db"] > 0


@pytest.mark.parametrize("force", [False, True])
def test_a_fit_worse_than_its_base_is_never_written(cave_pair: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], force: bool) -> None:
    """A full-scale fit that damages the network (its head randomised) is less consistent than the base on the
    held-out columns: the base is written and the console and report say so; --force-fit writes the fit."""
    import csakd.fit.scene as scene
    from csakd.fit.fullscale import FullScaleResult

    def damaged(model: torch.nn.Module, *args: object, **kwargs: object) -> FullScaleResult:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return FullScaleResult(model=model, summary={"steps": 3, "history": []})

    monkeypatch.setattr(scene, "fit_full_scale", damaged)
    folder = cave_pair["folder"]
    out, report_dir = tmp_path / "fused.npy", tmp_path / "report"
    argv = ["fit-scene", "--lr", str(folder / "lr.npz"), "--msi", str(folder / "msi.npy"), "--out", str(out),
            "--report-dir", str(report_dir), "--fit", "full", "--steps", "3", "--baseline", "none", "--no-figures",
            "--holdout", "0.25", "--crop", "16", *TINY] + (["--force-fit"] if force else [])
    assert main(argv) == 0
    console = capsys.readouterr()
    report = json.loads((report_dir / "report.json").read_text())
    d = report["decision"]
    assert d["gain_db"] < 0 and not d["fit_beats_base"]
    base = load_checkpoint(report_dir / "model" / "base.pt")
    fitted = load_checkpoint(report_dir / "model" / "student.pt")
    from csakd.inference.tiled import fuse_tiled_arrays

    lr_data, msi_data = read_cube(folder / "lr.npz").data, np.load(folder / "msi.npy")
    expected = fuse_tiled_arrays(fitted if force else base, lr_data, msi_data, tile=0, device="cpu")
    assert np.allclose(np.load(out), expected, atol=1e-5 * float(np.abs(expected).max()))
    assert report["outputs"]["written"] == ("fitted" if force else "base")
    assert "NOT more consistent" in console.out
    assert ("--force-fit" in console.out) and (("anyway" in console.out) == force)


# ---------------------------------------------------------------------------------------------- bad input
def test_msi_bands_outside_the_hsi_wavelengths_are_refused(cave_pair: dict, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = cave_pair["folder"]
    msi = tmp_path / "msi.npz"
    write_cube(msi, Cube(np.load(folder / "msi.npy"), wavelengths=np.array([460.0, 550.0, 865.0])))
    out, report_dir = tmp_path / "fused.npy", tmp_path / "report"
    code = main(["fit-scene", "--lr", str(folder / "lr.npz"), "--msi", str(msi), "--out", str(out), "--report-dir",
                 str(report_dir), "--steps", "1", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "outside the LR-HSI's wavelengths (400-700 nm): band 2 at 865 nm" in err
    assert not out.exists() and not report_dir.exists()


def test_too_few_pixels_for_the_response_and_pairs_that_do_not_overlap_are_refused(
    cave_pair: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = cave_pair["folder"]
    lr = read_cube(folder / "lr.npz").data
    msi = np.load(folder / "msi.npy")
    cases = {
        # 16x16 LR pixels for 80 bands: fewer than 4 (C + 1)
        "few": (np.concatenate([lr[:, :16, :16]] * 3)[:80], msi[:, :64, :64], "too few to estimate a response"),
        # the MSI of another part of the scene (its left half and right half swapped)
        "apart": (lr, np.concatenate([msi[:, :, 64:], msi[:, :, :64]], axis=2)[:, ::-1].copy(),
                  "do not seem to overlap"),
    }
    for name, (lr_data, msi_data, message) in cases.items():
        lr_path, msi_path = tmp_path / f"{name}_lr.npy", tmp_path / f"{name}_msi.npy"
        np.save(lr_path, lr_data)
        np.save(msi_path, msi_data)
        out, report_dir = tmp_path / f"{name}.npy", tmp_path / f"{name}_report"
        code = main(["fit-scene", "--lr", str(lr_path), "--msi", str(msi_path), "--out", str(out), "--report-dir",
                     str(report_dir), "--steps", "1", "--holdout", "0", *TINY])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (name, err)
        assert not out.exists() and not report_dir.exists()
