"""The full-scale fit: a network fitted to the observation model of the pair itself, and held-out consistency.

At full scale there is no reference, only the two observations. With the estimated PSF ``k`` (decimation at the
estimated phase: ``S``), response ``R`` and offsets ``o``, the fused image ``X = f(Y, Z)`` must satisfy

    ``S(X) ~ Y`` (spectral consistency) and ``R X + o ~ Z`` (spatial consistency),

the unsupervised losses of uSDN / MIAE / zero-shot fusion papers. Here the loss is the sum of the two mean
squared errors, each divided by its target's variance (so neither image's units or contrast dominates).

The network starts from its residual base (the head's last convolution is zero at initialisation, so ``f`` is
the base exactly) or from a given network (the reduced-scale fit), so the fit can only add to it: it is
early-stopped on **held-out** pixels, a strip of LR-HSI columns on the right and the HR-MSI columns they cover,
that training never sees (its crops, inputs included, lie left of the strip): the state kept is the best by
:func:`heldout_score` on the strip, and step 0 (the start) is a candidate, so a fit that never helps returns
its start unchanged.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from csakd.degradation.estimate import degrade
from csakd.fit.estimates import SceneEstimates
from csakd.metrics import psnr, sam

log = logging.getLogger("csakd.fit")

__all__ = ["FullScaleResult", "decide", "fit_full_scale", "heldout_consistency", "heldout_score"]


def _response_apply(x: torch.Tensor, response: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``R X + o`` for X (B, C, H, W) -> (B, c, H, W)."""
    return torch.einsum("kc,bchw->bkhw", response, x) + offset[None, :, None, None]


def heldout_consistency(fused: torch.Tensor, lr: torch.Tensor, msi: torch.Tensor, est: SceneEstimates,
                        v0: int) -> dict[str, float]:
    """Consistency of an HR image with both inputs on the held-out strip (LR columns ``v0:``; HR ``scale v0:``).

    Returns ``spectral_psnr`` (``S(X)`` vs ``Y``, per-band peak, dB), ``spectral_sam`` (degrees),
    ``spatial_psnr`` (``R X + o`` vs ``Z``, dB) and ``score``, the mean of the two PSNRs (the early-stopping
    and the fitted-or-base criterion). ``v0 = 0`` measures the whole image.

    Shape:
        - fused: (C, H, W); lr: (C, h, w); msi: (c, H, W), all normalised, float64
    """
    s = est.scale
    x = fused.to(torch.float64)
    back = degrade(x, torch.from_numpy(est.kernel), s, est.phase)[:, :, v0:]
    y = lr.to(torch.float64)[:, :, v0:]
    pred = _response_apply(x[None], torch.from_numpy(est.response), torch.from_numpy(est.offsets))[0][:, :, s * v0:]
    z = msi.to(torch.float64)[:, :, s * v0:]
    spec = float(psnr(back[None], y[None])[0])
    spat = float(psnr(pred[None], z[None])[0])
    return {"spectral_psnr": spec, "spectral_sam": float(sam(back[None], y[None])[0]), "spatial_psnr": spat,
            "score": 0.5 * (spec + spat)}


def heldout_score(fused: torch.Tensor, lr: torch.Tensor, msi: torch.Tensor, est: SceneEstimates, v0: int) -> float:
    """:func:`heldout_consistency`'s ``score`` (dB; higher is more consistent)."""
    return heldout_consistency(fused, lr, msi, est, v0)["score"]


@dataclass
class FullScaleResult:
    """The network kept (the best on the held-out strip), and how the fit went."""

    model: torch.nn.Module
    summary: dict[str, Any]


@torch.no_grad()
def _forward_whole(model: torch.nn.Module, lr: torch.Tensor, msi: torch.Tensor, device: torch.device) -> torch.Tensor:
    from csakd.normalization import from_network, to_network

    out, _ = model(to_network(lr.float()[None].to(device)), to_network(msi.float()[None].to(device)))
    return from_network(out.float())[0].cpu().double()


def fit_full_scale(
    model: torch.nn.Module,
    lr: torch.Tensor,
    msi: torch.Tensor,
    est: SceneEstimates,
    *,
    train_w: int,
    v0: int,
    device: torch.device,
    minutes: float | None,
    steps: int | None,
    batch_size: int = 4,
    crop: int = 32,
    learning_rate: float = 1e-4,
    validate_every: int = 10,
    seed: int = 0,
    start_label: str = "base",
) -> FullScaleResult:
    """Fit ``model`` (in place; returns the best state) to ``S(X) ~ Y``, ``R X + o ~ Z`` on the training columns.

    Crops of ``crop`` LR pixels (``scale crop`` HR) are drawn from LR columns ``[0, train_w)`` (inputs and
    targets: the strip from ``v0`` is never seen); the spectral term leaves out the LR pixels whose blur reaches
    past the crop. Adam at ``learning_rate``; every ``validate_every`` steps the whole pair is fused and scored
    on the strip (:func:`heldout_score`; the whole image when ``v0 = 0``), and the best state is kept; the
    start (step 0) is scored too. Stops at ``minutes`` or ``steps``, or after 8 validations without a gain.

    Shape:
        - lr: (C, h, w), msi: (c, h scale, w scale), normalised float64
    """
    s = est.scale
    gen = torch.Generator().manual_seed(seed)
    kernel = torch.from_numpy(est.kernel).to(device, torch.float32)
    response = torch.from_numpy(est.response).to(device, torch.float32)
    offset = torch.from_numpy(est.offsets).to(device, torch.float32)
    h = int(lr.shape[-2])
    crop = max(2, min(crop, h, train_w))
    margin = min(math.ceil((est.kernel.shape[0] // 2) / s) + 1, max(0, (crop - 2) // 2))
    y_var = lr[:, :, :train_w].var(dim=(1, 2)).clamp_min(1e-12).to(device, torch.float32)
    z_var = msi[:, :, : s * train_w].var(dim=(1, 2)).clamp_min(1e-12).to(device, torch.float32)
    lr32, msi32 = lr.float(), msi.float()
    model = model.to(device)
    from csakd.normalization import from_network, to_network

    def score_now() -> tuple[float, dict[str, float]]:
        model.eval()
        fused = _forward_whole(model, lr, msi, device)
        m = heldout_consistency(fused, lr, msi, est, v0)
        model.train()
        return m["score"], m

    best_score, best_m = score_now()
    start_m = dict(best_m)
    best_state = copy.deepcopy(model.state_dict())
    best_step = 0
    history: list[dict[str, float]] = [{"step": 0, **best_m}]
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    t0 = time.perf_counter()
    step, stale = 0, 0
    losses: list[float] = []
    model.train()
    while True:
        if steps is not None and step >= steps:
            break
        if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
            break
        rows = torch.randint(0, h - crop + 1, (batch_size,), generator=gen)
        cols = torch.randint(0, train_w - crop + 1, (batch_size,), generator=gen)
        ys = torch.stack([lr32[:, r:r + crop, c:c + crop] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)])
        zs = torch.stack([msi32[:, s * r:s * (r + crop), s * c:s * (c + crop)]
                          for r, c in zip(rows.tolist(), cols.tolist(), strict=True)])
        ys, zs = ys.to(device), zs.to(device)
        out, _ = model(to_network(ys), to_network(zs))
        x = from_network(out)
        back = torch.stack([degrade(xi, kernel, s, est.phase) for xi in x])
        inner = slice(margin, crop - margin)
        spec = ((back - ys)[:, :, inner, inner].square().mean(dim=(0, 2, 3)) / y_var).mean()
        spat = ((_response_apply(x, response, offset) - zs).square().mean(dim=(0, 2, 3)) / z_var).mean()
        loss = spec + spat
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % validate_every == 0:
            score, m = score_now()
            history.append({"step": step, "loss": float(np.mean(losses[-validate_every:])), **m})
            if score > best_score:
                best_score, best_m, best_step, stale = score, m, step, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= 8:
                    break
    model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - t0
    log.info("fit-scene: full-scale fit: %d steps in %.0f s; held-out score %.3f dB at step %d (%s: %.3f dB)",
             step, seconds, best_score, best_step, start_label, start_m["score"])
    return FullScaleResult(model=model, summary={
        "steps": step, "seconds": round(seconds, 2), "best_step": best_step, "start": start_label,
        "start_heldout": start_m, "best_heldout": best_m, "gain_db": best_score - start_m["score"],
        "history": history, "learning_rate": learning_rate, "crop_lr_pixels": crop, "batch_size": batch_size,
        "validate_every": validate_every,
    })


def decide(fitted: torch.Tensor, base: torch.Tensor, lr: torch.Tensor, msi: torch.Tensor, est: SceneEstimates,
           v0: int, *, force: bool = False) -> dict[str, Any]:
    """Whether the fitted image or the base is written: the fitted one only when it is more consistent with
    both inputs on the held-out strip (:func:`heldout_score`), or when ``force``.

    Returns the two measures, the gain (dB), ``fit_beats_base``, ``written`` (``"fitted"`` or ``"base"``) and
    ``lines``, what to tell the user.
    """
    f = heldout_consistency(fitted, lr, msi, est, v0)
    b = heldout_consistency(base, lr, msi, est, v0)
    gain = f["score"] - b["score"]
    beats = gain > 0
    written = "fitted" if beats or force else "base"
    region = f"the held-out columns {v0}..{int(lr.shape[-1])} of the LR-HSI" if v0 else "the whole image"
    lines = [f"held-out consistency on {region} (mean of the spectral and spatial PSNRs): fitted "
             f"{f['score']:.3f} dB, base {b['score']:.3f} dB ({gain:+.3f} dB)"]
    if beats:
        lines.append("the fit is more consistent than its base: the fitted image is written")
    elif force:
        lines.append("the fit is NOT more consistent than its base (not worth it here); the fitted image is written "
                     "anyway (--force-fit)")
    else:
        lines.append("the fit is NOT more consistent than its base, so it is not worth it on this pair: the base "
                     "(the network's residual base, without the fit) is written; --force-fit writes the fitted one")
    return {"region": region, "fitted": f, "base": b, "gain_db": gain, "fit_beats_base": beats, "forced": force,
            "written": written, "lines": lines,
            "definition": "score = mean of PSNR(S(X), LR-HSI) and PSNR(R X + o, HR-MSI) on the held-out strip "
                          "(per-band peak, dB); the strip is never seen in training"}
