"""Fitting a fusion network to one real pair that has no ground truth (``csakd fit-scene``).

- :mod:`~csakd.fit.options`: :class:`FitOptions` and the checks of the pair and the outputs.
- :mod:`~csakd.fit.estimates`: the pair's degradation (:func:`estimate_scene`) and the consistency measures.
- :mod:`~csakd.fit.base`: the noise-aware residual base the fit starts from (:func:`base_settings`).
- :mod:`~csakd.fit.data`: the reduced-scale (Wald) training crops.
- :mod:`~csakd.fit.scene`: :func:`fit_scene`, the whole command.
- :mod:`~csakd.fit.figures`, :mod:`~csakd.fit.report`: its figures and console summary.
"""

from __future__ import annotations

from csakd.fit.data import WaldCrops
from csakd.fit.estimates import SceneEstimates, estimate_scene, spatial_consistency, spectral_consistency
from csakd.fit.options import FitOptions, grid_ratio
from csakd.fit.report import summary_lines
from csakd.fit.scene import FitSceneResult, fit_scene

__all__ = [
    "FitOptions",
    "FitSceneResult",
    "SceneEstimates",
    "WaldCrops",
    "estimate_scene",
    "fit_scene",
    "grid_ratio",
    "spatial_consistency",
    "spectral_consistency",
    "summary_lines",
]
