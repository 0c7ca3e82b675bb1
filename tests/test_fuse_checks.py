"""``csakd fuse``'s checks: the pair's spectral consistency with the checkpoint's response, and clipping at 0."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from csakd.checkpoint import load_checkpoint
from csakd.cli import main
from csakd.data import Cube, read_cube, write_cube
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse
from csakd.inference import fuse_arrays, fuse_files, fuse_files_tiled
from csakd.inference.checks import CONSISTENCY_WARN, clip_negative, degrade_msi, spectral_consistency
from tests.test_export import BANDS, MSI_BANDS, make_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

WL = np.linspace(420, 680, BANDS)


def _response(centres: tuple[float, ...]) -> np.ndarray:
    return SpectralResponse.from_matrix(np.stack([np.exp(-0.5 * ((WL - c) / 40) ** 2) for c in centres])).matrix


CAMERA_A = _response((460, 550, 620))
CAMERA_B = _response((500, 600, 660))  # another camera: its bands sit elsewhere


def _scene(size: int = 64, seed: int = 0) -> torch.Tensor:
    """Five materials with different spectra over smooth, varied maps (so two responses see it differently)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    maps = [0.5 * (1 + np.sin(2 * np.pi * (a * xx + b * yy) + c)) for a, b, c in rng.random((5, 3)) * 4]
    spectra = rng.random((5, BANDS)) + 0.1
    cube = sum(m[None] * s[:, None, None] for m, s in zip(maps, spectra, strict=True))
    return torch.from_numpy((cube / cube.max()).astype(np.float32))


def _pair(matrix: np.ndarray, snr: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    deg = Degradation(DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0, hsi_snr_db=snr, msi_snr_db=snr),
                      SpectralResponse.from_matrix(matrix, normalize=False))
    lr, msi = deg.simulate(_scene(), generator=torch.Generator().manual_seed(0))
    return lr.numpy(), msi.numpy()


def test_degrade_msi_is_the_degradation_s() -> None:
    x = _scene(32)
    deg = Degradation(DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0, phase=1),
                      SpectralResponse.from_matrix(CAMERA_A))
    lr, msi = deg.simulate(x)
    # S(Z) = R S(X) = R Y for a noiseless simulated pair
    np.testing.assert_allclose(degrade_msi(msi.numpy(), scale=4, phase=1), np.einsum("cb,bhw->chw", CAMERA_A,
                                                                                    lr.numpy()), atol=1e-5)


def test_consistency_separates_the_checkpoint_s_camera_from_another() -> None:
    same = spectral_consistency(*_pair(CAMERA_A, snr=30), CAMERA_A, scale=4)
    other = spectral_consistency(*_pair(CAMERA_B), CAMERA_A, scale=4)
    assert same["relative_rmse"] < CONSISTENCY_WARN < other["relative_rmse"]
    exact = spectral_consistency(*_pair(CAMERA_A), CAMERA_A, scale=4)
    assert exact["relative_rmse"] < 1e-5 and exact["gain"] == pytest.approx(1.0, abs=1e-4)
    lr, msi = _pair(CAMERA_A)
    units = spectral_consistency(lr, msi * 255, CAMERA_A, scale=4)  # an 8-bit MSI beside a [0, 1] LR-HSI
    assert units["relative_rmse"] > CONSISTENCY_WARN and units["gain"] == pytest.approx(255, rel=1e-3)
    assert units["relative_rmse_after_gain"] < 1e-5


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained (in its metadata) through camera A, with perturbed weights (its outputs go below 0)."""
    root = tmp_path_factory.mktemp("checks")
    response = SpectralResponse.from_matrix(CAMERA_A, band_names=["b", "g", "r"]).to_dict()
    return make_checkpoint(root / "a.pt", response=response, wavelengths=[float(w) for w in WL],
                           degradation={"scale": 4, "blur_size": 9, "blur_sigma": 2.0})


def _write_pair(root: Path, matrix: np.ndarray, name: str) -> tuple[Path, Path]:
    lr, msi = _pair(matrix)
    return (write_cube(root / f"{name}_lr.npz", Cube(lr, wavelengths=WL)),
            write_cube(root / f"{name}_msi.npz", Cube(msi)))


def test_fuse_warns_for_a_pair_from_another_camera(model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO)
    lr_a, msi_a = _write_pair(tmp_path, CAMERA_A, "a")
    lr_b, msi_b = _write_pair(tmp_path, CAMERA_B, "b")
    report: dict = {}
    fuse_files(lr_a, msi_a, model, tmp_path / "fa.npz", device="cpu", report=report)
    assert not report["spectral_consistency"]["warned"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "spectral response" in r.getMessage()]
    for how in ("whole", "tiled"):
        caplog.clear()
        argv = ["fuse", "--lr-hsi", str(lr_b), "--hr-msi", str(msi_b), "--checkpoint", str(model), "--out",
                str(tmp_path / f"fb_{how}.npz"), "--device", "cpu", "--json", "-"]
        assert main([*argv, *(["--tile", "32"] if how == "tiled" else [])]) == 0
        out = capsys.readouterr().out
        result = json.loads(out[out.index("{"):])["spectral_consistency"]
        assert result["warned"] and result["relative_rmse"] > CONSISTENCY_WARN
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                      and "spectral response" in r.getMessage()]
        assert f"{result['relative_rmse']:.3f}" in warning and "another camera" in warning


def test_fuse_clips_at_zero_by_default_and_counts(model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO)
    rng = np.random.default_rng(3)  # noise: bicubic upsampling overshoots below 0 between its extremes
    lr_p = write_cube(tmp_path / "lr.npz", Cube(rng.uniform(0, 1, (BANDS, 16, 16)).astype(np.float32), wavelengths=WL))
    msi_p = write_cube(tmp_path / "msi.npz", Cube(rng.uniform(0, 1, (MSI_BANDS, 64, 64)).astype(np.float32)))
    raw = fuse_arrays(load_checkpoint(model), read_cube(lr_p).data, read_cube(msi_p).data, device="cpu")
    negative = int((raw < 0).sum())
    assert negative > 0, "the perturbed checkpoint gives values below 0"
    outputs = {"whole": [], "tiled": ["--tile", "32"]}
    try:
        import onnxruntime  # noqa: F401

        assert main(["export", "--checkpoint", str(model), "--out", str(tmp_path / "m.onnx"), "--no-check"]) == 0
        outputs["onnx"] = []
    except ImportError:
        pass
    for how, extra in outputs.items():
        ckpt = tmp_path / "m.onnx" if how == "onnx" else model
        out_path = tmp_path / f"{how}.npz"
        caplog.clear()
        assert main(["fuse", "--lr-hsi", str(lr_p), "--hr-msi", str(msi_p), "--checkpoint", str(ckpt), "--out",
                     str(out_path), "--device", "cpu", "--json", "-", *extra]) == 0
        out = capsys.readouterr().out
        clip = json.loads(out[out.index("{"):])["clip"]
        fused = read_cube(out_path).data
        assert fused.min() >= 0, how
        assert abs(clip["clipped"] - negative) <= max(3, negative // 100), how  # tiled / ONNX round differently
        assert clip["values"] == raw.size and clip["minimum"] == pytest.approx(raw.min(), rel=1e-3, abs=1e-3)
        assert any("clipped" in r.getMessage() and "--no-clip" in r.getMessage() for r in caplog.records), how
        np.testing.assert_allclose(fused, np.maximum(raw, 0), atol=1e-3 * float(raw.max()))
    assert main(["fuse", "--lr-hsi", str(lr_p), "--hr-msi", str(msi_p), "--checkpoint", str(model), "--out",
                 str(tmp_path / "raw.npz"), "--device", "cpu", "--no-clip", "--json", "-"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["clip"] is None
    np.testing.assert_allclose(read_cube(tmp_path / "raw.npz").data, raw, atol=1e-5)
    report: dict = {}
    fuse_files_tiled(lr_p, msi_p, model, tmp_path / "lib.npz", tile=32, device="cpu", clip=False, report=report)
    assert report["clip"] is None and read_cube(tmp_path / "lib.npz").data.min() < 0


def test_clip_negative_keeps_nan_and_copies_read_only_blocks() -> None:
    block = np.array([-2.0, 0.5, np.nan, -0.25], dtype=np.float32)
    block.flags.writeable = False
    clipped, count, low = clip_negative(block)
    assert count == 2 and low == -2.0 and clipped is not block
    np.testing.assert_array_equal(clipped, [0.0, 0.5, np.nan, 0.0])
