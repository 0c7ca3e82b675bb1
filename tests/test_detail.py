"""The ``regression`` residual base (csakd.models.detail): agreement with an independent computation, exactness
on linear scenes, invariances, tiling, ONNX-friendly solve, training integration, real CAVE data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch

from csakd.degradation import Degradation, DegradationConfig
from csakd.degradation.spatial import gaussian_kernel, upsample_in_phase
from csakd.errors import InputError
from csakd.inference.tiled import fuse_tiled, plan_tiles, receptive_field
from csakd.models import DTSNet, ModelConfig, create_model
from csakd.models.detail import LOCAL_EPS, box_mean, detail_reach, moment_sigma, solve_spd
from tests.conftest import shared_path

pytestmark = pytest.mark.usefixtures("one_thread")


def base_model(bands: int = 6, msi_bands: int = 3, *, scale: int = 4, phase: int = 0, blur_size: int = 9,
               blur_sigma: float = 2.0, radius: int = 2, head_std: float = 0.0, **kw) -> DTSNet:
    """A tiny network with the regression base; ``head_std`` = 0 keeps the zero-started head (output = base)."""
    model = create_model("lite", bands=bands, msi_bands=msi_bands, scale=scale, nf=8, gc=4, blocks=(0, 1, 1, 1),
                         residual="regression", residual_phase=phase, blur_size=blur_size, blur_sigma=blur_sigma,
                         detail_radius=radius, **kw)
    if head_std:
        with torch.no_grad():
            for p in model.head.parameters():
                p.normal_(0.0, head_std)
    return model.eval()


def independent_base(lr: np.ndarray, msi: np.ndarray, scale: int, phase: int, sigma: float, size: int,
                     radius: int) -> np.ndarray:
    """The module docstring's base from scipy (mirror convolution, uniform filters) and numpy (per-pixel solves)."""
    k = gaussian_kernel(size, sigma, dtype=torch.float64).numpy()
    blurred = np.stack([scipy.ndimage.convolve(band, k, mode="mirror") for band in msi.astype(np.float64)])
    sz = blurred[:, phase::scale, phase::scale]
    y = lr.astype(np.float64)

    def box(x: np.ndarray) -> np.ndarray:
        return scipy.ndimage.uniform_filter(x, size=(1, 2 * radius + 1, 2 * radius + 1), mode="mirror")

    m, (c, h, w) = sz.shape[0], y.shape
    mz, my = box(sz), box(y)
    cov = np.empty((h, w, m, m))
    for i in range(m):
        for j in range(m):
            cov[..., i, j] = box((sz[i] * sz[j])[None])[0] - mz[i] * mz[j]
    cross = np.stack([box(sz[i][None] * y) - mz[i][None] * my for i in range(m)])  # (m, C, h, w)
    gain = np.linalg.solve(cov + LOCAL_EPS * np.eye(m), cross.transpose(2, 3, 0, 1))  # (h, w, m, C)
    gain = box(gain.transpose(2, 3, 0, 1).reshape(m * c, h, w)).reshape(m, c, h, w)
    gain = gain.repeat(scale, axis=2).repeat(scale, axis=3)
    up = lambda x: upsample_in_phase(torch.from_numpy(x)[None], scale, phase)[0].numpy()  # noqa: E731
    return up(y) + np.einsum("mchw,mhw->chw", gain, msi - up(sz))


def random_pair(bands: int, msi_bands: int, h: int, w: int, scale: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, bands, h, w, generator=g) * 2 - 1,
            torch.rand(1, msi_bands, h * scale, w * scale, generator=g) * 2 - 1)


# --------------------------------------------------------------------------------------------- the solve


@pytest.mark.parametrize("n", [1, 3, 4, 8])
def test_unrolled_cholesky_agrees_with_linalg(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    a = torch.randn(3, n, n, dtype=torch.float64, generator=g)
    gram = a @ a.transpose(1, 2) + 0.1 * torch.eye(n, dtype=torch.float64)
    rhs = torch.randn(3, n, 5, dtype=torch.float64, generator=g)
    torch.testing.assert_close(solve_spd(gram, rhs), torch.linalg.solve(gram, rhs), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------- the base


@pytest.mark.parametrize(("scale", "phase", "size", "sigma", "radius"),
                         [(4, 0, 9, 2.0, 2), (4, 2, 7, 1.3, 1), (3, 1, 5, 1.0, 3), (2, 0, 5, 1.0, 1)])
def test_zero_head_output_is_the_independently_computed_base(scale: int, phase: int, size: int, sigma: float,
                                                              radius: int) -> None:
    model = base_model(scale=scale, phase=phase, blur_size=size, blur_sigma=sigma, radius=radius)
    lr, msi = random_pair(6, 3, 9, 7, scale, seed=scale + phase)
    with torch.no_grad():
        out = model(lr, msi)[0][0].numpy()
    expected = independent_base(lr[0].numpy(), msi[0].numpy(), scale, phase, sigma, size, radius)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5)
    bicubic = upsample_in_phase(lr, scale, phase)[0].numpy()
    assert np.abs(out - bicubic).max() > 1e-2  # the MSI's detail is there


def test_box_mean_agrees_with_scipy() -> None:
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    expected = scipy.ndimage.uniform_filter(x.numpy(), size=(1, 1, 5, 5), mode="mirror")
    np.testing.assert_allclose(box_mean(x, 2).numpy(), expected, rtol=0, atol=1e-12)


def test_a_scene_linear_in_the_msi_bands_is_reconstructed_exactly() -> None:
    # X = A Z + b  =>  Y = S(X) = A S(Z) + b: every window's regression finds A, and U(Y) + A (Z - U(S(Z))) = X
    g = torch.Generator().manual_seed(1)
    msi = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 72, 68, generator=g), 5, stride=1)  # 68 x 64
    a, b = torch.randn(8, 3, generator=g), torch.randn(8, 1, 1, generator=g)
    x = torch.einsum("cm,bmhw->bchw", a, msi) + b
    deg = Degradation(DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0),
                      _response(3, 8))
    lr = deg.degrade_spatial(x)
    model = base_model(8, 3)
    with torch.no_grad():
        out = model(lr, msi)[0]
    bicubic = upsample_in_phase(lr, 4, 0)
    assert float((bicubic - x).abs().max()) > 0.05
    assert float((out - x).abs().max()) <= 2e-3  # the ridge eps biases A a little in the flattest windows
    assert float((out - x).abs().mean()) <= 1e-4


def _response(m: int, c: int):
    from csakd.degradation.srf import SpectralResponse

    return SpectralResponse.from_matrix(np.full((m, c), 1.0 / c))


def test_base_is_invariant_to_offsets_and_the_order_of_the_msi_bands() -> None:
    # Z' = P Z + e (bands permuted, an offset per band): the centred regressions absorb it exactly
    model = base_model()
    lr, msi = random_pair(6, 3, 8, 8, 4, seed=3)
    other = msi[:, [2, 0, 1]] + torch.tensor([0.3, -0.2, 1.0])[None, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(model(lr, other)[0], model(lr, msi)[0], rtol=0, atol=5e-5)


def test_flat_msi_gives_the_bicubic_base() -> None:
    model = base_model()
    lr, _ = random_pair(6, 3, 8, 8, 4)
    msi = torch.full((1, 3, 32, 32), 0.25)
    with torch.no_grad():
        out = model(lr, msi)[0]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, upsample_in_phase(lr, 4, 0), rtol=0, atol=1e-5)


def test_training_and_inference_paths_agree_and_gradients_flow() -> None:
    model = base_model(head_std=0.05)
    lr, msi = random_pair(6, 3, 8, 8, 4, seed=5)
    with torch.no_grad():
        inference = model(lr, msi)[0]
    lr.requires_grad_(True)
    out = model(lr, msi)[0]
    torch.testing.assert_close(out.detach(), inference, rtol=0, atol=1e-6)
    out.square().mean().backward()
    assert lr.grad is not None and float(lr.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in model.head.parameters())


def test_bf16_autocast_keeps_the_base_in_float32() -> None:
    model = base_model(head_std=0.05)
    lr, msi = random_pair(6, 3, 8, 8, 4, seed=6)
    with torch.no_grad():
        exact = model(lr, msi)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(lr, msi)[0]
    assert fast.dtype == torch.float32
    assert float((fast - exact).abs().max()) < 0.05


# ------------------------------------------------------------------------------------- inputs, config


def test_too_small_images_and_bad_settings_are_refused() -> None:
    model = base_model()
    with pytest.raises(InputError, match="9-tap blur pads by reflection"):
        model(torch.zeros(1, 6, 1, 1), torch.zeros(1, 3, 4, 4))
    with pytest.raises(InputError, match="windows of 5x5 LR pixels"):
        model(torch.zeros(1, 6, 2, 8), torch.zeros(1, 3, 8, 32))
    with pytest.raises(InputError, match="detail_radius=0"):
        ModelConfig(residual="regression", detail_radius=0)
    with pytest.raises(InputError, match="blur_size=8"):
        ModelConfig(residual="regression", blur_size=8)
    with pytest.raises(InputError, match="blur_sigma=0"):
        ModelConfig(residual="regression", blur_sigma=0)
    with pytest.raises(InputError, match="residual='gsa'"):
        ModelConfig(residual="gsa")  # type: ignore[arg-type]


def test_moment_sigma_recovers_a_gaussians_sigma() -> None:
    for sigma in (0.8, 2.0, 3.0):
        assert moment_sigma(gaussian_kernel(2 * int(5 * sigma) + 1, sigma, dtype=torch.float64)) == pytest.approx(
            sigma, rel=2e-3)


# --------------------------------------------------------------------------------------------- tiling


@pytest.mark.parametrize(("radius", "blur_size"), [(2, 9), (1, 5), (3, 5)])
def test_base_reach_is_bounded_by_detail_reach(radius: int, blur_size: int) -> None:
    model = base_model(blur_size=blur_size, radius=radius).double()
    s, n = 4, 20
    reach, worst = detail_reach(s, blur_size, radius), 0
    for offset in range(s):
        lr = torch.randn(1, 6, n, n, dtype=torch.float64, requires_grad=True)
        msi = torch.randn(1, 3, n * s, n * s, dtype=torch.float64, requires_grad=True)
        out = model.detail_base(torch.zeros(1, 6, n * s, n * s, dtype=torch.float64), lr, msi)
        x = s * (n // 2) + offset
        out[0, :, x, x].sum().backward()
        assert msi.grad is not None and lr.grad is not None
        # box means by cumulative sums leave rounding-level (1e-16) gradients far away: count those as zero
        g_hr, g_lr = msi.grad[0].abs().sum((0, 2)), lr.grad[0].abs().sum((0, 2))
        rows = torch.nonzero(g_hr > 1e-9 * g_hr.max()).flatten()
        worst = max(worst, x - int(rows.min()), int(rows.max()) - x)
        rows_lr = torch.nonzero(g_lr > 1e-9 * g_lr.max()).flatten()
        worst = max(worst, x - s * int(rows_lr.min()), s * int(rows_lr.max()) - x)
    assert reach - s <= worst <= reach, (worst, reach)  # a bound, tight to within one LR pixel
    assert receptive_field(model.config) >= reach


def test_tiled_fusion_equals_the_whole_pass() -> None:
    model = base_model(head_std=0.05)
    lr, msi = random_pair(6, 3, 80, 72, 4, seed=9)
    with torch.no_grad():
        reference = model(lr, msi)[0][0].numpy()
    rf = receptive_field(model.config)
    plan = plan_tiles(320, 288, tile=32, overlap=rf, scale=4)
    assert plan.rows.count > 1 and plan.cols.count > 1
    tiled = fuse_tiled(model, lr, msi, tile=32, batch_tiles=2)
    assert tiled is not None
    assert np.abs(tiled - reference).max() <= 1e-4
    # the overlap matters: below the base's reach the cores differ from one pass
    short = fuse_tiled(model, lr, msi, tile=32, overlap=4, blend="none")
    assert short is not None and np.abs(short - reference).max() > 1e-3


# ----------------------------------------------------------------------------------------- training


def test_train_records_the_degradation_in_the_model(tmp_path: Path) -> None:
    from csakd.checkpoint import load_checkpoint
    from csakd.cli import main

    data = tmp_path / "cubes"
    data.mkdir()
    g = np.random.default_rng(0)
    for i in range(2):
        np.save(data / f"c{i}.npy", g.random((5, 32, 32)).astype(np.float32))
    srf = tmp_path / "srf.npy"
    np.save(srf, np.full((2, 5), 0.2))
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--srf", str(srf), "--out", str(out), "--mode", "student",
                 "--student-preset", "lite", "--nf", "8", "--gc", "4", "--student-blocks", "0,1,1,1", "--crop", "16",
                 "--epochs", "1", "--batch-size", "2", "--samples-per-epoch", "2", "--val-fraction", "0.5",
                 "--residual", "regression", "--phase", "1", "--blur-size", "7", "--blur-sigma", "1.5", "--quiet",
                 "--device", "cpu"])
    assert code == 0
    cfg = load_checkpoint(out / "student.pt").config
    assert (cfg.residual, cfg.residual_phase, cfg.blur_size, cfg.blur_sigma) == ("regression", 1, 7, 1.5)


# ------------------------------------------------------------------------------------------- real data


def test_on_cave_the_base_beats_gsa() -> None:
    from csakd.baselines import gsa
    from csakd.data import read_cube
    from csakd.metrics import psnr

    scene = read_cube(shared_path("data", "cave", "watercolors_ms"))
    x = torch.from_numpy(np.ascontiguousarray(scene.data[:, 128:384, 128:384], dtype=np.float32))
    x = x / x.max()
    deg = Degradation.from_config(
        DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0, srf=str(shared_path("data", "srf", "nikon_d700.csv"))),
        wavelengths=scene.wavelengths)
    lr, msi = deg.simulate(x)
    model = base_model(31, 3)
    with torch.no_grad():
        base = (model(lr[None] * 2 - 1, msi[None] * 2 - 1)[0][0] + 1) / 2
    ours, theirs = psnr(base, x), psnr(torch.as_tensor(gsa(lr, msi, 4, blur_kernel=deg.kernel)), x)
    bicubic = psnr(upsample_in_phase(lr, 4, 0), x)
    assert ours > theirs + 0.3, (ours, theirs)  # measured: 43.55 against 42.99 dB
    assert ours > bicubic + 10, (ours, bicubic)


def test_ready_made_pairs_get_the_blur_estimated_from_the_first_pair() -> None:
    # --aviris pairs carry no degradation: with the regression base, train estimates the Gaussian from the data
    import argparse

    from csakd.train.recipe import base_degradation

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(1, 12, 68, 68, generator=g), 5, stride=1)[0]  # 64 x 64, smooth
    deg = Degradation(DegradationConfig(scale=4, blur_size=11, blur_sigma=1.5), _response(3, 12))
    response = torch.rand(3, 12, generator=g)
    pair = {"lr_hsi": deg.degrade_spatial(x), "hr_msi": torch.einsum("mc,chw->mhw", response, x)}
    args = argparse.Namespace(residual="regression", phase=0, scale=4)
    found = base_degradation(args, None, pair, "regression")
    assert found["residual_phase"] == 0 and found["blur_size"] % 2 == 1
    assert found["blur_sigma"] == pytest.approx(1.5, abs=0.15)
    # without the regression base nothing is estimated; simulated pairs give their own degradation
    assert base_degradation(argparse.Namespace(residual="bicubic", phase=0, scale=4), None, pair, "bicubic") == {
        "residual_phase": 0}
    assert base_degradation(args, deg, None, "regression") == {"residual_phase": 0, "blur_size": 11, "blur_sigma": 1.5}


def test_residual_scale_multiplies_the_correction_only() -> None:
    lr, msi = random_pair(6, 3, 8, 8, 4, seed=11)
    full = base_model(head_std=0.05)
    scaled = base_model(residual_scale=0.1)
    scaled.load_state_dict(full.state_dict())
    zero = base_model()
    with torch.no_grad():
        base = zero(lr, msi)[0]
        torch.testing.assert_close(scaled(lr, msi)[0] - base, 0.1 * (full(lr, msi)[0] - base), rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="residual_scale=0"):
        ModelConfig(residual_scale=0)
