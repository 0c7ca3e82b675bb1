"""benchmarks/ablations.py and benchmarks/robustness.py end to end on a tiny synthetic cube folder."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from csakd.data import Cube, write_cube

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # the scripts import benchmarks/common.py as `common`
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smooth_cube(bands: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    maps = [np.sin(2 * np.pi * (a * xx + b * yy) + c) for a, b, c in rng.random((3, 3)) * 3]
    spectra = rng.random((3, bands)) + 0.2
    cube = sum(0.5 * (1 + m)[None] * s[:, None, None] for m, s in zip(maps, spectra, strict=True))
    return (cube / cube.max()).astype(np.float32)


def write_srf(path: Path) -> Path:
    """A 3-band (B, G, R) Gaussian response sampled from 400 to 700 nm, as a csakd SRF CSV."""
    grid = np.arange(400, 701, 10)
    curves = [np.exp(-0.5 * ((grid - c) / 30) ** 2) for c in (460, 550, 620)]
    path.write_text("wavelength_nm,B,G,R\n" + "\n".join(
        f"{g},{curves[0][i]:.6f},{curves[1][i]:.6f},{curves[2][i]:.6f}" for i, g in enumerate(grid)) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    folder = root / "cubes"
    wl = np.linspace(420, 680, 8)
    for i in range(3):
        write_cube(folder / f"scene{i}.npz", Cube(smooth_cube(8, 32, seed=i), wavelengths=wl))
    return folder, write_srf(root / "srf.csv")


@pytest.fixture(scope="module")
def ablation_run(tiny_data, tmp_path_factory) -> Path:
    folder, srf = tiny_data
    out = tmp_path_factory.mktemp("ablations") / "runs"
    ablations = load_script("ablations")
    code = ablations.main(["--train", str(folder), "--test", str(folder), "--srf", str(srf), "--widths", "tiny",
                           "--only", "fusion-none,offline", "--device", "cpu", "--minutes", "1", "--out", str(out),
                           "--json", str(out.parent / "abl.json"), "--md", str(out.parent / "abl.md")])
    assert code == 0
    return out


def test_ablations_table(ablation_run: Path) -> None:
    record = json.loads((ablation_run.parent / "abl.json").read_text())
    assert {"date", "machine", "versions"} <= set(record)
    rows = {r["name"]: r for r in record["rows"]}
    assert list(rows) == ["teacher-offline", "fusion-none", "offline"]  # the offline student's teacher first
    for row in rows.values():
        assert "error" not in row
        assert {"psnr", "sam", "ergas", "rmse", "ssim", "params", "train_seconds", "bicubic"} <= set(row)
        assert np.isfinite(row["psnr"]) and row["params"] > 0
    assert rows["fusion-none"]["options"] == "--fusion none"
    assert rows["offline"]["options"].startswith("--mode offline --teacher-checkpoint")
    assert (ablation_run / "offline" / "student.pt").exists() and (ablation_run / "fusion-none" / "eval.json").exists()
    md = (ablation_run.parent / "abl.md").read_text()
    assert "| fusion-none | fusion |" in md and "| bicubic | reference |" in md and "PSNR dB" in md


def test_ablations_resume_reuses_finished_entries(ablation_run: Path, tiny_data) -> None:
    folder, srf = tiny_data
    ablations = load_script("ablations")
    common = ["--train", str(folder), "--test", str(folder), "--srf", str(srf), "--widths", "tiny", "--device",
              "cpu", "--minutes", "1", "--out", str(ablation_run)]
    with pytest.raises(SystemExit):  # a non-empty folder without --resume
        ablations.main([*common, "--only", "fusion-none"])
    before = (ablation_run / "fusion-none" / "student.pt").stat().st_mtime_ns
    json_path = ablation_run.parent / "resumed.json"
    assert ablations.main([*common, "--resume", "--only", "fusion-none,fusion-sigmoid", "--json", str(json_path),
                           "--md", str(ablation_run.parent / "resumed.md")]) == 0
    assert (ablation_run / "fusion-none" / "student.pt").stat().st_mtime_ns == before  # not trained again
    rows = {r["name"]: r for r in json.loads(json_path.read_text())["rows"]}
    first = {r["name"]: r for r in json.loads((ablation_run.parent / "abl.json").read_text())["rows"]}
    assert rows["fusion-none"] == first["fusion-none"]
    assert "error" not in rows["fusion-sigmoid"] and (ablation_run / "fusion-sigmoid" / "row.json").exists()


def test_ablations_rejects_unknown_entries() -> None:
    ablations = load_script("ablations")
    with pytest.raises(SystemExit, match="unknown grid entries"):
        ablations.main(["--only", "fusion-magic", "--list"])
    assert ablations.main(["--list"]) == 0


def test_robustness(ablation_run: Path, tmp_path) -> None:
    robustness = load_script("robustness")
    test_dir = Path(json.loads((ablation_run.parent / "abl.json").read_text())["test"])
    out = tmp_path / "rob"
    code = robustness.main(["--test", str(test_dir), "--device", "cpu", "--out", str(out),
                            "--checkpoint", str(ablation_run / "fusion-none" / "student.pt"),
                            "--checkpoint", f"offline={ablation_run / 'offline' / 'student.pt'}"])
    assert code == 0
    record = json.loads((out / "robustness.json").read_text())
    conds = [c["name"] for c in record["conditions"]]
    assert conds == ["clean", "snr40", "snr35", "snr30", "snr25", "snr20", "shift1", "shift2", "shift3"]
    assert list(record["metrics"]) == ["bicubic", "student", "offline"]
    for per_cond in record["metrics"].values():
        assert set(per_cond) == set(conds)
    bicubic = [record["metrics"]["bicubic"][c]["psnr"] for c in conds[:6]]
    assert all(a > b for a, b in itertools.pairwise(bicubic)), bicubic  # noisier -> lower PSNR
    assert record["metrics"]["bicubic"]["shift1"]["psnr"] < bicubic[0]
    md = (out / "robustness.md").read_text()
    assert "| bicubic |" in md and "| offline |" in md and "20 dB" in md and "shift 3" in md
    png = (out / "robustness.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_robustness_rejects_duplicate_names(ablation_run: Path, tmp_path) -> None:
    robustness = load_script("robustness")
    ckpt = str(ablation_run / "offline" / "student.pt")
    with pytest.raises(SystemExit, match="given twice"):
        robustness.main(["--test", str(tmp_path), "--out", str(tmp_path / "o"), "--checkpoint", ckpt,
                         "--checkpoint", ckpt])


def test_compare_tabulates_baselines_teacher_and_both_students(tiny_data, tmp_path) -> None:
    folder, srf = tiny_data
    compare = load_script("compare")
    out, json_path, md_path = tmp_path / "runs", tmp_path / "cmp.json", tmp_path / "cmp.md"
    argv = ["--train", str(folder), "--val", str(folder), "--test", str(folder), "--srf", str(srf), "--widths",
            "tiny", "--methods", "gsa", "--figures", "1", "--device", "cpu", "--minutes", "1", "--out", str(out),
            "--json", str(json_path), "--md", str(md_path)]
    assert compare.main(argv) == 0
    record = json.loads(json_path.read_text())
    assert {"date", "machine", "versions", "commands", "runs"} <= set(record)
    assert list(record["methods"]) == ["bicubic", "gsa", "teacher", "student", "student-no-kd"]
    assert set(record["complexity"]) == {"teacher", "student", "student-no-kd"}
    assert record["complexity"]["teacher"]["params"] > record["complexity"]["student"]["params"]
    assert record["complexity"]["student"]["params"] == record["complexity"]["student-no-kd"]["params"]
    # the two students are different networks: distillation changed what the student learned (their best
    # checkpoints may both be epoch 0, the residual base, on this easy synthetic scene; the last ones differ)
    from csakd.checkpoint import read_payload

    kd, plain = (read_payload(out / run / "last.pt")["models"]["student"] for run in ("kd", "plain"))
    assert any(not np.array_equal(kd[k].numpy(), plain[k].numpy()) for k in kd)
    assert "--mode student" in record["commands"]["plain"] and "student-no-kd=" in record["commands"]["eval"]
    md = md_path.read_text()
    assert "| student-no-kd |" in md and "| gsa |" in md and "csakd eval" in md
    sheets = list(tmp_path.glob("cmp_*.png"))
    assert len(sheets) == 1 and sheets[0].read_bytes().startswith(b"\x89PNG") and f"]({sheets[0].name})" in md
    with pytest.raises(SystemExit):  # the run folder exists: nothing is overwritten
        compare.main(argv)


def test_tiled_memory_records_the_peak_of_a_real_fusion(tmp_path) -> None:
    from tests.conftest import shared_path

    shared_path("data", "abu_aviris")
    tiled_memory = load_script("tiled_memory")
    work, json_path = tmp_path / "work", tmp_path / "tm.json"
    sys_argv = sys.argv
    try:
        sys.argv = ["tiled_memory.py", "--size", "256", "--preset", "lite", "--tile", "128", "--device", "cpu",
                    "--work", str(work), "--json", str(json_path)]
        assert tiled_memory.main() == 0
        record = json.loads(json_path.read_text())
        assert {"date", "machine", "versions", "peak_rss_mb", "wall_seconds", "system_seconds"} <= set(record)
        assert record["output_mb"] == pytest.approx(172 * 256 * 256 * 4 / 2**20, rel=0.01)
        assert record["peak_rss_mb"] > record["output_mb"]  # this small scene: the libraries dominate
        assert record["exact"] and record["overlap"] > 0
        assert not list(work.glob("fused*"))  # the large output is not kept unless asked
        with pytest.raises(SystemExit):  # an existing work folder is not reused
            tiled_memory.main()
    finally:
        sys.argv = sys_argv


def test_pack_cave_gives_the_same_training_cubes_in_a_third_of_the_bytes(tmp_path) -> None:
    from csakd.data.hr_cubes import list_cube_files, load_hr_cubes
    from tests.conftest import shared_path

    cave = shared_path("data", "cave")
    one = tmp_path / "one"
    one.mkdir()
    scene = sorted(p for p in cave.iterdir() if p.is_dir())[0]
    (one / scene.name).symlink_to(scene)
    pack_cave = load_script("pack_cave")
    out = tmp_path / "packed"
    assert pack_cave.main(["--cave", str(one), "--out", str(out)]) == 0
    packed = list(out.glob("*.npz"))
    assert [p.stem for p in packed] == [scene.name]
    assert packed[0].stat().st_size < 31 * 256 * 256 * 4 / 2  # under half of the float32 crop
    original = load_hr_cubes(list_cube_files(one), scale=4, crop=256, normalize="max")[0]
    again = load_hr_cubes(list_cube_files(out), scale=4, crop=256, normalize="max")[0]
    np.testing.assert_array_equal(again.data, original.data)  # bit for bit: the protocol is unchanged
    np.testing.assert_allclose(again.wavelengths, original.wavelengths)
    assert again.peak == original.peak
    with pytest.raises(SystemExit):  # an existing folder is not written into
        pack_cave.main(["--cave", str(one), "--out", str(out)])


def test_detail_base_tabulates_each_base_alone(tmp_path) -> None:
    from tests.conftest import shared_path

    cave = shared_path("data", "cave")
    one = tmp_path / "one"
    one.mkdir()
    (one / "watercolors_ms").symlink_to(cave / "watercolors_ms")
    detail_base = load_script("detail_base")
    out = tmp_path / "base.json"
    assert detail_base.main(["--cave", str(one), "--srf", str(shared_path("data", "srf", "nikon_d700.csv")),
                             "--center-crop", "128", "--radii", "2", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["scenes"] == ["watercolors_ms"] and {"date", "machine", "versions"} <= set(record["environment"])
    mean = record["mean"]
    assert set(mean) == {"bicubic", "gsa", "whole-image regression", "local r=2"}
    # the MSI's detail is worth several dB over upsampling alone, whichever way it is mapped
    for name in ("gsa", "whole-image regression", "local r=2"):
        assert mean[name]["psnr"] > mean["bicubic"]["psnr"] + 5, name
    # one regression over the whole image is GSA's synthetic-pan detail: the two agree closely
    assert abs(mean["whole-image regression"]["psnr"] - mean["gsa"]["psnr"]) < 0.5


def test_cave_run_trains_evaluates_and_records_the_validation_curve(tmp_path) -> None:
    # the quality run of benchmarks/gpu_checks.sh, on five small synthetic scenes (one held out) and 3 seconds
    wl = np.linspace(420, 680, 8)
    cubes = tmp_path / "cubes"
    for i in range(5):
        write_cube(cubes / f"scene{i}.npz", Cube(smooth_cube(8, 256, seed=i), wavelengths=wl))
    srf = write_srf(tmp_path / "srf.csv")
    cave_run = load_script("cave_run")
    out = tmp_path / "cave.json"
    assert cave_run.main(["--cave", str(cubes), "--srf", str(srf), "--minutes", "0.05", "--device", "cpu",
                          "--crop", "32", "--batch-size", "2", "--out", str(tmp_path / "run"), "--json", str(out),
                          "--extra", "--nf", "8", "--gc", "4", "--teacher-blocks", "1,1,1,1",
                          "--student-blocks", "1,1,1,1"]) == 0
    record = json.loads(out.read_text())
    assert record["held_out_scenes"] == ["scene4.npz"] and len(record["train_scenes"]) == 4  # every 5th
    assert {"bicubic", "teacher", "student"} <= set(record["metrics"])
    curve = record["validation_curve"]
    assert curve[0]["epoch"] == 0 and {r["kind"] for r in curve} == {"val/teacher", "val/student"}
    assert set(record["best"]) == {"teacher", "student"} and record["command"].startswith("benchmarks/cave_run.py")


def test_cave_folds_combines_folds_run_in_turns(tmp_path: Path) -> None:
    """Folds run in two turns merge into one table whose means are the folds' means."""
    folds = load_script("cave_folds")

    def fold(k: int, shift: float) -> dict:
        test = {m: {"psnr": 40.0 + i + shift, "sam": 1.0 + 0.1 * i - shift / 10, "ergas": 2.0}
                for i, m in enumerate(folds.METHODS)}
        gains = {r: {"psnr": test[r]["psnr"] - test["base"]["psnr"], "sam": test[r]["sam"] - test["base"]["sam"]}
                 for r in ("teacher", "student")}
        return {"fold": k, "test_scenes": [f"s{2 * k}", f"s{2 * k + 1}"], "steps": 10, "train_wall_seconds": 60.0,
                "train_peak_rss_mb": 900, "test": test, "test_gain_over_base": gains, "validation_curve": []}

    parts = []
    for name, ks in (("a", (1, 0)), ("b", (2,))):
        record = {"command": f"run {name}", "budget_minutes": 30, "device": "cpu", "folds": [fold(k, k) for k in ks]}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(record))
        parts.append(str(path))
    out = tmp_path / "all.json"
    assert folds.main(["--combine", *parts, "--json", str(out), "--md", str(tmp_path / "all.md")]) == 0
    merged = json.loads(out.read_text())
    assert [f["fold"] for f in merged["folds"]] == [0, 1, 2]
    assert merged["mean"]["student"]["psnr"] == pytest.approx(np.mean([40.0 + 4 + k for k in range(3)]))
    assert merged["mean_gain"]["student"]["psnr"] == pytest.approx(4 - 2)  # student (4th) minus base (3rd method)
    table = (tmp_path / "all.md").read_text()
    assert table.count("\n| ") == 5 and "| mean |" in table and "s4, s5" in table  # header, 3 folds, mean


def test_fit_scene_truth_parts() -> None:
    """benchmarks/fit_scene_truth.py: the camera database parses, the PSFs are the non-Gaussian shapes it says,
    and its committed table renders."""
    import json

    from tests.conftest import shared_path

    shared_path("data", "srf", "camspec_jiang2013")
    bench = load_script("fit_scene_truth")
    cams = bench.cameras()
    assert len(cams) == 28 and all(v.shape == (3, 33) for v in cams.values())
    box = bench.psf("box", 4).numpy()
    assert box.shape == (9, 9) and np.count_nonzero(box) == 16 and box.sum() == pytest.approx(1.0)
    disc = bench.psf("disc", 2.0).numpy()
    assert np.count_nonzero(disc) == 13 and disc.sum() == pytest.approx(1.0)
    record = json.loads((BENCHMARKS / "results" / "fit_scene_truth_cpu.json").read_text())
    table = bench.markdown(record)
    assert "| cnmf |" in table and "| base |" in table and "| written-full |" in table
