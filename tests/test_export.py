"""ONNX export (csakd.inference.export) and the torch-free ONNX Runtime fuser (csakd.inference.onnx_runtime)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import csakd  # noqa: E402
from csakd.checkpoint import load_checkpoint, model_payload, save_payload  # noqa: E402
from csakd.errors import CheckpointError, CsakdError, InputError, OutputExistsError  # noqa: E402
from csakd.inference.export import export_onnx  # noqa: E402
from csakd.inference.fuse import fuse_arrays  # noqa: E402
from csakd.inference.onnx_runtime import OnnxFuser, fuse_files_onnx, providers_for_device  # noqa: E402
from csakd.models import create_model  # noqa: E402
from csakd.normalization import Normalization  # noqa: E402

BANDS, MSI_BANDS, SCALE = 8, 3, 4
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_checkpoint(
    path: Path,
    *,
    fusion: str = "csa",
    attention: str = "normalized",
    residual: str = "bicubic",
    normalization: Normalization | None = None,
    seed: int = 0,
    feedback: bool = False,
    **extra: Any,
) -> Path:
    """A tiny student with every weight perturbed (so the zero-initialised last conv matters), saved as a checkpoint."""
    model = create_model("student", bands=BANDS, msi_bands=MSI_BANDS, scale=SCALE, nf=8, gc=4, blocks=(1, 1, 1, 1),
                         fusion=fusion, attention=attention, residual=residual, feedback=feedback)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    payload = model_payload(model, role="student", normalization=normalization or Normalization("per_image"), **extra)
    return save_payload(path, payload)


def network_inputs(batch: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lr = rng.uniform(-1, 1, (batch, BANDS, h, w)).astype(np.float32)
    msi = rng.uniform(-1, 1, (batch, MSI_BANDS, h * SCALE, w * SCALE)).astype(np.float32)
    return lr, msi


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """One csa / normalized export with metadata to read back, shared by the tests that only use it."""
    root = tmp_path_factory.mktemp("onnx")
    response = {"matrix": np.full((MSI_BANDS, BANDS), 1.0 / BANDS).tolist(), "band_names": ["b", "g", "r"],
                "source": "test"}
    ckpt = make_checkpoint(root / "student.pt", normalization=Normalization("fixed", hsi_scale=4095.0, msi_scale=255.0),
                           wavelengths=[400.0 + 10 * i for i in range(BANDS)], response=response,
                           degradation={"scale": SCALE, "blur_size": 9})
    info = export_onnx(ckpt, root / "student.onnx")
    return ckpt, root / "student.onnx", info


# ------------------------------------------------------------------------------------------ export vs PyTorch
@pytest.mark.parametrize(
    ("fusion", "attention", "residual"),
    [
        ("csa", "normalized", "bicubic"),
        ("csa", "normalized", "regression"),  # the regression base: float64 sums, unrolled Cholesky
        ("csa", "normalized", "regression+feedback"),  # and the base's LR residual into the streams
        ("csa", "paper", "bicubic"),
        ("csa", "reference", "none"),  # the paper's network exactly
        ("cross_attention", "normalized", "bicubic"),
        ("none", "normalized", "bicubic"),
        ("concat_gating", "normalized", "none"),
    ],
)
def test_export_agrees_with_pytorch(tmp_path: Path, fusion: str, attention: str, residual: str) -> None:
    residual, feedback = residual.split("+")[0], residual.endswith("+feedback")
    ckpt = make_checkpoint(tmp_path / "m.pt", fusion=fusion, attention=attention, residual=residual,
                           feedback=feedback)
    out = tmp_path / "m.onnx"
    info = export_onnx(ckpt, out)
    assert out.is_file() and info["max_abs_diff"] <= 1e-4 and len(info["checks"]) == 2
    onnx.checker.check_model(str(out), full_check=True)

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    lr_in, msi_in, (hr_out,) = session.get_inputs()[0], session.get_inputs()[1], session.get_outputs()
    assert (lr_in.name, msi_in.name, hr_out.name) == ("lr_hsi", "hr_msi", "hr_hsi")
    # batch, height and width are symbolic; the band counts fixed
    assert [isinstance(d, str) for d in lr_in.shape] == [True, False, True, True] and lr_in.shape[1] == BANDS
    assert [isinstance(d, str) for d in msi_in.shape] == [True, False, True, True] and msi_in.shape[1] == MSI_BANDS

    net = load_checkpoint(ckpt).model.eval()
    for batch, h, w in [(2, 3, 10), (1, 13, 4)]:  # the export traced (1, 8, 6)
        lr, msi = network_inputs(batch, h, w, seed=h)
        with torch.no_grad():
            expected = net(torch.from_numpy(lr), torch.from_numpy(msi))[0].numpy()
        got = session.run(["hr_hsi"], {"lr_hsi": lr, "hr_msi": msi})[0]
        assert got.shape == (batch, BANDS, h * SCALE, w * SCALE)
        assert float(np.abs(got - expected).max()) <= 1e-4
        # the comparison has teeth: the two images of a batch differ, and so would a swapped pair
        if batch == 2:
            assert float(np.abs(got[0] - expected[1]).max()) > 1e-2


def test_metadata_round_trip(exported: tuple[Path, Path, dict[str, Any]]) -> None:
    ckpt, path, info = exported
    loaded = load_checkpoint(ckpt)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert props == {k: json.loads(v) for k, v in info["metadata"].items()}
    assert props["csakd_format"] == "csakd-onnx" and props["csakd_version"] == csakd.__version__
    assert (props["bands"], props["msi_bands"], props["scale"]) == (BANDS, MSI_BANDS, SCALE)
    assert props["model_config"] == loaded.config.to_dict()
    assert props["normalization"] == loaded.normalization.to_dict()
    assert props["wavelengths"] == loaded.wavelengths and props["response"] == loaded.response
    assert props["degradation"] == loaded.degradation and props["role"] == loaded.role
    assert props["opset"] == 17 and props["exporter"] == info["exporter"]

    fuser = OnnxFuser(path, threads=1)
    assert (fuser.bands, fuser.msi_bands, fuser.scale) == (BANDS, MSI_BANDS, SCALE)
    assert fuser.normalization == loaded.normalization
    assert fuser.wavelengths is not None and fuser.wavelengths.tolist() == loaded.wavelengths
    assert fuser.describe()["role"] == "student"


@pytest.mark.parametrize("kind", ["fixed", "per_image"])
def test_fuser_agrees_with_fuse_arrays(exported: tuple[Path, Path, dict[str, Any]], tmp_path: Path,
                                       kind: str) -> None:
    ckpt, path, _ = exported
    if kind == "per_image":  # a second export whose only difference is the normalisation
        ckpt = make_checkpoint(tmp_path / "p.pt", normalization=Normalization("per_image"))
        path = tmp_path / "p.onnx"
        export_onnx(ckpt, path, check=False)
    rng = np.random.default_rng(1)
    lr = rng.uniform(0, 4095, (BANDS, 5, 7)).astype(np.float32)  # raw 12-bit units
    msi = rng.uniform(0, 255 if kind == "fixed" else 4095, (MSI_BANDS, 20, 28)).astype(np.float32)
    got = OnnxFuser(path, threads=1).fuse(lr, msi)
    expected = fuse_arrays(load_checkpoint(ckpt), lr, msi, device="cpu")
    assert got.shape == expected.shape == (BANDS, 20, 28) and got.dtype == np.float32
    # the [-1, 1] tolerance, in the files' units
    assert float(np.abs(got - expected).max()) <= 1e-4 * 4095
    # the normalisation is applied: rescaling a per-image input rescales the output
    if kind == "per_image":
        assert np.allclose(OnnxFuser(path, threads=1).fuse(lr * 3, msi * 3), got * 3, rtol=1e-4, atol=1e-2)


# ------------------------------------------------------------------------------------------ refusals
def test_refuses_inputs_that_do_not_fit(exported: tuple[Path, Path, dict[str, Any]]) -> None:
    _, path, _ = exported
    fuser = OnnxFuser(path, threads=1)
    lr = np.ones((BANDS, 4, 4), np.float32)
    msi = np.ones((MSI_BANDS, 16, 16), np.float32)
    with pytest.raises(CheckpointError, match=r"lr_hsi has 5 bands \(the ONNX model student.onnx expects 8\)"):
        fuser.fuse(lr[:5], msi)
    with pytest.raises(CheckpointError, match=r"hr_msi has 4 bands .*expects 3"):
        fuser.fuse(lr, np.ones((4, 16, 16), np.float32))
    with pytest.raises(InputError, match="a ratio of 3, but the model fuses at x4"):
        fuser.fuse(lr, msi[:, :12, :12])
    with pytest.raises(InputError, match="one integer scale in both axes"):
        fuser.fuse(lr, msi[:, :, :12])
    bad = lr.copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(InputError, match="lr_hsi has 1 NaN or Inf"):
        fuser.fuse(bad, msi)
    with pytest.raises(InputError, match=r"expected lr_hsi \(C, h, w\)"):
        fuser.fuse(lr[0], msi)


def test_refuses_files_that_are_not_csakd_onnx(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxFuser(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="cannot load"):
        OnnxFuser(junk)
    helper = onnx.helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
    with pytest.raises(CheckpointError, match="no csakd metadata"):
        OnnxFuser(plain)


def test_providers_for_device() -> None:
    assert providers_for_device("cpu") == ["CPUExecutionProvider"]
    assert providers_for_device("auto")[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert providers_for_device("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    else:
        with pytest.raises(InputError, match=r"no CUDA provider.*onnxruntime-gpu"):
            providers_for_device("cuda")
    with pytest.raises(InputError, match="expected auto, cpu, cuda or cuda:N"):
        providers_for_device("tpu")


def test_export_refuses_before_work(exported: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    ckpt, _, _ = exported
    existing = tmp_path / "old.onnx"
    existing.write_bytes(b"old")
    # refused before the checkpoint is even read (it does not exist)
    with pytest.raises(OutputExistsError, match="exists"):
        export_onnx(tmp_path / "no-such.pt", existing)
    assert existing.read_bytes() == b"old"
    with pytest.raises(InputError, match=r"ending in \.onnx"):
        export_onnx(ckpt, tmp_path / "model.pt")
    with pytest.raises(InputError, match="opset 15"):
        export_onnx(ckpt, tmp_path / "a.onnx", opset=15)
    with pytest.raises(CheckpointError, match="does not exist"):
        export_onnx(tmp_path / "no-such.pt", tmp_path / "b.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx"]
    info = export_onnx(ckpt, existing, overwrite=True, check=False)
    assert info["max_abs_diff"] is None
    assert OnnxFuser(existing, threads=1).bands == BANDS


def test_failed_check_writes_nothing(exported: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    ckpt, _, info = exported
    assert info["max_abs_diff"] > 0  # fp32 rounding differs somewhere, so a tolerance below it must refuse
    with pytest.raises(CsakdError, match=r"differs from PyTorch by .* expected at most 1e-12.*not written"):
        export_onnx(ckpt, tmp_path / "m.onnx", atol=1e-12)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_auto_exporter_falls_back(exported: tuple[Path, Path, dict[str, Any]], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import csakd.inference.export as export_module

    ckpt, _, _ = exported
    working = export_module._export_torchscript

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("exporter gone")

    # a TorchScript exporter that fails (as in a PyTorch without it) hands over to the dynamo one, here a
    # stand-in (the real one needs onnxscript); the metadata says which exporter made the file
    monkeypatch.setattr(export_module, "_export_torchscript", broken)
    monkeypatch.setattr(export_module, "_export_dynamo", working)
    info = export_onnx(ckpt, tmp_path / "a.onnx")
    assert info["exporter"] == "dynamo" and OnnxFuser(tmp_path / "a.onnx", threads=1).metadata["exporter"] == "dynamo"
    with pytest.raises(CsakdError, match="torchscript: RuntimeError: exporter gone") as excinfo:
        export_onnx(ckpt, tmp_path / "b.onnx", exporter="torchscript")
    assert "dynamo" not in str(excinfo.value)
    monkeypatch.setattr(export_module, "_export_dynamo", broken)
    with pytest.raises(CsakdError, match="torchscript: RuntimeError: exporter gone; dynamo: RuntimeError: exporter"):
        export_onnx(ckpt, tmp_path / "b.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]


# ------------------------------------------------------------------------------------------ files, no torch
def test_fuse_files_onnx_without_torch(exported: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    ckpt, path, _ = exported
    rng = np.random.default_rng(2)
    lr = rng.uniform(0, 4095, (BANDS, 6, 5)).astype(np.float32)
    msi = rng.uniform(0, 255, (MSI_BANDS, 24, 20)).astype(np.float32)
    np.save(tmp_path / "lr.npy", lr)
    np.save(tmp_path / "msi.npy", msi)
    out = tmp_path / "fused.npz"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        from csakd.inference.onnx_runtime import fuse_files_onnx
        fuse_files_onnx({str(tmp_path / "lr.npy")!r}, {str(tmp_path / "msi.npy")!r}, {str(path)!r}, {str(out)!r},
                        threads=1)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert loaded == ["torch"] and sys.modules["torch"] is None, loaded
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    # (csakd/inference/__init__.py must import fuse_arrays / fuse_files lazily for this to pass)
    assert result.returncode == 0, result.stderr[-3000:]

    with np.load(out) as f:
        fused, wavelengths = f["data"], f["wavelengths"]
    expected = np.maximum(fuse_arrays(load_checkpoint(ckpt), lr, msi, device="cpu"), 0)  # fuse clips at 0
    assert float(np.abs(fused - expected).max()) <= 1e-4 * 4095
    assert wavelengths.tolist() == load_checkpoint(ckpt).wavelengths  # from the model: .npy has none

    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        fuse_files_onnx(tmp_path / "lr.npy", tmp_path / "msi.npy", path, out)
    with pytest.raises(InputError, match=r"cannot write '\.png'"):
        fuse_files_onnx(tmp_path / "lr.npy", tmp_path / "msi.npy", path, tmp_path / "fused.png")
    assert out.read_bytes() == before


def test_missing_file_library_refused_before_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("rasterio", "tifffile") else real(name, *a))
    # a minimal install without the TIFF libraries: refused before the (missing) model or inputs are read
    with pytest.raises(InputError, match=r"writing \.tif files needs rasterio or tifffile"):
        fuse_files_onnx(tmp_path / "lr.npy", tmp_path / "msi.npy", tmp_path / "none.onnx", tmp_path / "out.tif")
    assert list(tmp_path.iterdir()) == []
