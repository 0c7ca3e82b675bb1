"""Tests of csakd.degradation: spectral responses, blur / decimation / shift / upsampling, noise, pipeline."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from csakd.degradation import (
    Degradation,
    DegradationConfig,
    SpectralResponse,
    add_noise,
    blur,
    decimate,
    gaussian_kernel,
    load_psf,
    read_matrix,
    resolve_response,
    shift,
    upsample_in_phase,
)
from csakd.degradation.spatial import _separable_factors
from csakd.errors import InputError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CAVE_WL = np.arange(400.0, 701.0, 10.0)  # CAVE: 31 bands, 400-700 nm


def _data(*parts: str) -> Path:
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{'/'.join(parts)} not found: ../shared/data is absent")
    return p


# scipy.ndimage names for our padding modes (see csakd.degradation.spatial)
SCIPY_MODE = {
    "reflect": "mirror",
    "symmetric": "reflect",
    "replicate": "nearest",
    "circular": "grid-wrap",
    "zeros": "constant",
}


# --------------------------------------------------------------------------- spectral response


class TestSpectralResponse:
    def test_from_matrix_normalises_rows_and_is_read_only(self) -> None:
        r = SpectralResponse.from_matrix(np.array([[1.0, 3.0, 0.0], [0.0, 2.0, 2.0]]))
        np.testing.assert_allclose(r.matrix, [[0.25, 0.75, 0.0], [0.0, 0.5, 0.5]])
        assert r.band_names == ("band_0", "band_1")
        assert (r.msi_bands, r.hsi_bands) == (2, 3)
        with pytest.raises(ValueError):
            r.matrix[0, 0] = 5.0

    def test_from_matrix_without_normalisation_keeps_values(self) -> None:
        m = np.array([[1.0, 3.0]])
        r = SpectralResponse.from_matrix(m, normalize=False, band_names=["pan"], source="x")
        np.testing.assert_array_equal(r.matrix, m)
        assert r.band_names == ("pan",) and r.source == "x"

    @pytest.mark.parametrize(
        ("m", "match"),
        [
            (np.array([[1.0, 1.0], [0.0, 0.0]]), "rows \\[1\\] sum to"),
            (np.ones(4), "2-D"),
            (np.array([[1.0, np.nan]]), "NaN"),
        ],
    )
    def test_from_matrix_errors(self, m: np.ndarray, match: str) -> None:
        with pytest.raises(InputError, match=match):
            SpectralResponse.from_matrix(m)

    def test_apply_matches_numpy_and_keeps_rank(self) -> None:
        rng = np.random.default_rng(0)
        r = SpectralResponse.from_matrix(rng.random((3, 5)))
        x = torch.rand(2, 5, 4, 6)
        expected = np.einsum("kc,bchw->bkhw", r.matrix, x.numpy().astype(np.float64))
        np.testing.assert_allclose(r.apply(x).numpy(), expected, rtol=1e-5, atol=1e-6)
        z = r.apply(x[0])
        assert z.shape == (3, 4, 6)
        torch.testing.assert_close(z, r.apply(x)[0])

    def test_apply_flat_spectrum_keeps_value(self) -> None:
        r = SpectralResponse.from_matrix(np.random.default_rng(1).random((4, 7)))
        x = torch.full((1, 7, 3, 3), 0.37)
        torch.testing.assert_close(r.apply(x), torch.full((1, 4, 3, 3), 0.37))

    def test_apply_wrong_band_count(self) -> None:
        r = SpectralResponse.from_matrix(np.ones((3, 5)))
        with pytest.raises(InputError, match=r"has 6 bands .* expects 5"):
            r.apply(torch.rand(1, 6, 4, 4))
        with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
            r.apply(torch.rand(5, 4))

    def test_dict_round_trip_through_json(self) -> None:
        r = SpectralResponse.from_matrix(np.random.default_rng(2).random((3, 8)), band_names=["R", "G", "B"])
        back = SpectralResponse.from_dict(json.loads(json.dumps(r.to_dict())))
        assert back == r and hash(back) == hash(r)
        assert back != SpectralResponse.from_matrix(np.ones((3, 8)))
        with pytest.raises(InputError, match=r"matrix"):
            SpectralResponse.from_dict({"band_names": []})

    def test_from_csv_resamples_linearly(self, tmp_path: Path) -> None:
        csv = tmp_path / "srf.csv"
        csv.write_text("wavelength_nm,A,B\n400,0,0\n450,1,0\n500,0,1\n550,0,2\n")
        wl = np.array([380.0, 425.0, 450.0, 475.0, 525.0, 600.0])
        r = SpectralResponse.from_csv(csv, wl)
        a = np.array([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])  # 0 outside 400-550
        b = np.array([0.0, 0.0, 0.0, 0.5, 1.5, 0.0])
        np.testing.assert_allclose(r.matrix, np.stack([a / a.sum(), b / b.sum()]))
        assert r.band_names == ("A", "B") and r.source == str(csv)

    def test_from_csv_errors(self, tmp_path: Path) -> None:
        csv = tmp_path / "srf.csv"
        csv.write_text("wavelength_nm,A,B\n400,1,0\n450,1,0\n500,0,0\n850,0,0\n900,0,1\n1000,0,1\n")
        with pytest.raises(InputError, match=r"B \(non-zero over 900-1000 nm\) do not overlap .* 400-700"):
            SpectralResponse.from_csv(csv, CAVE_WL)
        bad = tmp_path / "bad.csv"
        bad.write_text("lambda,A\n400,1\n500,1\n")
        with pytest.raises(InputError, match=r"wavelength_nm"):
            SpectralResponse.from_csv(bad, CAVE_WL)
        with pytest.raises(InputError, match=r"not found"):
            SpectralResponse.from_csv(tmp_path / "missing.csv", CAVE_WL)

    def test_nikon_d700_csv_peaks(self) -> None:
        r = SpectralResponse.from_csv(_data("srf", "nikon_d700.csv"), CAVE_WL)
        assert r.matrix.shape == (3, 31) and r.band_names == ("R", "G", "B")
        np.testing.assert_allclose(r.matrix.sum(axis=1), 1.0)
        # the README: Nikon D700 peaks R 590, G 530, B 460 nm
        assert CAVE_WL[r.matrix.argmax(axis=1)].tolist() == [590.0, 530.0, 460.0]

    def test_colour_camera_matches_hand_interpolation(self) -> None:
        import colour

        msds = colour.MSDS_CAMERA_SENSITIVITIES["Nikon 5100 (NPL)"]
        r = SpectralResponse.from_sensor("nikon 5100 (npl)", CAVE_WL)
        assert r.source == "colour:Nikon 5100 (NPL)"
        curves = np.stack([np.interp(CAVE_WL, msds.wavelengths, msds.values[:, k]) for k in range(3)])
        np.testing.assert_allclose(r.matrix, curves / curves.sum(axis=1, keepdims=True))
        assert SpectralResponse.from_sensor("colour:Nikon 5100 (NPL)", CAVE_WL) == r

    def test_pyrsr_sentinel_matches_stored_band_files(self) -> None:
        pytest.importorskip("pyrsr")
        root = _data("srf", "pyrsr_0.8.0", "Sentinel-2A", "MSI")
        wl = np.arange(420.0, 900.0, 5.0)
        r = SpectralResponse.from_sensor("Sentinel-2A:B02,B03,B04,B08", wl)
        assert r.band_names == ("B02", "B03", "B04", "B08")
        assert r.source == "pyrsr:Sentinel-2A/MSI:B02,B03,B04,B08"
        for k, band in enumerate(["2", "3", "4", "8"]):
            table = np.loadtxt(root / f"band_{band}", skiprows=1)
            row = np.interp(wl, table[:, 0], table[:, 1], left=0.0, right=0.0)
            np.testing.assert_allclose(r.matrix[k], row / row.sum(), atol=1e-9)
        # the source string resolves to the same response
        assert resolve_response(r.source, wl) == r

    def test_pyrsr_errors(self) -> None:
        pytest.importorskip("pyrsr")
        with pytest.raises(InputError, match=r"B08 \(non-zero over .*\) do not overlap"):
            SpectralResponse.from_sensor("Sentinel-2A:B02,B08", CAVE_WL)
        with pytest.raises(InputError, match=r"no band\(s\) B99; available: B01, B02"):
            SpectralResponse.from_sensor("pyrsr:Sentinel-2A:B99", CAVE_WL)
        with pytest.raises(InputError, match=r"several sensors .*SPOT-1/HRV1"):
            SpectralResponse.from_sensor("SPOT-1", CAVE_WL)

    def test_unknown_sensor_lists_names(self) -> None:
        with pytest.raises(InputError, match=r"unknown sensor 'Nikon D9'.*Nikon 5100 \(NPL\)"):
            SpectralResponse.from_sensor("Nikon D9", CAVE_WL)

    def test_missing_pyrsr_says_how_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "pyrsr", None)  # import pyrsr -> ImportError
        with pytest.raises(InputError, match=r"pip install csakd\[sensors\]"):
            SpectralResponse.from_sensor("pyrsr:Sentinel-2A", CAVE_WL)
        with pytest.raises(InputError, match=r"pip install csakd\[sensors\]"):
            SpectralResponse.from_sensor("Sentinel-2A", CAVE_WL)


class TestResolveResponse:
    def test_npy_is_transposed_when_the_band_count_says_so(self, tmp_path: Path) -> None:
        m = np.random.default_rng(3).random((4, 10))
        np.save(tmp_path / "r.npy", m.T)  # stored as (C, c)
        r = resolve_response(tmp_path / "r.npy", None, bands=10)
        np.testing.assert_allclose(r.matrix, m / m.sum(axis=1, keepdims=True))
        np.save(tmp_path / "r2.npy", m)
        assert resolve_response(str(tmp_path / "r2.npy"), None, bands=10).matrix.shape == (4, 10)
        # without a count: more rows than columns means (C, c)
        assert resolve_response(tmp_path / "r.npy", None).matrix.shape == (4, 10)

    def test_band_count_mismatch_names_both_counts(self, tmp_path: Path) -> None:
        np.save(tmp_path / "r.npy", np.ones((4, 10)))
        with pytest.raises(InputError, match=r"4x10 .* HSI has 12 bands"):
            resolve_response(tmp_path / "r.npy", None, bands=12)
        with pytest.raises(InputError, match=r"expects 31 HSI bands but the HSI has 30"):
            resolve_response(SpectralResponse.from_matrix(np.ones((3, 31))), None, bands=30)
        with pytest.raises(InputError, match=r"5 wavelengths were given for an HSI of 6 bands"):
            resolve_response(np.ones((3, 6)), np.arange(5.0), bands=6)

    def test_curves_need_wavelengths(self, tmp_path: Path) -> None:
        csv = tmp_path / "srf.csv"
        csv.write_text("wavelength_nm,A\n400,1\n500,1\n")
        with pytest.raises(InputError, match=r"needs the HSI band wavelengths"):
            resolve_response(csv, None, bands=31)
        with pytest.raises(InputError, match=r"needs the HSI band wavelengths"):
            resolve_response("Nikon 5100 (NPL)", None, bands=31)

    def test_missing_file_and_bad_types(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match=r"not found"):
            resolve_response(tmp_path / "nope.npy", None)
        with pytest.raises(InputError, match=r"path, a sensor name or an array"):
            resolve_response(3, None)  # type: ignore[arg-type]

    def test_mat_v5_with_named_variable(self, tmp_path: Path) -> None:
        m = np.random.default_rng(4).random((3, 9))
        scipy.io.savemat(tmp_path / "r.mat", {"R": m, "wl": np.arange(9.0)[None]})
        np.testing.assert_allclose(read_matrix(tmp_path / "r.mat"), m)
        assert resolve_response(tmp_path / "r.mat", None, bands=9).matrix.shape == (3, 9)

    def test_dc_mall_box_srf_from_matlab_v73(self) -> None:
        r = resolve_response(_data("dc_mall", "data_R.mat"), None, bands=191)
        assert r.matrix.shape == (4, 191)
        np.testing.assert_allclose(r.matrix.sum(axis=1), 1.0)
        # the README: bands 1-4 cover band indices 7-13, 14-21, 25-33, 41-55 (box-shaped)
        for row, (lo, hi) in zip(r.matrix, [(7, 13), (14, 21), (25, 33), (41, 55)], strict=True):
            assert np.flatnonzero(row).tolist() == list(range(lo, hi + 1))
            np.testing.assert_allclose(row[lo : hi + 1], 1.0 / (hi - lo + 1))

    def test_fuvar_matrix_is_already_oriented(self) -> None:
        r = resolve_response(_data("srf", "fuvar_borsoi", "R_avirSentin2.mat"), None, bands=173)
        assert r.matrix.shape == (10, 173)


# --------------------------------------------------------------------------- spatial


class TestSpatial:
    def test_gaussian_kernel_equals_scipy_impulse_response(self) -> None:
        k = gaussian_kernel(9, 2.0, dtype=torch.float64)
        delta = np.zeros((9, 9))
        delta[4, 4] = 1.0
        ref = ndi.gaussian_filter(delta, sigma=2.0, truncate=2.0, mode="constant")
        np.testing.assert_allclose(k.numpy(), ref, atol=1e-15)
        assert abs(float(k.sum()) - 1.0) < 1e-12

    @pytest.mark.parametrize(
        ("size", "sigma", "match"), [(8, 2.0, "odd"), (9, 0.0, "positive"), (0, 1.0, "positive")]
    )
    def test_gaussian_kernel_errors(self, size: int, sigma: float, match: str) -> None:
        with pytest.raises(InputError, match=match):
            gaussian_kernel(size, sigma)

    def test_gaussian_blur_equals_scipy_mirror(self) -> None:
        # torch 'reflect' (edge not repeated) is scipy.ndimage's 'mirror'
        x = torch.rand(2, 3, 16, 20, dtype=torch.float64)
        y = blur(x, gaussian_kernel(9, 2.0, dtype=torch.float64))
        ref = ndi.gaussian_filter(x.numpy(), sigma=(0, 0, 2.0, 2.0), mode="mirror", truncate=2.0)
        np.testing.assert_allclose(y.numpy(), ref, atol=1e-12)
        # and it is not scipy's 'reflect' (edge repeated): the border differs
        other = ndi.gaussian_filter(x.numpy(), sigma=(0, 0, 2.0, 2.0), mode="reflect", truncate=2.0)
        assert np.abs(y.numpy() - other)[..., 0, :].max() > 1e-4

    @pytest.mark.parametrize("mode", list(SCIPY_MODE))
    def test_asymmetric_kernel_is_a_true_convolution(self, mode: str) -> None:
        x = torch.rand(1, 2, 11, 13, dtype=torch.float64)
        k = np.random.default_rng(5).random((5, 3))  # rank 3: the non-separable path
        ref = ndi.convolve(x.numpy(), k[None, None], mode=SCIPY_MODE[mode])
        np.testing.assert_allclose(blur(x, k, padding=mode).numpy(), ref, atol=1e-12)  # type: ignore[arg-type]

    def test_separable_path_equals_full_path(self) -> None:
        col = np.array([1.0, 2.0, 4.0, 0.5, 0.2])
        row = np.array([0.3, 1.0, 2.0])
        k = np.outer(col, row)  # rank 1 -> separable, asymmetric
        assert _separable_factors(torch.from_numpy(k)) is not None
        assert _separable_factors(gaussian_kernel(9, 2.0)) is not None
        assert _separable_factors(torch.rand(5, 3, dtype=torch.float64) + torch.eye(5, 3)) is None
        x = torch.rand(2, 3, 12, 9, dtype=torch.float64)
        ref = ndi.convolve(x.numpy(), k[None, None], mode="mirror")
        np.testing.assert_allclose(blur(x, k).numpy(), ref, atol=1e-12)

    def test_dc_mall_psf(self) -> None:
        psf = load_psf(_data("dc_mall", "data_s.mat"))
        assert psf.shape == (9, 9) and abs(psf.sum() - 1.0) < 1e-12
        x = torch.rand(3, 20, 20, dtype=torch.float64)
        ref = ndi.convolve(x.numpy(), psf[None], mode="mirror")
        np.testing.assert_allclose(blur(x, psf).numpy(), ref, atol=1e-12)

    def test_blur_keeps_constants_and_gradients(self) -> None:
        x = torch.full((1, 2, 10, 10), 0.6)
        torch.testing.assert_close(blur(x, gaussian_kernel(5, 1.0)), x)
        xd = torch.rand(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda t: blur(t, gaussian_kernel(3, 1.0, dtype=torch.float64)), (xd,)
        )

    def test_blur_errors(self) -> None:
        with pytest.raises(InputError, match=r"too small for reflect padding"):
            blur(torch.rand(1, 1, 4, 20), gaussian_kernel(9, 2.0))
        with pytest.raises(InputError, match=r"odd"):
            blur(torch.rand(1, 1, 8, 8), np.ones((4, 4)))
        with pytest.raises(InputError, match=r"padding mode"):
            blur(torch.rand(1, 1, 8, 8), np.ones((3, 3)), padding="wrap")  # type: ignore[arg-type]
        with pytest.raises(InputError, match=r"floating-point"):
            blur(torch.ones(1, 1, 8, 8, dtype=torch.int64), np.ones((3, 3)))

    def test_decimate(self) -> None:
        x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
        torch.testing.assert_close(decimate(x, 4, 3), x[..., 3::4, 3::4])
        assert decimate(x[0], 2).shape == (3, 4, 6)
        with pytest.raises(InputError, match=r"10x12 pixels cannot be decimated by scale 4"):
            decimate(torch.rand(1, 1, 10, 12), 4)
        with pytest.raises(InputError, match=r"phase must be an integer in \[0, scale\) = \[0, 4\), got 4"):
            decimate(x, 4, 4)
        with pytest.raises(InputError, match=r"scale must be a positive integer"):
            decimate(x, 0)

    def test_shift_sign_convention(self) -> None:
        x = torch.rand(1, 2, 9, 11)
        y = shift(x, (2, -3))
        # content moves down 2 rows and left 3 columns, as np.roll does in the interior
        rolled = np.roll(x.numpy(), (2, -3), axis=(-2, -1))
        np.testing.assert_array_equal(y.numpy()[..., 2:, :-3], rolled[..., 2:, :-3])
        # the uncovered border comes from reflect padding (numpy 'reflect')
        padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 0), (0, 3)), mode="reflect")
        np.testing.assert_array_equal(y.numpy(), padded[..., :9, 3:])
        z = shift(x, 1, mode="zeros")
        assert torch.all(z[..., 0, :] == 0) and torch.all(z[..., :, 0] == 0)
        torch.testing.assert_close(z[..., 1:, 1:], x[..., :-1, :-1])
        assert shift(x, 0) is x

    def test_shift_errors(self) -> None:
        with pytest.raises(InputError, match=r"not smaller than the 4x4 image"):
            shift(torch.rand(1, 1, 4, 4), 4)
        with pytest.raises(InputError, match=r"integer or a pair"):
            shift(torch.rand(1, 1, 4, 4), 1.5)  # type: ignore[arg-type]

    @pytest.mark.parametrize("scale", [2, 3, 4])
    def test_upsample_in_phase_then_decimate_is_identity(self, scale: int) -> None:
        lr = torch.rand(2, 3, 5, 7)
        for phase in range(scale):
            for mode in ("bicubic", "bilinear", "nearest"):
                up = upsample_in_phase(lr, scale, phase, mode=mode)  # type: ignore[arg-type]
                assert up.shape == (2, 3, 5 * scale, 7 * scale)
                torch.testing.assert_close(decimate(up, scale, phase), lr, atol=2e-6, rtol=0)

    def test_upsample_in_phase_matches_hand_cubic_convolution(self) -> None:
        # rows constant in y, so the result is 1-D cubic convolution (a = -0.75) along x, edges replicated
        def keys(t: np.ndarray, a: float = -0.75) -> np.ndarray:
            t = np.abs(t)
            return np.where(
                t <= 1,
                (a + 2) * t**3 - (a + 3) * t**2 + 1,
                np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0),
            )

        row = np.random.default_rng(6).random(6)
        scale, phase = 4, 1
        lr = torch.tensor(np.tile(row, (3, 1)), dtype=torch.float64)[None, None]
        up = upsample_in_phase(lr, scale, phase)[0, 0].numpy()
        u = (np.arange(6 * scale) - phase) / scale
        base = np.floor(u).astype(int)
        expected = np.zeros_like(u)
        for off in (-1, 0, 1, 2):
            idx = base + off
            expected += keys(u - idx) * row[np.clip(idx, 0, 5)]
        np.testing.assert_allclose(up, np.tile(expected, (12, 1)), atol=1e-12)

    @pytest.mark.parametrize(("h", "w", "scale", "phase"), [(5, 7, 4, 0), (5, 7, 4, 3), (1, 4, 2, 1), (6, 2, 3, 2)])
    def test_upsample_in_phase_matches_grid_sample_bicubic(self, h: int, w: int, scale: int, phase: int) -> None:
        # the matrix-product form against torch's own bicubic grid_sample (border padding) on the same grid
        lr = torch.rand(2, 3, h, w, dtype=torch.float64)
        ys = (torch.arange(h * scale, dtype=torch.float64) - phase) / scale
        xs = (torch.arange(w * scale, dtype=torch.float64) - phase) / scale
        grid = torch.stack(torch.meshgrid((2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1, indexing="xy"), dim=-1)
        expected = F.grid_sample(
            lr, grid.expand(2, -1, -1, -1), mode="bicubic", padding_mode="border", align_corners=False
        )
        torch.testing.assert_close(upsample_in_phase(lr, scale, phase), expected, atol=1e-12, rtol=0)

    def test_upsample_in_phase_constant_and_gradient(self) -> None:
        up = upsample_in_phase(torch.full((3, 1, 1), 0.25), 4, 2)
        assert up.shape == (3, 4, 4)
        torch.testing.assert_close(up, torch.full((3, 4, 4), 0.25))
        lr = torch.rand(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: upsample_in_phase(t, 2, 1), (lr,))

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    def test_upsample_in_phase_onnx_export_with_dynamic_size(self) -> None:
        pytest.importorskip("onnx")
        ort = pytest.importorskip("onnxruntime")

        class Up(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return upsample_in_phase(x, 4, 1)

        buf = io.BytesIO()
        try:
            torch.onnx.export(
                Up(),
                (torch.rand(1, 2, 5, 6),),
                buf,
                dynamo=False,
                opset_version=17,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}},
            )
        except (ImportError, ModuleNotFoundError) as exc:  # an exporter dependency missing here
            pytest.skip(f"ONNX export unavailable: {exc}")
        session = ort.InferenceSession(buf.getvalue())
        for shape in [(1, 2, 5, 6), (2, 2, 7, 3), (1, 2, 1, 4)]:
            x = torch.rand(*shape)
            got = session.run(None, {"x": x.numpy()})[0]
            np.testing.assert_allclose(got, upsample_in_phase(x, 4, 1).numpy(), atol=1e-5)


# --------------------------------------------------------------------------- noise


def _snr_db(clean: torch.Tensor, noisy: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return 10 * torch.log10(clean.square().mean(dim=dims) / (noisy - clean).square().mean(dim=dims))


class TestNoise:
    def test_none_is_identity(self) -> None:
        x = torch.rand(2, 3, 4, 4)
        assert add_noise(x, None) is x

    def test_per_image_snr(self) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(3, 8, 64, 64) * torch.tensor([1.0, 10.0, 0.1]).view(3, 1, 1, 1)
        y = add_noise(x, 30.0, generator=g)
        snr = _snr_db(x, y, (1, 2, 3))  # 32768 values each: the estimate's sd is about 0.035 dB
        torch.testing.assert_close(snr, torch.full((3,), 30.0), atol=0.15, rtol=0)
        assert abs(float((y - x).mean())) < 0.01 * float((y - x).std())

    def test_batch_snr_uses_one_sigma(self) -> None:
        g = torch.Generator().manual_seed(1)
        x = torch.rand(3, 8, 64, 64) * torch.tensor([1.0, 10.0, 0.1]).view(3, 1, 1, 1)
        y = add_noise(x, 20.0, generator=g, per_image=False)
        noise_power = (y - x).square().mean(dim=(1, 2, 3))
        expected = x.square().mean() / 10 ** (20.0 / 10)
        torch.testing.assert_close(noise_power, expected.expand(3), rtol=0.03, atol=0)
        torch.testing.assert_close(_snr_db(x, y, (0, 1, 2, 3)), torch.tensor(20.0), atol=0.1, rtol=0)

    def test_generator_reproducibility_and_3d(self) -> None:
        x = torch.rand(4, 16, 16)
        a = add_noise(x, 25.0, generator=torch.Generator().manual_seed(7))
        b = add_noise(x, 25.0, generator=torch.Generator().manual_seed(7))
        c = add_noise(x, 25.0, generator=torch.Generator().manual_seed(8))
        assert a.shape == x.shape
        torch.testing.assert_close(a, b)
        assert not torch.equal(a, c)

    def test_bad_snr(self) -> None:
        with pytest.raises(InputError, match=r"finite number of dB"):
            add_noise(torch.rand(1, 1, 2, 2), float("nan"))


# --------------------------------------------------------------------------- pipeline


def _reference_lr(x: np.ndarray, size: int, sigma: float, scale: int, phase: int) -> np.ndarray:
    r = size // 2
    blurred = ndi.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="mirror", truncate=r / sigma)
    return blurred[..., phase::scale, phase::scale]


class TestDegradation:
    def _response(self, bands: int = 6) -> SpectralResponse:
        return SpectralResponse.from_matrix(np.random.default_rng(8).random((3, bands)))

    def test_simulate_matches_scipy(self) -> None:
        x = torch.rand(2, 6, 24, 32, dtype=torch.float64)
        cfg = DegradationConfig(scale=4, blur_size=7, blur_sigma=1.5, phase=1)
        r = self._response()
        lr, msi = Degradation(cfg, r).simulate(x)
        np.testing.assert_allclose(lr.numpy(), _reference_lr(x.numpy(), 7, 1.5, 4, 1), atol=1e-12)
        np.testing.assert_allclose(msi.numpy(), np.einsum("kc,bchw->bkhw", r.matrix, x.numpy()), atol=1e-12)

    def test_shift_is_applied_on_the_lr_grid(self) -> None:
        x = torch.rand(1, 6, 32, 32, dtype=torch.float64)
        r = self._response()
        lr, _ = Degradation(DegradationConfig(scale=4, shift=1), r).simulate(x)
        ref = _reference_lr(x.numpy(), 9, 2.0, 4, 0)
        ref = np.pad(ref, ((0, 0), (0, 0), (1, 0), (1, 0)), mode="reflect")[..., :8, :8]
        np.testing.assert_allclose(lr.numpy(), ref, atol=1e-12)
        lr2, _ = Degradation(DegradationConfig(scale=4, shift=(0, -2)), r).simulate(x)
        ref2 = _reference_lr(x.numpy(), 9, 2.0, 4, 0)
        np.testing.assert_allclose(lr2.numpy()[..., :-2], ref2[..., 2:], atol=1e-12)

    def test_noise_and_rank(self) -> None:
        x = torch.rand(6, 64, 64)
        cfg = DegradationConfig(scale=2, hsi_snr_db=30.0, msi_snr_db=40.0)
        deg = Degradation(cfg, self._response())
        lr, msi = deg.simulate(x, generator=torch.Generator().manual_seed(0))
        assert lr.shape == (6, 32, 32) and msi.shape == (3, 64, 64)
        clean_lr = deg.degrade_spatial(x)
        clean_msi = deg.response.apply(x)
        assert abs(float(_snr_db(clean_lr, lr, (0, 1, 2))) - 30.0) < 0.3
        assert abs(float(_snr_db(clean_msi, msi, (0, 1, 2))) - 40.0) < 0.3
        again = deg.simulate(x, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(again[0], lr)
        torch.testing.assert_close(again[1], msi)

    def test_psf_file_overrides_gaussian(self, tmp_path: Path) -> None:
        psf = np.random.default_rng(9).random((5, 3))
        np.save(tmp_path / "psf.npy", psf)
        x = torch.rand(1, 6, 16, 16, dtype=torch.float64)
        deg = Degradation(DegradationConfig(scale=2, psf=str(tmp_path / "psf.npy")), self._response())
        ref = ndi.convolve(x.numpy(), (psf / psf.sum())[None, None], mode="mirror")[..., ::2, ::2]
        np.testing.assert_allclose(deg.degrade_spatial(x).numpy(), ref, atol=1e-12)

    def test_from_config_resolves_srf(self, tmp_path: Path) -> None:
        np.save(tmp_path / "r.npy", np.ones((6, 2)))
        deg = Degradation.from_config(DegradationConfig(srf=str(tmp_path / "r.npy")), bands=6)
        assert deg.response.matrix.shape == (2, 6)
        with pytest.raises(InputError, match=r"needs a spectral response"):
            Degradation.from_config(DegradationConfig(), bands=6)

    def test_input_errors(self) -> None:
        deg = Degradation(DegradationConfig(scale=4), self._response())
        with pytest.raises(InputError, match=r"hr_hsi has 5 bands .* expects 6"):
            deg.simulate(torch.rand(1, 5, 16, 16))
        with pytest.raises(InputError, match=r"18x16 pixels, not divisible by the scale 4; crop it to 16x16"):
            deg.simulate(torch.rand(1, 6, 18, 16))
        with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
            deg.simulate(torch.rand(16, 16))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"scale": 0}, "scale must be a positive integer"),
            ({"scale": 4, "phase": 4}, "phase must be an integer in \\[0, scale=4\\)"),
            ({"blur_size": 8}, "blur_size must be a positive odd integer"),
            ({"blur_sigma": -1.0}, "blur_sigma must be a positive number"),
            ({"hsi_snr_db": float("inf")}, "hsi_snr_db must be a finite number"),
            ({"shift": 1.5}, "shift must be an integer or a pair"),
            ({"padding": "mirror"}, "padding must be"),
        ],
    )
    def test_config_errors(self, kwargs: dict[str, object], match: str) -> None:
        with pytest.raises(InputError, match=match):
            DegradationConfig(**kwargs)  # type: ignore[arg-type]

    def test_config_dict_round_trip(self) -> None:
        cfg = DegradationConfig(scale=8, shift=(1, 2), hsi_snr_db=35.0)
        d = json.loads(json.dumps(cfg.to_dict()))
        assert DegradationConfig(**d) == cfg


def _read_cave(scene: str) -> np.ndarray:
    from PIL import Image

    folder = _data("cave", f"{scene}_ms", f"{scene}_ms")
    bands = [
        np.asarray(Image.open(folder / f"{scene}_ms_{i:02d}.png"), dtype=np.float32) for i in range(1, 32)
    ]
    return np.stack(bands) / 65535.0


def test_cave_balloons_through_nikon_d700_resembles_its_rgb() -> None:
    """A loose sanity check on real data: R X correlates with the scene's own RGB rendering."""
    from PIL import Image

    x = _read_cave("balloons")  # (31, 512, 512) in [0, 1]
    rgb_path = _data("cave", "balloons_ms", "balloons_ms", "balloons_RGB.bmp")
    rgb = np.asarray(Image.open(rgb_path), dtype=np.float64).transpose(2, 0, 1) / 255.0
    r = resolve_response(_data("srf", "nikon_d700.csv"), CAVE_WL, bands=31)
    deg = Degradation(DegradationConfig(scale=4, hsi_snr_db=35.0), r)
    lr, msi = deg.simulate(torch.from_numpy(x), generator=torch.Generator().manual_seed(0))
    assert lr.shape == (31, 128, 128) and msi.shape == (3, 512, 512)
    z = msi.numpy().reshape(3, -1)
    ref = rgb.reshape(3, -1)
    corr = np.corrcoef(z, ref)[:3, 3:]  # corr[k, j]: MSI band k vs RGB channel j
    assert np.all(np.diag(corr) > 0.8), corr
    assert corr[0, 0] > corr[0, 2] and corr[2, 2] > corr[2, 0]  # red is red, blue is blue
    # blur + decimation keeps each band's mean (away from noise)
    np.testing.assert_allclose(lr.mean(dim=(1, 2)).numpy(), x.mean(axis=(1, 2)), rtol=0.02, atol=1e-3)
