"""``csakd demo``: the whole method on an embedded scene, on the CPU, in a few minutes, no files needed.

The scene is :func:`csakd.demo_scene.demo_scene` (a real photograph's structure with measured reflectance
spectra, 31 bands 400-700 nm), its HR-MSI through the measured response of a Nikon D5100
(:func:`csakd.demo_scene.demo_response`), its LR-HSI by a 9x9 Gaussian blur (sigma 2) and x4 decimation. The
scene's dark half (a third of the photo's pixels are below 0.5% of its maximum, where any spectral angle
is noise) is lifted by a per-pixel gain that leaves each spectrum's shape unchanged: a pixel whose brightest
band is ``b`` is scaled to ``b ** 0.5`` (as shading or exposure would), then the cube is divided by its maximum.
The left 5/8 of the scene trains, the right 3/8 validates and tests (never seen in training). A small teacher
and student (widths 24/12) are co-trained with csakd's default recipe on 64x64 crops (batch 4); bicubic
upsampling, teacher and student are then evaluated on the held-out part. The crops are 64 pixels because the
residual base at a pixel reads the inputs up to 24 pixels away (:func:`csakd.models.detail.detail_reach`): on
32-pixel crops nearly every pixel's base sees the crop's padded border, so the networks learn to correct a base
that whole images never have (benchmarks/results/probes_demo_cpu.md: at the end of 2 minutes the held-out
student was 38.07 dB with 32-pixel crops, 39.84 dB with 64).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from csakd.checkpoint import LoadedModel, load_checkpoint
from csakd.data.pairs import SimulatedPairs
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse
from csakd.demo_scene import demo_response, demo_scene
from csakd.evaluate import EvalPair, bicubic_method, evaluate, format_table, model_method
from csakd.files import atomic_write
from csakd.models import DTSNet, preset_config
from csakd.normalization import Normalization
from csakd.train.config import TrainConfig, apply_recipe
from csakd.train.plan import RunSpec
from csakd.train.setup import setup_process, teardown_process
from csakd.train.trainer import Trainer

log = logging.getLogger(__name__)

DEMO_SIZE = 128
DEMO_SPLIT = 80  # columns 0..79 train, 80..127 validate (multiples of the scale)


def lift_shadows(cube: np.ndarray, wavelengths: np.ndarray, gamma: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Scale each pixel's spectrum so that its brightest band ``b`` becomes ``b ** gamma`` (shape kept)."""
    peak = cube.max(axis=0, keepdims=True)
    gain = np.where(peak > 0, np.power(np.maximum(peak, 1e-12), gamma - 1.0), 1.0)
    lifted = cube * gain
    return (lifted / lifted.max()).astype(np.float32), wavelengths


def run_demo(
    out_dir: str | Path,
    *,
    minutes: float = 3.5,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Build the scene, co-train, evaluate; the run (with teacher.pt and student.pt) goes to ``out_dir``."""
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    cube, wavelengths = lift_shadows(*demo_scene(DEMO_SIZE, seed=seed))
    matrix, names = demo_response(wavelengths)
    response = SpectralResponse.from_matrix(matrix, band_names=names, source="colour-science Nikon 5100 (NPL)")
    degradation = Degradation(DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0), response)
    train_cube = cube[:, :, :DEMO_SPLIT]
    test_cube = np.ascontiguousarray(cube[:, :, DEMO_SPLIT:])
    train_set = SimulatedPairs([train_cube], degradation, crop=64, augment=True, samples_per_epoch=32, seed=seed)
    val_set = SimulatedPairs([test_cube], degradation)
    widths: dict[str, Any] = {"bands": cube.shape[0], "msi_bands": 3, "scale": 4, "nf": 24, "gc": 12}
    spec = RunSpec(
        train=apply_recipe(TrainConfig(
            mode="cotrain", epochs=epochs, max_minutes=minutes, batch_size=4, crop=64, lr_teacher=1e-3,
            lr_student=1e-3, val_every=10, seed=seed, device="cpu",
        ), {"epochs", "max_minutes", "batch_size", "crop", "lr_teacher", "lr_student", "val_every", "seed", "device"}),
        teacher=preset_config("teacher", blocks=(1, 2, 1, 1), **widths),
        student=preset_config("student", blocks=(1, 1, 1, 1), **widths),
        normalization=Normalization("per_image"),
        wavelengths=[float(w) for w in wavelengths],
        response=response.to_dict(),
        degradation=degradation.config.to_dict(),
        data={"source": "csakd.demo_scene.demo_scene", "size": DEMO_SIZE, "train_columns": [0, DEMO_SPLIT]},
    )
    process = setup_process(spec.train, samples_per_epoch=len(train_set))  # the seed of the networks' weights
    try:
        trainer = Trainer(spec, train_set, val_set, out, progress=progress, process=process)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.yaml",
                     lambda tmp: tmp.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False)))
        summary = trainer.fit()
    finally:
        teardown_process(process)
    item = val_set[0]
    pair = EvalPair("demo-heldout", item["lr_hsi"], item["hr_msi"], item["hr_hsi"], 1.0, wavelengths)
    device = torch.device("cpu")
    assert spec.student is not None
    base = DTSNet(spec.student)  # untrained: its head's last convolution is zero, so it is the residual base
    methods = {
        "bicubic": bicubic_method(4, 0),
        "base": model_method(LoadedModel(base, "base", spec.normalization, spec.wavelengths, spec.response,
                                          spec.degradation, {}), device),
        "teacher": model_method(load_checkpoint(out / "teacher.pt"), device),
        "student": model_method(load_checkpoint(out / "student.pt"), device),
    }
    result = evaluate(methods, [pair], scale=4, out_dir=out / "eval", figures=1)
    log.info("\n%s", format_table(result["methods"]))
    report = {
        name: {k: result["methods"][name][k] for k in ("psnr", "sam", "ergas", "rmse", "rmse_01", "ssim")}
        for name in methods
    }
    report["training"] = {"epochs": summary["epochs"], "steps": summary["steps"], "seconds": summary["seconds"],
                          "stopped": summary["stopped"], "gains": summary["gains"]}
    return report
