"""Tests of csakd.baselines: bicubic, GSA and CNMF on real CAVE data and on synthetic scenes built to
have a known answer; the estimates of blur and response; the registry, batch wrapper and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from csakd.baselines import BASELINES, bicubic, cnmf, get_baseline, gsa, hysure, make_method
from csakd.baselines.cnmf import nmf_updates, spa, vca
from csakd.data import read_cube
from csakd.degradation import (
    Degradation,
    DegradationConfig,
    SpectralResponse,
    blur,
    decimate,
    gaussian_kernel,
    resolve_response,
    upsample_in_phase,
)
from csakd.degradation.estimate import degrade, estimate_gaussian_blur, estimate_response
from csakd.errors import InputError
from csakd.evaluate import EvalPair, evaluate
from csakd.metrics import psnr
from tests.conftest import shared_path


def _psnr(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> float:
    """The paper's PSNR (per-band peak, mean over bands) of one (C, H, W) scene."""
    return float(psnr(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(truth, dtype=torch.float64))[0])


def _box_response(msi: int, bands: int) -> np.ndarray:
    """(msi, bands): MSI band k averages the k-th contiguous chunk of HSI bands."""
    r = np.zeros((msi, bands))
    for k, chunk in enumerate(np.array_split(np.arange(bands), msi)):
        r[k, chunk] = 1.0 / len(chunk)
    return r


def mixture_scene(
    seed: int = 0, bands: int = 16, m: int = 4, side: int = 32, msi: int = 4, scale: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
    """A scene that is exactly ``X = E A``: M smooth positive spectra, abundances on sum-to-one 8x8 HR
    blocks (pure blocks and random mixtures, edges off the LR grid). Returns ``(x, y, z, r, kernel)``."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(0.0, 1.0, bands)
    centres = rng.uniform(0.0, 1.0, m)
    e = 0.2 + 0.8 * np.exp(-((wl[:, None] - centres[None]) ** 2) / 0.05)  # (C, M)
    labels = np.kron(rng.integers(0, 2 * m, size=(side // 8 + 1, side // 8 + 1)), np.ones((8, 8), dtype=int))
    off = rng.integers(1, 8, 2)
    labels = labels[off[0] : off[0] + side, off[1] : off[1] + side]
    mixes = np.vstack([np.eye(m), rng.dirichlet(np.ones(m), size=m)])  # (2M, M), the first M pure
    a = mixes[labels].transpose(2, 0, 1)  # (M, H, W)
    x = np.einsum("cm,mhw->chw", e, a)
    r = _box_response(msi, bands)
    kernel = gaussian_kernel(5, 1.0, dtype=torch.float64)
    y = decimate(blur(torch.from_numpy(x), kernel), scale, 0).numpy()
    z = np.einsum("kc,chw->khw", r, x)
    return x, y, z, r, kernel


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 1.5) -> np.ndarray:
    """Positive random images with spatial structure at every scale (white noise plus its blur)."""
    import scipy.ndimage as ndi

    noise = rng.random(shape)
    return 0.5 * noise + ndi.gaussian_filter(noise, sigma=(0,) + (sigma,) * (len(shape) - 1), mode="wrap") + 0.1


# --------------------------------------------------------------------------- real data: CAVE x4


@pytest.fixture(scope="module")
def cave() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, SpectralResponse, Degradation]:
    """CAVE 'flowers', centre 128x128, divided by its max; Nikon D700 HR-MSI; 9x9 Gaussian (sigma 2), x4."""
    cube = read_cube(shared_path("data", "cave", "flowers_ms"))
    data = cube.data
    oy, ox = (data.shape[1] - 128) // 2, (data.shape[2] - 128) // 2
    x = torch.from_numpy(np.ascontiguousarray(data[:, oy : oy + 128, ox : ox + 128]))
    x = x / x.max()
    response = resolve_response(shared_path("data", "srf", "nikon_d700.csv"), cube.wavelengths)
    deg = Degradation(DegradationConfig(scale=4, blur_size=9, blur_sigma=2), response)
    lr, msi = deg.simulate(x)
    return x, lr, msi, response, deg


class TestCave:
    @pytest.mark.parametrize(
        ("name", "known"),
        [("gsa", False), ("gsa", True), ("cnmf", False), ("hysure", True)],
        ids=["gsa-estimated", "gsa-known-blur", "cnmf-estimated", "hysure-known-R-blur"],
    )
    def test_beats_bicubic(self, cave, name: str, known: bool) -> None:  # type: ignore[no-untyped-def]
        x, lr, msi, response, deg = cave
        base = _psnr(bicubic(lr, msi, 4), x)
        options: dict[str, object] = {}
        if known:
            options["blur_kernel"] = deg.kernel
            if name != "gsa":
                options["response"] = response
        if name == "cnmf":
            options["iterations"] = 50  # a quarter of the default, to keep the test short
        out = get_baseline(name)(lr, msi, 4, **options)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == x.shape
        gain = _psnr(out.clamp(0, 1), x) - base
        # measured: bicubic 25.5 dB; gsa +18.5 (estimated blur) / +18.6 (given blur); cnmf (50 iterations)
        # +16.1; hysure +14.8
        assert gain > 5.0, f"{name} gains only {gain:.2f} dB over bicubic ({base:.2f} dB)"

    def test_estimates_from_real_data(self, cave) -> None:  # type: ignore[no-untyped-def]
        x, lr, msi, _, deg = cave
        y, z = lr.double(), msi.double()
        sigma, _ = estimate_gaussian_blur(y, z, 4, 0)
        assert abs(sigma - 2.0) < 0.3  # the true blur: 9x9 Gaussian, sigma 2 (truncated at 2 sigma)
        r = estimate_response(y, degrade(z, deg.kernel, 4, 0))
        # the HSI bands are nearly collinear, so R is not unique; what must hold is that it predicts the MSI
        pred = np.einsum("kc,chw->khw", r, x.double().numpy())
        rel = np.linalg.norm(pred - msi.double().numpy()) / np.linalg.norm(msi.double().numpy())
        assert rel < 0.02
        assert np.all(r >= 0)


# --------------------------------------------------------------------------- synthetic scenes


class TestGsa:
    def test_exact_for_bands_that_are_linear_in_the_msi(self) -> None:
        rng = np.random.default_rng(1)
        z = smooth_field(rng, (3, 32, 32))
        coef = rng.normal(size=(12, 3))
        x = np.einsum("kc,chw->khw", coef, z) + rng.normal(size=(12, 1, 1))  # bands = a_k^T Z + b_k
        kernel = gaussian_kernel(5, 1.2, dtype=torch.float64)
        y = decimate(blur(torch.from_numpy(x), kernel), 4, 1).numpy()
        out = gsa(y, z, 4, phase=1, blur_kernel=kernel.numpy())
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        np.testing.assert_allclose(out, x, atol=1e-4 * np.abs(x).max())
        assert _psnr(bicubic(y, z, 4, phase=1), x) < _psnr(out, x) - 20

    def test_equivariant_to_gain_and_offset(self) -> None:
        _, y, z, _, kernel = mixture_scene(seed=2)
        ref = gsa(y, z, 4, blur_kernel=kernel)
        # scaling both images scales the result; an offset on the MSI changes nothing (the regressions
        # include a constant); an offset on the HSI is passed through
        np.testing.assert_allclose(gsa(3.0 * y, 3.0 * z, 4, blur_kernel=kernel), 3.0 * ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gsa(y, z + 0.7, 4, blur_kernel=kernel), ref, atol=1e-5)
        np.testing.assert_allclose(gsa(y + 0.5, z, 4, blur_kernel=kernel), ref + 0.5, atol=1e-5)

    def test_group_pan_mode(self) -> None:
        x, y, z, _, kernel = mixture_scene(seed=3)
        out = gsa(y, z, 4, blur_kernel=kernel, pan="group")
        assert _psnr(out, x) > _psnr(bicubic(y, z, 4), x) + 3
        with pytest.raises(InputError, match="pan must be 'synthetic' or 'group'"):
            gsa(y, z, 4, pan="ihs")  # type: ignore[arg-type]


class TestCnmf:
    def test_recovers_a_mixture_scene(self) -> None:
        x, y, z, r, kernel = mixture_scene(seed=0)
        out = cnmf(y, z, 4, response=r, blur_kernel=kernel, endmembers=4)
        assert out.shape == x.shape and out.dtype == np.float32 and out.min() >= 0
        base = _psnr(bicubic(y, z, 4), x)
        fused = _psnr(out, x)
        assert fused > 45 and fused > base + 20, (fused, base)
        # nothing known: the blur and the response are estimated from the pair
        assert _psnr(cnmf(y, z, 4, endmembers=4), x) > 45

    def test_deterministic_and_seeded(self) -> None:
        _, y, z, r, kernel = mixture_scene(seed=4)
        kw = {"response": r, "blur_kernel": kernel, "iterations": 20, "outer": 2}
        a = cnmf(y, z, 4, seed=7, **kw)
        np.testing.assert_array_equal(a, cnmf(y, z, 4, seed=7, **kw))
        t = cnmf(torch.from_numpy(y), torch.from_numpy(z), 4, seed=7, **kw)
        assert isinstance(t, torch.Tensor)
        np.testing.assert_allclose(t.numpy(), a, rtol=1e-6, atol=1e-7)

    def test_scale_equivariant(self) -> None:
        _, y, z, r, kernel = mixture_scene(seed=5)
        kw = {"response": r, "blur_kernel": kernel, "iterations": 30}
        a = cnmf(y, z, 4, **kw)
        # a power of 2 scales exactly in floating point, so only the tiny eps terms can differ
        np.testing.assert_allclose(cnmf(4.0 * y, 4.0 * z, 4, **kw), 4.0 * a, rtol=1e-5, atol=1e-6)

    def test_endmember_initialisations_find_pure_pixels(self) -> None:
        rng = np.random.default_rng(0)
        e = rng.uniform(0.1, 1.0, size=(10, 4))
        a = rng.dirichlet(np.ones(4), size=200).T  # (4, 200) mixtures
        a[:, [11, 57, 120, 199]] = np.eye(4)  # pure pixels
        data = e @ a
        for idx in (vca(data, 4, seed=3), spa(data, 4)):
            assert sorted(idx.tolist()) == [11, 57, 120, 199]
        with pytest.raises(InputError, match="p <= min"):
            vca(data, 11)

    def test_nmf_updates_decrease_the_error(self) -> None:
        rng = np.random.default_rng(0)
        v = rng.random((6, 50)).astype(np.float32)
        w0, h0 = rng.random((6, 3)).astype(np.float32), rng.random((3, 50)).astype(np.float32)
        errors = [np.linalg.norm(v - np.matmul(*nmf_updates(v, w0, h0, n))) for n in (0, 5, 50)]
        assert errors[0] > errors[1] > errors[2]
        w, h = nmf_updates(v, w0, h0, 500, delta=10.0)  # a heavy sum-to-one weight
        np.testing.assert_allclose(h.sum(axis=0), 1.0, atol=0.05)
        assert w.min() >= 0 and h.min() >= 0


class TestEstimates:
    def test_blur_sigma_recovered(self) -> None:
        rng = np.random.default_rng(6)
        x = torch.from_numpy(smooth_field(rng, (8, 64, 64), sigma=1.0))
        r = _box_response(3, 8) + 0.05
        for sigma in (1.0, 2.5):
            kernel = gaussian_kernel(2 * math.ceil(3 * sigma) + 1, sigma, dtype=torch.float64)
            y = decimate(blur(x, kernel), 4, 2)
            z = torch.einsum("kc,chw->khw", torch.from_numpy(r), x)
            est, k_est = estimate_gaussian_blur(y, z, 4, 2)
            assert abs(est - sigma) < 0.1 * sigma
            assert abs(float(k_est.sum()) - 1.0) < 1e-12

    def test_response_recovered(self) -> None:
        rng = np.random.default_rng(7)
        x = torch.from_numpy(smooth_field(rng, (8, 32, 32)))
        r = rng.uniform(0.0, 1.0, size=(3, 8)) * (rng.random((3, 8)) > 0.3)
        kernel = gaussian_kernel(5, 1.0, dtype=torch.float64)
        y = degrade(x, kernel, 4, 0)
        z = torch.einsum("kc,chw->khw", torch.from_numpy(r), x)
        np.testing.assert_allclose(estimate_response(y, degrade(z, kernel, 4, 0)), r, atol=1e-6)

    @pytest.mark.parametrize("phase", [0, 3])
    @pytest.mark.parametrize("separable", [True, False])
    def test_degrade_is_blur_then_decimate(self, phase: int, separable: bool) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(2, 16, 24, generator=g, dtype=torch.float64)
        k = gaussian_kernel(5, 1.3, dtype=torch.float64) if separable else torch.rand(5, 3, generator=g).double()
        torch.testing.assert_close(degrade(x, k, 4, phase), decimate(blur(x, k), 4, phase), rtol=1e-12, atol=1e-12)


class TestHysure:
    def test_exact_without_regulariser_when_the_msi_determines_the_subspace(self) -> None:
        # X = E A with 4 endmembers: the LR-HSI's 4-D subspace holds X, and 4 MSI bands determine the
        # coefficients at every HR pixel, so with tv_weight=0 the minimiser is the truth
        x, y, z, r, kernel = mixture_scene(seed=0)
        out = hysure(y, z, 4, response=r, blur_kernel=kernel, subspace=4, tv_weight=0.0)
        assert _psnr(out, x) > 60
        assert _psnr(hysure(y, z, 4, subspace=4, tv_weight=0.0), x) > 45  # blur and response estimated
        assert _psnr(bicubic(y, z, 4), x) < 30

    def test_scale_equivariant_and_deterministic(self) -> None:
        _, y, z, r, kernel = mixture_scene(seed=9)
        kw = {"response": r, "blur_kernel": kernel, "iterations": 30}
        a = hysure(y, z, 4, **kw)
        np.testing.assert_array_equal(a, hysure(y, z, 4, **kw))
        np.testing.assert_allclose(hysure(4.0 * y, 4.0 * z, 4, **kw), 4.0 * a, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- bicubic, registry, errors


def test_bicubic_is_in_phase_upsampling() -> None:
    g = torch.Generator().manual_seed(0)
    lr, msi = torch.rand(5, 6, 7, generator=g), torch.rand(2, 18, 21, generator=g)
    out = bicubic(lr, msi, 3, phase=2)
    torch.testing.assert_close(out, upsample_in_phase(lr.double(), 3, 2).float())
    torch.testing.assert_close(decimate(out, 3, 2), lr, rtol=1e-5, atol=1e-5)
    assert isinstance(bicubic(lr.numpy(), msi.numpy(), 3), np.ndarray)


def test_registry() -> None:
    assert set(BASELINES) == {"bicubic", "gsa", "cnmf", "hysure"}
    assert get_baseline(" GSA ") is gsa
    with pytest.raises(InputError, match=r"unknown baseline 'hysure2': expected one of bicubic, cnmf, gsa, hysure"):
        get_baseline("hysure2")


def test_make_method_runs_in_evaluate() -> None:
    x, y, z, r, kernel = mixture_scene(seed=8)
    pair = EvalPair("mix", torch.from_numpy(y).float(), torch.from_numpy(z).float(), torch.from_numpy(x).float())
    methods = {
        name: make_method(
            name, scale=4, response=r, blur_kernel=kernel, **({"iterations": 50} if name == "cnmf" else {})
        )
        for name in ("bicubic", "gsa", "cnmf")
    }
    summary = evaluate(methods, [pair], scale=4, figures=0)
    psnrs = {name: summary["methods"][name]["psnr"] for name in methods}
    assert psnrs["gsa"] > psnrs["bicubic"] + 5 and psnrs["cnmf"] > psnrs["bicubic"] + 5
    # the batch wrapper fuses each image as the function does
    batch = methods["gsa"](pair.lr_hsi[None].repeat(2, 1, 1, 1), pair.hr_msi[None].repeat(2, 1, 1, 1))
    torch.testing.assert_close(batch[1], gsa(pair.lr_hsi, pair.hr_msi, 4, blur_kernel=kernel))
    with pytest.raises(InputError, match=r"has no option.*iterations"):
        make_method("gsa", scale=4, iterations=3)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_input_errors(name: str) -> None:
    fn = get_baseline(name)
    y, z = np.random.default_rng(0).random((6, 8, 8)), np.random.default_rng(1).random((3, 32, 32))
    with pytest.raises(InputError, match=r"hr_msi is 30x32 but lr_hsi is 8x8: at scale 4 the HR-MSI must be 32x32"):
        fn(y, z[:, :30], 4)
    with pytest.raises(InputError, match=r"lr_hsi must be one scene of shape \(C, H, W\).*make_method"):
        fn(y[None], z, 4)
    with pytest.raises(InputError, match=r"phase must be an integer in \[0, scale\) = \[0, 4\)"):
        fn(y, z, 4, phase=4)
    with pytest.raises(InputError, match="scale must be a positive integer"):
        fn(y, z, 2.0)
    bad = y.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="lr_hsi contains NaN"):
        fn(bad, z, 4)
    if name != "bicubic":
        with pytest.raises(InputError, match="blur_kernel must be a 2-D kernel with odd sides"):
            fn(y, z, 4, blur_kernel=np.ones((4, 4)))
    if name in ("cnmf", "hysure"):
        with pytest.raises(InputError, match=r"response has shape \(6, 3\).*expected \(3, 6\)"):
            fn(y, z, 4, response=np.ones((6, 3)))
    if name == "cnmf":
        with pytest.raises(InputError, match="hr_msi has no positive value"):
            fn(y, -z, 4)
        with pytest.raises(InputError, match="endmembers must be an integer >= 1"):
            fn(y, z, 4, endmembers=0)
    if name == "hysure":
        with pytest.raises(InputError, match="subspace must be an integer >= 1"):
            fn(y, z, 4, subspace=0)
        with pytest.raises(InputError, match="tv_weight must be >= 0"):
            fn(y, z, 4, tv_weight=-1.0)
