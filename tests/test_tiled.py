"""Tiled, streaming fusion: agreement with one whole-image pass, locality, blending, coverage, memory, files."""

from __future__ import annotations

import itertools
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from csakd.data import read_cube
from csakd.degradation import Degradation, DegradationConfig
from csakd.errors import CsakdError, InputError, OutputExistsError
from csakd.inference.fuse import fuse_arrays, fuse_files
from csakd.inference.tiled import (
    CubeWriter,
    fuse_files_tiled,
    fuse_tiled,
    fuse_tiled_arrays,
    plan_tiles,
    receptive_field,
    statistics_receptive_field,
)
from csakd.models import DTSNet, create_model, preset_config
from csakd.normalization import Normalization
from tests.conftest import shared_path

TINY = {"nf": 8, "gc": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(bands: int = 8, msi_bands: int = 3, *, blocks=(0, 0, 0, 0), scale: int = 4, gain: float = 1.0,
               **kw) -> DTSNet:
    """A tiny network whose every path matters: the zero-started last convolution is re-drawn, and ``gain``
    scales every convolution (a wider effective reach than the 0.1-scaled initialisation). Four heads of 4
    attention channels unless told otherwise."""
    kw = {"attn_dim": 16, "feedback": False, **TINY, **kw}  # feedback: tests/test_feedback.py
    model = create_model("teacher", bands=bands, msi_bands=msi_bands, scale=scale, blocks=blocks, **kw)
    with torch.no_grad():
        last = model.head[2]
        assert isinstance(last, torch.nn.Conv2d)
        torch.nn.init.normal_(last.weight, std=0.1)
        for p in model.parameters():
            if p.ndim == 4:
                p.mul_(gain)
    return model.eval()


def smooth_pair(bands: int, msi_bands: int, h: int, w: int, scale: int, seed: int = 0):
    """A smooth random HR scene (blurred noise) degraded into a pair on the network scale [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.rand(1, bands, h * scale + 8, w * scale + 8, generator=g), 9, stride=1)
    lr = F.avg_pool2d(x, scale)
    msi = torch.einsum("mc,bchw->bmhw", torch.rand(msi_bands, bands, generator=g).softmax(dim=1), x)
    return lr * 2 - 1, msi * 2 - 1


def whole(model: DTSNet, lr: torch.Tensor, msi: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(lr, msi)[0][0].numpy()


# ------------------------------------------------------------------------------- the attention mechanism


@pytest.mark.parametrize("attention", ["reference", "paper", "normalized"])
def test_attention_statistics_add_up_and_reproduce_forward(attention: str) -> None:
    model = tiny_model(fusion="csa", attention=attention, residual="none", attn_dim=64)
    lr, msi = torch.randn(2, 8, 6, 5), torch.randn(2, 3, 24, 20)
    with torch.no_grad():
        out, _ = model(lr, msi)
        stats = model.fusion_statistics(lr, msi)
        top = torch.zeros(1, 1, 24, 20)
        top[..., :11, :] = 1.0
        parts = [model.fusion_statistics(lr, msi, top), model.fusion_statistics(lr, msi, 1.0 - top)]
        for key in stats:
            torch.testing.assert_close(parts[0][key] + parts[1][key], stats[key], rtol=1e-5, atol=1e-5)
        attention_matrix = model.attention_from_statistics({k: v.double() for k, v in stats.items()})
        assert attention_matrix.shape == (2, 4, 16, 16)
        again, _ = model(lr, msi, attention=attention_matrix)
        other, _ = model(lr, msi, attention=torch.softmax(torch.randn(1, 4, 16, 16), dim=-1))
    torch.testing.assert_close(again, out, rtol=0, atol=1e-5)
    if attention != "reference":  # the reference form ignores its attention matrix (rows sum to 1)
        assert (other - out).abs().max() > 1e-3


def test_attention_argument_is_refused_without_attention() -> None:
    model = tiny_model(fusion="concat_gating")
    lr, msi = torch.randn(1, 8, 4, 4), torch.randn(1, 3, 16, 16)
    with pytest.raises(InputError, match="no attention"):
        model(lr, msi, attention=torch.ones(1, 4, 16, 16) / 16)
    with pytest.raises(InputError, match="no attention"):
        model.fusion_statistics(lr, msi)
    csa = tiny_model(fusion="csa")
    with pytest.raises(InputError, match="attention must be"):
        csa(lr, msi, attention=torch.ones(1, 2, 4, 4))


# ------------------------------------------------------------------------------------ receptive field


def _needed_overlap(model: DTSNet, n: int, tol: float = 0.0) -> int:
    """The overlap that LR-aligned tiles need, measured: for each pixel of the centre LR cell, the gradient's
    support in both inputs, widened to whole LR cells, relative to the cell (attention held fixed).

    ``tol``: gradients at most this fraction of the largest count as zero (the ``regression`` base's box means
    are differences of cumulative sums, whose backward pass leaves rounding residue far from the pixel)."""
    cfg = model.config
    s, d = cfg.scale, cfg.attn_dim // cfg.heads
    fixed = torch.softmax(torch.randn(1, cfg.heads, d, d, dtype=torch.float64), dim=-1)
    centre, worst = n // 2, 0
    for offset in range(s):
        lr = torch.randn(1, cfg.bands, n, n, dtype=torch.float64, requires_grad=True)
        msi = torch.randn(1, cfg.msi_bands, n * s, n * s, dtype=torch.float64, requires_grad=True)
        out, _ = model(lr, msi, attention=fixed)
        x = s * centre + offset
        out[0, :, x, x].sum().backward()
        assert lr.grad is not None and msi.grad is not None
        g_hr, g_lr = msi.grad[0].abs().sum(0).sum(1), lr.grad[0].abs().sum(0).sum(1)
        floor = tol * float(max(g_hr.max(), g_lr.max()))
        rows_hr = torch.nonzero(g_hr > floor).flatten()
        rows_lr = torch.nonzero(g_lr > floor).flatten()
        lowest = min(int(rows_hr.min()) // s, int(rows_lr.min()))
        highest = max(int(rows_hr.max()) // s, int(rows_lr.max()))
        worst = max(worst, s * (centre - lowest), s * (highest - centre))
    return worst


@pytest.mark.parametrize(
    "settings",
    [
        {"blocks": (1, 1, 1, 1), "scale": 4},
        {"blocks": (0, 1, 0, 0), "scale": 2},
        {"blocks": (0, 1, 1, 0), "scale": 3},
        {"blocks": (1, 0, 0, 0), "scale": 4, "residual": "bicubic"},
        {"blocks": (1, 0, 0, 2), "scale": 2, "apply_joint_hr_blocks": False},
    ],
)
def test_receptive_field_bounds_the_measured_reach(settings: dict) -> None:
    # float64: the gradient through ~30 convolutions of 0.1-scaled weights must not underflow to zero
    model = tiny_model(4, 3, fusion="csa", **{"residual": "none", "nf": 4, "gc": 2, **settings}).double()
    rf = receptive_field(model.config)
    s = model.config.scale
    needed = _needed_overlap(model, 2 * rf // s + 4)
    assert rf % s == 0
    assert rf - s <= needed <= rf, f"receptive_field {rf}, measured {needed}"


def test_receptive_field_of_the_presets_matches_the_method_notes() -> None:
    # the method notes: the student's joint-LR stream stacks 61 LR convolutions (about 244 HR pixels at x4),
    # the teacher's 91; the head adds two HR convolutions, rounded up to whole LR pixels
    student, teacher = preset_config("student", paper=True), preset_config("teacher", paper=True)
    assert 61 * 4 < receptive_field(student) <= 61 * 4 + 4
    assert 91 * 4 < receptive_field(teacher) <= 91 * 4 + 4
    assert statistics_receptive_field(student) == 61 * 4  # the HSI stream: 1 + 15 x 4 LR convolutions


# ------------------------------------------------------------------------------ agreement with one pass


@pytest.mark.parametrize(
    ("fusion", "attention"),
    [
        ("csa", "normalized"),
        ("csa", "paper"),
        ("csa", "reference"),
        ("cross_attention", "normalized"),
        ("none", "normalized"),
        ("sigmoid", "normalized"),
        ("concat_gating", "normalized"),
    ],
)
def test_tiled_equals_whole_pass(fusion: str, attention: str) -> None:
    model = tiny_model(fusion=fusion, attention=attention, residual="bicubic")
    lr, msi = smooth_pair(8, 3, 22, 19, 4)
    plan = plan_tiles(88, 76, tile=16, overlap=receptive_field(model.config), scale=4)
    assert plan.rows.window < 88 and plan.cols.window < 76, "windows must be smaller than the image"
    reference = whole(model, lr, msi)
    tiled = fuse_tiled(model, lr, msi, tile=16, batch_tiles=3)
    assert tiled is not None and tiled.dtype == np.float32 and tiled.shape == reference.shape
    assert np.abs(tiled - reference).max() <= 1e-4


@pytest.mark.parametrize("attention", ["paper", "normalized"])
def test_tiled_equals_whole_pass_of_a_deep_network(attention: str) -> None:
    # 16 LR convolutions in the joint-LR and HSI streams: a receptive field of 68 HR pixels
    model = tiny_model(blocks=(0, 1, 1, 0), fusion="csa", attention=attention)
    lr, msi = smooth_pair(8, 3, 60, 56, 4)
    rf = receptive_field(model.config)
    plan = plan_tiles(240, 224, tile=80, overlap=rf, scale=4)
    assert rf == 68 and plan.rows.window < 240 and plan.cols.window < 224
    tiled = fuse_tiled(model, lr, msi, tile=80)
    assert tiled is not None
    assert np.abs(tiled - whole(model, lr, msi)).max() <= 1e-4


def test_windows_spanning_the_image_make_one_pass() -> None:
    model = tiny_model(blocks=(0, 1, 0, 0), fusion="csa")
    lr, msi = smooth_pair(8, 3, 20, 60, 4)
    rf = receptive_field(model.config)
    plan = plan_tiles(80, 240, tile=16, overlap=rf, scale=4)
    assert plan.rows.count == 1 and plan.rows.window == 80, "rows: 16 + 2 x 68 >= 80, one core"
    assert plan.cols.count > 1 and plan.cols.window < 240
    calls = []
    out = fuse_tiled(model, lr, msi, tile=16, writer=lambda rows, cols, block: calls.append((rows, cols)))
    assert out is None and all(rows == slice(0, 80) for rows, _ in calls) and len(calls) == plan.cols.count
    single = []
    fuse_tiled(model, lr, msi, tile=240, writer=lambda rows, cols, block: single.append(block))
    assert len(single) == 1
    np.testing.assert_array_equal(single[0], whole(model, lr, msi))


@pytest.fixture(scope="module")
def cave_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """balloons_ms, a 96x96 HR crop divided by its maximum, simulated as in the CAVE protocol (Nikon D700,
    9x9 Gaussian blur of sigma 2, x4); on the network scale."""
    scene = read_cube(shared_path("data", "cave", "balloons_ms"))
    srf = shared_path("data", "srf", "nikon_d700.csv")
    x = scene.data[:, 208:304, 208:304]
    x = x / x.max()
    degradation = Degradation.from_config(
        DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0, srf=str(srf)), wavelengths=scene.wavelengths
    )
    lr, msi = degradation.simulate(torch.from_numpy(np.ascontiguousarray(x))[None])
    return lr * 2 - 1, msi * 2 - 1


def test_tiled_equals_whole_pass_on_cave(cave_pair) -> None:
    lr, msi = cave_pair
    model = tiny_model(31, 3, fusion="csa", attention="normalized")
    rf = receptive_field(model.config)
    reference = whole(model, lr, msi)
    tiled = fuse_tiled(model, lr, msi, tile=24, overlap=rf, batch_tiles=2)
    assert tiled is not None
    assert np.abs(tiled - reference).max() <= 1e-4


# -------------------------------------------------------------------------------- smaller overlaps


def _boundary_distance(plan, height: int, width: int) -> np.ndarray:
    """Each pixel's distance (in pixels, Chebyshev) to the nearest interior core boundary of its core."""
    def axis(ap) -> np.ndarray:
        d = np.full(ap.size, np.iinfo(np.int64).max // 2, dtype=np.int64)
        for k in range(ap.count):
            lo, hi = ap.bounds[k], ap.bounds[k + 1]
            idx = np.arange(lo, hi)
            if k > 0:
                d[lo:hi] = np.minimum(d[lo:hi], idx - lo)
            if k < ap.count - 1:
                d[lo:hi] = np.minimum(d[lo:hi], hi - 1 - idx)
        return d

    return np.minimum(axis(plan.rows)[:, None], axis(plan.cols)[None, :])


@pytest.mark.parametrize("fusion", ["concat_gating", "csa"])
def test_smaller_overlap_degrades_gracefully(fusion: str) -> None:
    model = tiny_model(8, 3, blocks=(0, 1, 1, 0), gain=3.0, fusion=fusion, attention="normalized")
    lr, msi = smooth_pair(8, 3, 48, 48, 4, seed=1)
    rf = receptive_field(model.config)
    reference = whole(model, lr, msi)
    errors = {}
    for overlap in (rf, 32, 16, 8, 4, 0):
        out = fuse_tiled(model, lr, msi, tile=96, overlap=overlap, blend="none")
        assert out is not None
        err = np.abs(out - reference)
        errors[overlap] = float(err.max())
        plan = plan_tiles(192, 192, tile=96, overlap=overlap, scale=4)
        far = _boundary_distance(plan, 192, 192) + overlap >= rf
        if fusion == "concat_gating" or overlap >= statistics_receptive_field(model.config):
            # locality: a pixel whose window reaches rf beyond it on every interior side is exact (with the
            # attention, only while pass 1's sums are exact too: below their own reach they change every pixel)
            assert err[:, far].max(initial=0.0) <= 1e-4
        if overlap <= 4:
            assert err[:, ~far].max() > 1e-3, "the test image must show the approximation"
    values = [errors[o] for o in (rf, 32, 16, 8, 4, 0)]
    assert all(b >= a - 1e-5 for a, b in itertools.pairwise(values)), errors
    assert values[-1] > 100 * max(values[0], 1e-6)


def _seam_step(out: np.ndarray, reference: np.ndarray, plan) -> float:
    """The mean absolute step of the error across the interior column boundaries of the cores."""
    d = np.abs(np.diff(out - reference, axis=2)).mean(axis=(0, 1))
    return float(d[[b - 1 for b in plan.cols.bounds[1:-1]]].mean())


@pytest.mark.parametrize("overlap", [8, 16])
def test_blending_softens_the_seams(overlap: int) -> None:
    # the bicubic base: the regression base's reach (24 pixels) is beyond these overlaps, and its error at a
    # seam is a step that no ramp of overlap / 2 pixels smooths
    model = tiny_model(8, 3, blocks=(0, 1, 1, 0), gain=3.0, fusion="csa", attention="normalized", residual="bicubic")
    lr, msi = smooth_pair(8, 3, 48, 48, 4, seed=2)
    reference = whole(model, lr, msi)
    plan = plan_tiles(192, 192, tile=64, overlap=overlap, scale=4)
    hard = fuse_tiled(model, lr, msi, tile=64, overlap=overlap, blend="none")
    soft = fuse_tiled(model, lr, msi, tile=64, overlap=overlap, blend="cosine")
    linear = fuse_tiled(model, lr, msi, tile=64, overlap=overlap, blend="linear")
    assert hard is not None and soft is not None and linear is not None
    # blending changes only the ramps: overlap / 4 pixels each side of a boundary
    same = _boundary_distance(plan, 192, 192) >= overlap // 4
    np.testing.assert_array_equal(soft[:, same], hard[:, same])
    assert _seam_step(soft, reference, plan) < 0.8 * _seam_step(hard, reference, plan)
    assert _seam_step(linear, reference, plan) < 0.8 * _seam_step(hard, reference, plan)
    rms = {k: float(np.sqrt(((v - reference) ** 2).mean())) for k, v in (("hard", hard), ("soft", soft))}
    assert rms["soft"] <= 1.1 * rms["hard"], rms


# ----------------------------------------------------------------------------- writer: coverage, memory


@pytest.mark.parametrize(
    ("blocks", "overlap", "blend", "batch"),
    [((0, 0, 0, 0), None, "cosine", 1), ((0, 0, 1, 0), 16, "cosine", 4), ((0, 0, 1, 0), 8, "linear", 2)],
)
def test_writer_receives_every_pixel_once(blocks, overlap, blend, batch) -> None:
    model = tiny_model(8, 3, blocks=blocks, fusion="csa")
    lr, msi = smooth_pair(8, 3, 30, 41, 4)
    expected = fuse_tiled(model, lr, msi, tile=40, overlap=overlap, blend=blend, batch_tiles=batch)
    count = np.zeros((120, 164), dtype=np.int64)
    got = np.full((8, 120, 164), np.nan, dtype=np.float32)
    calls = []

    def writer(rows: slice, cols: slice, block: np.ndarray) -> None:
        assert block.dtype == np.float32 and block.shape == (8, rows.stop - rows.start, cols.stop - cols.start)
        count[rows, cols] += 1
        got[:, rows, cols] = block
        calls.append((rows, cols))

    assert fuse_tiled(model, lr, msi, tile=40, overlap=overlap, blend=blend, batch_tiles=batch,
                      writer=writer, progress=True) is None
    assert count.min() == 1 and count.max() == 1
    np.testing.assert_array_equal(got, expected)
    resolved = receptive_field(model.config) if overlap is None else overlap
    assert len(calls) >= plan_tiles(120, 164, tile=40, overlap=resolved, scale=4).count > 1


def test_writer_path_does_not_hold_the_output() -> None:
    model = tiny_model(16, 3, fusion="csa")
    lr, msi = smooth_pair(16, 3, 64, 64, 4)
    output_bytes = 16 * 256 * 256 * 4
    seen = []

    def peak(**kwargs) -> int:
        tracemalloc.start()
        try:
            fuse_tiled(model, lr, msi, tile=32, **kwargs)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    with_writer = peak(overlap=8, writer=lambda rows, cols, block: seen.append(block.shape))
    blended = peak(overlap=4, blend="cosine", writer=lambda rows, cols, block: None)
    without = peak()
    assert without >= output_bytes  # the measurement sees numpy's allocations
    assert with_writer < output_bytes / 4
    assert blended < output_bytes / 4
    assert sum(s[1] * s[2] for s in seen) == 256 * 256


# ------------------------------------------------------------------------------------------ bad input


def test_bad_tile_sizes_raise_before_any_work() -> None:
    model = tiny_model(fusion="csa")
    lr, msi = smooth_pair(8, 3, 10, 10, 4)

    def writer(rows, cols, block) -> None:
        raise AssertionError("nothing may be written")

    cases = [
        ({"tile": 30}, r"tile=30 is not a multiple of the scale 4.*use 28 or 32"),
        ({"tile": 2}, r"tile=2 is not a multiple of the scale 4.*use 4"),
        ({"tile": -8}, "tile=-8: expected 0"),
        ({"tile": True}, "tile=True"),
        ({"tile": 16, "overlap": 6}, r"overlap=6 is not a multiple of the scale 4.*use 4 or 8"),
        ({"tile": 16, "overlap": -4}, "overlap=-4: expected a non-negative"),
        ({"tile": 16, "batch_tiles": 0}, "batch_tiles=0"),
        ({"tile": 16, "blend": "gaussian"}, "blend='gaussian': expected one of cosine, linear, none"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            fuse_tiled(model, lr, msi, writer=writer, **kwargs)
    with pytest.raises(InputError, match="one scene"):
        fuse_tiled(model, lr.expand(2, -1, -1, -1), msi.expand(2, -1, -1, -1), tile=16, writer=writer)
    with pytest.raises(InputError, match="hr_msi is 36x40"):
        fuse_tiled(model, lr, msi[..., 4:, :], tile=16, writer=writer)


# ----------------------------------------------------------------------------- arrays, files, writers


def loaded_model(model: DTSNet, kind: str = "per_image"):
    from csakd.checkpoint import LoadedModel

    return LoadedModel(model=model, role="student", normalization=Normalization(kind), wavelengths=None,
                       response=None, degradation=None, metadata={})


def test_fuse_tiled_arrays_normalises_by_the_whole_scene() -> None:
    model = tiny_model(8, 3, blocks=(0, 1, 0, 0), fusion="csa")
    lr, msi = smooth_pair(8, 3, 32, 32, 4)
    lr, msi = (lr + 1) * 500.0, (msi + 1) * 500.0
    lr[..., :8, :8] *= 4.0  # the brightest part of the scene is in one corner: each tile's own peak differs
    loaded = loaded_model(model)
    lr_np, msi_np = lr[0].numpy(), msi[0].numpy()
    expected = fuse_arrays(loaded, lr_np, msi_np, device="cpu")
    one_pass = fuse_tiled_arrays(loaded, lr_np, msi_np, tile=0, device="cpu")
    assert one_pass is not None
    np.testing.assert_array_equal(one_pass, expected)
    tiled = fuse_tiled_arrays(loaded, lr_np.astype(np.float64), msi_np, tile=32, device="cpu")
    assert tiled is not None
    peak = float(lr_np.max())
    assert np.abs(tiled - expected).max() <= 1e-4 * peak
    blocks: dict[tuple[int, int], np.ndarray] = {}
    fuse_tiled_arrays(loaded, lr_np, msi_np, tile=32, device="cpu",
                      writer=lambda rows, cols, block: blocks.__setitem__((rows.start, cols.start), block.copy()))
    streamed = np.zeros_like(expected)
    for (r, c), block in blocks.items():
        streamed[:, r : r + block.shape[1], c : c + block.shape[2]] = block
    np.testing.assert_array_equal(streamed, tiled)


def test_inplace_normalisation_gives_the_same_numbers_and_spares_read_only_inputs() -> None:
    model = tiny_model(8, 3, blocks=(0, 1, 0, 0), fusion="csa")
    lr, msi = smooth_pair(8, 3, 32, 32, 4)
    lr_np, msi_np = ((lr[0] + 1) * 500.0).numpy(), ((msi[0] + 1) * 500.0).numpy()
    loaded = loaded_model(model)
    expected = fuse_tiled_arrays(loaded, lr_np, msi_np, tile=32, device="cpu")
    assert expected is not None
    lr_copy, msi_copy = lr_np.copy(), msi_np.copy()
    inplace = fuse_tiled_arrays(loaded, lr_copy, msi_copy, tile=32, device="cpu", inplace=True)
    assert inplace is not None
    np.testing.assert_array_equal(inplace, expected)
    assert not np.array_equal(lr_copy, lr_np)  # the inputs were used as the network's buffers: no second copy
    assert lr_copy.min() >= -1.0 and lr_copy.max() <= 1.0
    frozen_lr, frozen_msi = lr_np.copy(), msi_np.copy()
    frozen_lr.flags.writeable = False
    frozen_msi.flags.writeable = False
    again = fuse_tiled_arrays(loaded, frozen_lr, frozen_msi, tile=32, device="cpu", inplace=True)
    assert again is not None
    np.testing.assert_array_equal(again, expected)
    np.testing.assert_array_equal(frozen_lr, lr_np)  # a read-only input (a memory-mapped file) is copied


def test_inference_adds_the_residual_base_in_place_with_the_same_numbers() -> None:
    model = tiny_model(8, 3, fusion="csa", residual="bicubic")
    lr, msi = smooth_pair(8, 3, 8, 8, 4)
    with torch.no_grad():
        inference = model(lr, msi)[0]
    with torch.enable_grad():
        training = model(lr, msi)[0]
    assert training.requires_grad
    torch.testing.assert_close(inference, training.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["out.npy", "out.tif", "out.hdr", "out.npz"])
def test_cube_writer_round_trip_and_atomicity(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(0)
    cube = rng.random((5, 40, 52), dtype=np.float32)
    wavelengths = np.linspace(450.0, 850.0, 5)
    path = tmp_path / name
    writer = CubeWriter(path, cube.shape, wavelengths=wavelengths, band_names=[f"b{i}" for i in range(5)])
    order = [(r, c) for r in range(0, 40, 16) for c in range(0, 52, 20)]
    rng.shuffle(order)
    for r, c in order:
        writer.write_window(slice(r, min(r + 16, 40)), slice(c, min(c + 20, 52)), cube[:, r : r + 16, c : c + 20])
    assert not path.exists(), "nothing appears under the output name before close"
    writer.close()
    back = read_cube(path)
    np.testing.assert_array_equal(back.data, cube)
    if name != "out.npy":
        np.testing.assert_allclose(back.wavelengths, wavelengths)
    with pytest.raises(OutputExistsError):
        CubeWriter(path, cube.shape)
    visible = sorted(p.name for p in tmp_path.iterdir())
    assert all(not p.startswith(".") for p in visible), visible


@pytest.mark.parametrize("backend", ["rasterio", "tifffile"])
def test_cube_writer_geotiff_keeps_georeferencing(tmp_path: Path, monkeypatch, backend: str) -> None:
    from csakd.data.cube import GeoInfo

    if backend == "tifffile":
        monkeypatch.setattr("csakd.data.io_tiff.import_rasterio", lambda: None)
        geo = GeoInfo(nodata=-1.0)  # tifffile cannot write a CRS; nodata and wavelengths go in GDAL tags
    else:
        geo = GeoInfo(crs="EPSG:32633", transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0), nodata=-1.0)
    cube = np.random.default_rng(1).random((3, 300, 270), dtype=np.float32)
    with CubeWriter(tmp_path / "geo.tif", cube.shape, wavelengths=[500.0, 600.0, 700.0], geo=geo) as writer:
        for r in range(0, 300, 128):
            writer(slice(r, min(r + 128, 300)), slice(0, 270), cube[:, r : r + 128])
    back = read_cube(tmp_path / "geo.tif")
    np.testing.assert_array_equal(back.data, cube)
    np.testing.assert_allclose(np.asarray(back.wavelengths), [500.0, 600.0, 700.0])
    assert back.geo is not None and back.geo.nodata == -1.0
    if backend == "rasterio":
        assert back.geo.transform == geo.transform and "32633" in str(back.geo.crs)


def test_cube_writer_leaves_nothing_when_incomplete_or_failed(tmp_path: Path) -> None:
    path = tmp_path / "out.tif"
    writer = CubeWriter(path, (2, 8, 8))
    writer.write_window(slice(0, 8), slice(0, 4), np.zeros((2, 8, 4), np.float32))
    with pytest.raises(CsakdError, match="32 pixel writes for 64 pixels"):
        writer.close()
    with pytest.raises(RuntimeError), CubeWriter(tmp_path / "x.hdr", (2, 8, 8)) as w:
        w.write_window(slice(0, 8), slice(0, 8), np.zeros((2, 8, 8), np.float32))
        raise RuntimeError("failed mid-way")
    with pytest.raises(InputError, match="expected \\(2, rows, cols\\)"):
        CubeWriter(tmp_path / "y.npy", (2, 8, 8)).write_window(slice(0, 4), slice(0, 4), np.zeros((3, 4, 4)))
    with pytest.raises(InputError, match=r"cannot write '\.png' files"):
        CubeWriter(tmp_path / "z.png", (2, 8, 8))
    assert [p for p in os.listdir(tmp_path) if not p.startswith(".y.npy")] == []


def test_fuse_files_tiled_matches_fuse_files(tmp_path: Path) -> None:
    from csakd.checkpoint import model_payload, save_payload
    from csakd.data import Cube, write_cube

    model = tiny_model(6, 3, blocks=(0, 1, 0, 0), fusion="csa")
    lr, msi = smooth_pair(6, 3, 24, 20, 4)
    wavelengths = [450.0, 500.0, 550.0, 600.0, 650.0, 700.0]
    write_cube(tmp_path / "lr.tif", Cube((lr[0].numpy() + 1) * 100, wavelengths=np.array(wavelengths)))
    write_cube(tmp_path / "msi.tif", Cube((msi[0].numpy() + 1) * 100))
    save_payload(tmp_path / "m.pt", model_payload(model, role="student", normalization=Normalization()))
    args = (tmp_path / "lr.tif", tmp_path / "msi.tif", tmp_path / "m.pt")
    fuse_files(*args, tmp_path / "one.tif", device="cpu")
    fuse_files_tiled(*args, tmp_path / "tiled.hdr", tile=32, device="cpu")
    one, tiled = read_cube(tmp_path / "one.tif"), read_cube(tmp_path / "tiled.hdr")
    assert np.abs(tiled.data - one.data).max() <= 1e-4 * 200
    np.testing.assert_allclose(tiled.wavelengths, wavelengths)
    with pytest.raises(OutputExistsError):
        fuse_files_tiled(*args, tmp_path / "tiled.img", tile=32, device="cpu")
    with pytest.raises(InputError, match="tile=30"):
        fuse_files_tiled(*args, tmp_path / "other.tif", tile=30, device="cpu")
    assert not (tmp_path / "other.tif").exists()
