"""An evaluation run: test pairs from files, the methods to compare, and where the results go.

``csakd eval`` and the test step of ``csakd train --test-data`` both describe what to evaluate with an
:class:`EvalOptions` and call :func:`run_evaluation`; the steps are also callable on their own:

- :func:`name_checkpoints` and :func:`load_models`: the checkpoints by name, loaded and checked for
  non-finite weights;
- :func:`load_test_pairs`: the pairs with ground truth, read from the AVIRIS layout or simulated from a
  folder of HR-HSI cubes (with the given degradation, or the one the first checkpoint was trained with);
- :func:`build_methods`: bicubic, the classical baselines and the networks (and their fast paths);
- :func:`run_evaluation`: all of the above, :func:`csakd.evaluate.evaluate`, and ``metrics.json`` /
  ``table.md`` beside its per-image CSV and figures.

It reads cubes through :mod:`csakd.data.hr_cubes` and never imports training: it sits with evaluation in
the layers (tests/test_layers.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from csakd.checkpoint import LoadedModel
from csakd.degradation import Degradation
from csakd.errors import InputError
from csakd.evaluate import EvalPair, Method


@dataclass
class EvalOptions:
    """What to evaluate, on what data, and where the results go (the options of ``csakd eval``).

    Attributes:
        checkpoints: checkpoint files, each ``FILE`` or ``NAME=FILE`` (named by the file's stem by default).
        methods: classical baselines to evaluate alongside (``bicubic``, ``gsa``, ``cnmf``, ``hysure``).
        data: a folder (or file) of HR-HSI test cubes, the pairs simulated from them; this or ``aviris``.
        aviris: the root of the AVIRIS reference layout, its pairs used as stored.
        split, msi_bands: the AVIRIS split and MSI (``hrmsi4`` / ``hrmsi6``).
        center_crop, normalize, variable, layout, wavelengths: how the cubes of ``data`` are read (``wavelengths``
            a text/CSV file of band centres for files that lack them).
        srf: a spectral response for simulating the pairs; None: the first checkpoint's degradation and response
            (then ``scale``, ``blur_size``, ``blur_sigma``, ``psf`` and ``phase`` are not used).
        scale: the scale of reference state dicts and, with ``srf`` or no checkpoint, of the pairs.
        phase: the decimation phase of the simulated pairs, and of bicubic when there is no degradation.
        snr, shift: noise (dB) and misregistration (LR pixels) of the test LR-HSI; ``seed`` seeds the noise.
        bicubic: include the bicubic baseline.
        fast_paths: also run each checkpoint through the device's fast path (CPU: ONNX Runtime; GPU: bf16
            autocast, channels-last).
        figures: figures for the first N images.
        out: the folder for metrics.json, metrics.csv, table.md and figures (None: nothing written).
        device: auto, cpu, cuda or cuda:N.
    """

    checkpoints: Sequence[str] = ()
    methods: Sequence[str] = ()
    data: str | Path | None = None
    aviris: str | Path | None = None
    split: Literal["train", "val", "test"] = "test"
    msi_bands: Literal[4, 6] = 4
    center_crop: int | None = None
    normalize: str = "max"
    variable: str | None = None
    layout: str = "auto"
    wavelengths: str | Path | None = None
    srf: str | None = None
    scale: int = 4
    blur_size: int = 9
    blur_sigma: float = 2.0
    psf: str | None = None
    phase: int = 0
    snr: float | None = None
    shift: int = 0
    bicubic: bool = True
    fast_paths: bool = False
    figures: int = 3
    out: str | Path | None = None
    device: str = "auto"
    seed: int = 0

    def checkpoint_files(self) -> list[str]:
        """Every path the checkpoint options may name (each spec as given, and the FILE of ``NAME=FILE``)."""
        return [*self.checkpoints, *(s.partition("=")[2] for s in self.checkpoints if "=" in s)]


@dataclass
class EvalData:
    """The test pairs, the degradation that simulated them (None for stored pairs), and their scale."""

    pairs: list[EvalPair]
    degradation: Degradation | None
    scale: int


def name_checkpoints(specs: Sequence[str], methods: Sequence[str]) -> dict[str, str]:
    """``FILE`` or ``NAME=FILE`` -> {name: file}; a FILE is named by its stem.

    Raises:
        InputError: two checkpoints with one name (``runs/a/student.pt`` and ``runs/b/student.pt``), or a
            name that is also a method: each would hide the other's row.
    """
    named: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or "/" in name or os.sep in name or Path(spec).exists():
            name, path = Path(spec).stem, spec
        if name in named:
            raise InputError(
                f"two checkpoints are named {name!r} ({named[name]} and {path}): name them with "
                f"--checkpoint NAME=FILE, e.g. --checkpoint kd={named[name]} --checkpoint plain={path}"
            )
        if name in methods or name == "bicubic":
            raise InputError(f"checkpoint {path} is named {name!r}, like a baseline method: name it with NAME=FILE")
        named[name] = path
    return named


def load_models(named: dict[str, str], *, scale: int = 4) -> dict[str, LoadedModel]:
    """The named checkpoints, loaded (``scale`` for reference state dicts).

    Raises:
        InputError: a checkpoint that cannot be read, or one with non-finite weights.
    """
    from csakd.checkpoint import load_checkpoint
    from csakd.inference.fuse import nonfinite_weights

    loaded = {name: load_checkpoint(path, scale=scale) for name, path in named.items()}
    for name, lm in loaded.items():
        if nonfinite_weights(lm.model):
            raise InputError(f"checkpoint {named[name]} has {nonfinite_weights(lm.model)} non-finite weight(s) (NaN "
                             "or Inf): it is damaged or its training diverged; nothing was evaluated")
    return loaded


def load_test_pairs(options: EvalOptions, reference: LoadedModel | None = None) -> EvalData:
    """The test pairs of ``options``: stored AVIRIS pairs, or pairs simulated from the cubes of ``options.data``.

    The cubes are degraded with ``options.srf`` and the blur settings when ``srf`` is given, else as
    ``reference`` (the first checkpoint) was trained; ``snr`` and ``shift`` then apply to the test LR-HSI.

    Raises:
        InputError: no data named, no degradation to simulate with, no pairs, or pairs of mixed band counts.
    """
    from csakd.degradation import DegradationConfig, SpectralResponse

    pairs: list[EvalPair] = []
    degradation = None
    scale = reference.config.scale if reference is not None else options.scale
    if options.aviris:
        from csakd.data import AvirisReferenceDataset

        ds = AvirisReferenceDataset(options.aviris, options.split, msi_bands=options.msi_bands, shift=options.shift)
        for i in range(len(ds)):
            item = ds[i]
            pairs.append(EvalPair(ds.names[i].replace("/", "_"), item["lr_hsi"], item["hr_msi"], item["hr_hsi"]))
    else:
        from csakd.data.hr_cubes import build_degradation, list_cube_files, load_hr_cubes, simulate_pair

        if not options.data:
            raise InputError("test data needed: --data FOLDER of HR-HSI cubes, or --aviris ROOT")
        if options.srf:
            config = DegradationConfig(scale=options.scale, blur_size=options.blur_size,
                                       blur_sigma=options.blur_sigma, psf=options.psf, phase=options.phase,
                                       srf=options.srf)
            response = None
        elif reference is not None and reference.degradation and reference.response:
            config = DegradationConfig(**{k: v for k, v in reference.degradation.items() if k != "hsi_snr_db"
                                          and k != "msi_snr_db"})
            response = SpectralResponse.from_dict(reference.response)
        else:
            raise InputError("no degradation to simulate the test pairs with: pass --srf (and --blur-size etc.)")
        if options.snr is not None:
            config.hsi_snr_db = options.snr
        if options.shift:
            config.shift = options.shift
        scale = config.scale
        wavelengths = None
        if options.wavelengths:
            from csakd.data.readers import read_wavelengths

            wavelengths = read_wavelengths(options.wavelengths)
        cubes = load_hr_cubes(list_cube_files(options.data), scale=config.scale, crop=options.center_crop,
                              normalize=options.normalize, wavelengths=wavelengths, variable=options.variable,
                              layout=options.layout)
        degradation = build_degradation(config, cubes) if response is None else Degradation(config, response)
        g = torch.Generator().manual_seed(options.seed)
        for c in cubes:
            p = simulate_pair(degradation, c.data, generator=g)
            pairs.append(EvalPair(c.name, p["lr_hsi"], p["hr_msi"], p["hr_hsi"], c.peak, c.wavelengths))
    if not pairs:
        raise InputError("no test pairs found")
    shapes = {(tuple(p.hr_hsi.shape[:1]), tuple(p.hr_msi.shape[:1])) for p in pairs}
    if len(shapes) > 1:
        raise InputError(f"the test pairs have mixed band counts {sorted(shapes)}: expected one")
    return EvalData(pairs, degradation, scale)


def build_methods(
    options: EvalOptions,
    test: EvalData,
    models: dict[str, LoadedModel],
    named: dict[str, str],
    device: torch.device,
    scratch: Path,
) -> dict[str, Method]:
    """Bicubic (unless left out), the baselines of ``options.methods``, the networks and, with
    ``options.fast_paths``, each network's fast path (an ONNX export goes to ``scratch``)."""
    from csakd.baselines import make_method
    from csakd.evaluate import bicubic_method, model_method

    degradation, scale = test.degradation, test.scale
    phase = degradation.config.phase if degradation is not None else options.phase
    methods = {"bicubic": bicubic_method(scale, phase)} if options.bicubic else {}
    for name in options.methods:
        if name == "bicubic":
            continue
        methods[name] = make_method(
            name, scale=scale, phase=phase,
            response=degradation.response.matrix if degradation is not None else None,
            blur_kernel=degradation.kernel if degradation is not None else None,
        )
    methods.update({name: model_method(lm, device) for name, lm in models.items()})
    if options.fast_paths:
        from csakd.evaluate import bf16_method, onnx_method

        for name, lm in models.items():
            if device.type == "cuda":
                methods[f"{name}@bf16-channels-last"] = bf16_method(lm, device)
            else:
                methods[f"{name}@onnxruntime"] = onnx_method(named[name], scratch)
    return methods


def run_evaluation(options: EvalOptions) -> dict[str, Any]:
    """Evaluate the checkpoints and methods of ``options`` on its test data.

    Returns :func:`csakd.evaluate.evaluate`'s ``{"methods": ..., "per_image": ...}``, with
    ``fast_path_deltas`` (with ``fast_paths``) and ``complexity`` (with ``out``). With ``out``, the folder
    gets metrics.csv and the figures, metrics.json (this result) and table.md.

    Raises:
        InputError: nothing to evaluate, an unknown method, checkpoints that clash by name, are damaged or do
            not fit the test data, or test data that cannot be read (see :func:`load_test_pairs`).
    """
    from csakd.baselines import get_baseline
    from csakd.checkpoint import check_compatible
    from csakd.devices import resolve_device
    from csakd.evaluate import evaluate

    if not options.checkpoints and not options.methods:
        raise InputError("nothing to evaluate: give --checkpoint FILE and/or --method NAME")
    for name in options.methods:
        get_baseline(name)  # unknown names fail here, before any work
    named = name_checkpoints(options.checkpoints, options.methods)
    models = load_models(named, scale=options.scale)
    test = load_test_pairs(options, next(iter(models.values()), None))
    first = test.pairs[0]
    for name, lm in models.items():
        check_compatible(lm, bands=first.hr_hsi.shape[0], msi_bands=first.hr_msi.shape[0], scale=test.scale,
                         what=f"test data (for {name})")
    device = resolve_device(options.device)
    out_dir = Path(options.out) if options.out else None
    with tempfile.TemporaryDirectory(prefix="csakd-eval-") as scratch:
        methods = build_methods(options, test, models, named, device, Path(scratch))
        result = evaluate(methods, test.pairs, scale=test.scale, out_dir=out_dir, figures=options.figures)
    if options.fast_paths:
        from csakd.evaluate import path_deltas

        result["fast_path_deltas"] = path_deltas(result["methods"])
    if out_dir is not None:
        from csakd.evaluate import markdown_table
        from csakd.files import write_json
        from csakd.models import count_macs, count_params

        h, w = first.hr_hsi.shape[-2:]
        result["complexity"] = {name: {"params": count_params(lm.model), "macs": count_macs(lm.config, (h, w)),
                                       "size": [h, w]} for name, lm in models.items()}
        write_json(out_dir / "metrics.json", result)
        (out_dir / "table.md").write_text(markdown_table(result["methods"], result["complexity"]))
    return result
