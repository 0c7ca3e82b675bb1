"""The public API: csakd.load(...).fuse(...) on NumPy arrays, lazily imported, with clear errors; the README's
Python example runs as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import csakd
from csakd.checkpoint import load_checkpoint, model_payload, save_payload
from csakd.errors import InputError
from csakd.inference.fuse import fuse_arrays
from csakd.models import create_model
from csakd.normalization import Normalization

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("lite", bands=8, msi_bands=3, nf=8, gc=4, blocks=(0, 1, 1, 1))
    for p in model.parameters():  # a head that is not zero, so the network adds to its base
        p.data.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "student.pt"
    save_payload(path, model_payload(model, role="student", normalization=Normalization("per_image")))
    return path


def pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((8, 8, 8), dtype=np.float32) * 500, rng.random((3, 32, 32), dtype=np.float32) * 500


def test_import_is_cheap() -> None:
    code = "import sys, csakd; assert 'torch' not in sys.modules, 'import csakd imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_and_fuse_equal_the_library_path(checkpoint: Path) -> None:
    model = csakd.load(checkpoint, device="cpu")
    assert (model.runtime, model.bands, model.msi_bands, model.scale) == ("torch", 8, 3, 4)
    lr, msi = pair()
    expected = fuse_arrays(load_checkpoint(checkpoint), lr, msi, device="cpu")
    np.testing.assert_allclose(model.fuse(lr, msi, clip=False), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(model.fuse(lr, msi), np.maximum(expected, 0), rtol=0, atol=1e-4)
    # tiled with the default (exact) overlap: the same image
    np.testing.assert_allclose(model.fuse(lr, msi, tile=16, clip=False), expected, rtol=0, atol=1e-3)


def test_onnx_models_load_the_same_way(checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from csakd.inference.export import export_onnx

    onnx_path = tmp_path / "student.onnx"
    export_onnx(checkpoint, onnx_path)
    model = csakd.load(onnx_path)
    lr, msi = pair(1)
    assert model.runtime == "onnx"
    np.testing.assert_allclose(model.fuse(lr, msi), csakd.load(checkpoint).fuse(lr, msi), rtol=0, atol=1e-2)
    with pytest.raises(InputError, match="tile is not available with an ONNX model"):
        model.fuse(lr, msi, tile=16)


def test_clear_errors_for_wrong_types_and_dimensions(checkpoint: Path, tmp_path: Path) -> None:
    model = csakd.load(checkpoint)
    lr, msi = pair()
    with pytest.raises(InputError, match=r"lr_hsi must be 3-D \(bands, height, width\), got shape \(1, 8, 8, 8\): "
                                         "drop the batch axis"):
        model.fuse(lr[None], msi)
    with pytest.raises(InputError, match=r"hr_msi must be a NumPy array .* got list"):
        model.fuse(lr, msi.tolist())
    with pytest.raises(InputError, match="boolean"):
        model.fuse(lr > 0.5, msi)
    with pytest.raises(InputError, match="no such model file"):
        csakd.load(tmp_path / "missing.pt")


def test_the_readme_python_example_runs(checkpoint: Path, tmp_path: Path) -> None:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if "csakd.load(" in b)
    assert len([line for line in example.splitlines() if line.strip()]) <= 6  # "a public API of five lines"
    lr, msi = pair(2)
    csakd.write_cube(tmp_path / "lr.npz", csakd.Cube(lr, wavelengths=np.linspace(420, 680, 8)))
    csakd.write_cube(tmp_path / "msi.npz", csakd.Cube(msi))
    code = (example.replace("runs/kd/student.pt", str(checkpoint)).replace("lr.tif", str(tmp_path / "lr.npz"))
            .replace("msi.tif", str(tmp_path / "msi.npz")).replace("fused.tif", str(tmp_path / "fused.npz")))
    exec(compile(code, "README.md", "exec"), {})
    fused = csakd.read_cube(tmp_path / "fused.npz")
    assert fused.data.shape == (8, 32, 32) and (fused.data >= 0).all()
