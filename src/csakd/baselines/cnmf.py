"""Coupled Non-negative Matrix Factorisation (CNMF) for HSI-MSI fusion.

CNMF (Yokoya, Yairi, Iwasaki, IEEE TGRS 2012) models the HR-HSI as ``X = E A``: ``M`` endmember
spectra ``E`` (C, M) and their HR abundances ``A`` (M, H W), both non-negative. Then the LR-HSI is
``Y = E S(A)`` and the HR-MSI ``Z = (R E) A``, with ``S`` the spatial degradation (blur, decimation)
and ``R`` (c, C) the spectral response. The two images are unmixed in turn, each passing its result
to the other:

1. **HSI unmixing** of ``Y ~ E A_lr`` by NMF (Lee-Seung multiplicative updates of the Frobenius
   error). First pass: ``E`` from VCA (or SPA) on ``Y``, ``A_lr`` from ``1 / M``; ``A_lr`` is updated
   with ``E`` fixed for ``iterations`` steps, then both alternately for ``iterations`` steps.
   Later passes: ``A_lr = S(A)``, ``E`` updated with ``A_lr`` fixed, then both.
2. **MSI unmixing** of ``Z ~ E_m A`` by NMF with ``E_m = R E`` (fixed at first) and ``A`` from the
   in-phase bicubic upsampling of ``A_lr`` (first pass, clipped to be positive) or the previous ``A``;
   ``A`` updated with ``E_m`` fixed, then both alternately.
3. Steps 1-2 repeat ``outer`` times; the result is ``X = E A`` with the last HSI-side ``E``.

A multiplicative step for ``V ~ W H`` is ``H <- H * (W^T V) / (W^T W H)`` and
``W <- W * (V H^T) / (W H H^T)`` (a small ``eps`` in the denominators). Negative input values (noise)
are clipped to 0. The iteration counts are fixed (no tolerance), so a run is deterministic; VCA's
random directions come from ``numpy.random.default_rng(seed)``.

Defaults here: ``M = min(endmembers, C, h w)`` with ``endmembers=30`` (Yokoya's choice for
AVIRIS), ``iterations=200``, ``outer=2``. When ``response`` is None, ``R`` is estimated by
non-negative least squares of ``S(Z)`` on ``Y`` (:func:`~csakd.degradation.estimate.estimate_response`);
when ``blur_kernel`` is None, the blur is estimated as a Gaussian (needed for ``S`` and for ``R``).
The paper's soft sum-to-one constraint on the abundances is applied to every abundance update, with
``delta = sum_to_one * sqrt(mean over pixels of |pixel|^2)`` of the image being unmixed (default
``sum_to_one=0.5``), so that scaling both images by ``a`` scales the result by ``a``.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch

from csakd.baselines._common import (
    Array,
    KernelLike,
    ResponseLike,
    _check_positive_int,
    prepare,
    resolve_kernel,
    resolve_response_matrix,
    to_output,
)
from csakd.degradation.estimate import degrade, estimate_response
from csakd.degradation.spatial import upsample_in_phase
from csakd.errors import InputError

__all__ = ["cnmf", "nmf_updates", "spa", "vca"]

logger = logging.getLogger(__name__)

_EPS = 1e-12
#: Factors are kept >= this: values that multiplicative updates drive towards 0 would otherwise become
#: subnormal floats, which run tens of times slower on CPUs.
_FLOOR = 1e-20
#: The dtype of the NMF iterations (float32: about twice as fast as float64 on CPUs; on CAVE x4 the PSNR
#: moved by about 0.1 dB).
_NMF_DTYPE = np.float32

InitMode = Literal["vca", "spa"]


def vca(data: np.ndarray, p: int, *, seed: int = 0) -> np.ndarray:
    """Vertex Component Analysis (Nascimento and Bioucas-Dias 2005): indices of ``p`` extreme pixels.

    The data (L bands, N pixels) are centred and projected on their first ``p - 1`` principal
    directions, and a constant row (the largest projected norm) is appended, so that the data sit on
    a hyperplane of a p-dimensional space (the paper's low-SNR branch, used here always: it is well
    defined for dark pixels). Then ``p`` times: a random direction orthogonal to the endmembers found so
    far (initially to ``e_p``) is drawn, and the pixel with the largest absolute projection on it is
    the next endmember.

    Shape:
        - data: (L, N), N >= p; output: (p,) int64 pixel indices (possibly repeated on degenerate data)
    """
    n_bands, n = data.shape
    if not 1 <= p <= min(n_bands, n):
        raise InputError(f"VCA needs 1 <= p <= min(bands, pixels) = {min(n_bands, n)}, got p={p}")
    rng = np.random.default_rng(seed)
    mean = data.mean(axis=1, keepdims=True)
    centred = data - mean
    if p > 1:
        u, _, _ = np.linalg.svd(centred @ centred.T / n, hermitian=True)
        proj = u[:, : p - 1].T @ centred  # (p - 1, N)
        c = float(np.sqrt((proj**2).sum(axis=0)).max())
    else:
        proj = np.zeros((0, n))
        c = 1.0
    y = np.vstack([proj, np.full((1, n), c if c > 0 else 1.0)])  # (p, N)
    a = np.zeros((p, p))
    a[p - 1, 0] = 1.0
    idx = np.zeros(p, dtype=np.int64)
    for i in range(p):
        w = rng.standard_normal(p)
        f = w - a @ (np.linalg.pinv(a) @ w)
        norm = np.linalg.norm(f)
        f = f / norm if norm > 0 else f
        idx[i] = int(np.argmax(np.abs(f @ y)))
        a[:, i] = y[:, idx[i]]
    return idx


def spa(data: np.ndarray, p: int) -> np.ndarray:
    """Successive Projection Algorithm: indices of ``p`` pixels, deterministic.

    Repeatedly takes the pixel of largest Euclidean norm, then projects every pixel onto the orthogonal
    complement of that pixel's (residual) spectrum.

    Shape:
        - data: (L, N), N >= p; output: (p,) int64 pixel indices
    """
    n_bands, n = data.shape
    if not 1 <= p <= min(n_bands, n):
        raise InputError(f"SPA needs 1 <= p <= min(bands, pixels) = {min(n_bands, n)}, got p={p}")
    r = np.array(data, dtype=np.float64, copy=True)
    idx = np.zeros(p, dtype=np.int64)
    for i in range(p):
        norms = (r**2).sum(axis=0)
        idx[i] = int(np.argmax(norms))
        v = r[:, idx[i]].copy()
        vv = float(v @ v)
        if vv > 0:
            r -= np.outer(v, v @ r) / vv
    return idx


def nmf_updates(
    v: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    iterations: int,
    *,
    update_w: bool = True,
    update_h: bool = True,
    delta: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Lee-Seung multiplicative updates of ``|V - W H|_F^2`` (H first, then W, each step), non-negative.

    ``delta > 0`` adds the soft sum-to-one constraint ``delta^2 |1^T H - 1^T|^2`` to H's updates (a row
    ``delta`` appended to V and W, as in Yokoya et al. 2012); W's updates are unchanged. Runs in numpy
    (whose small matrix products stay single-threaded: torch's threads made small scenes many times
    slower on a busy machine). The inputs are not modified.

    Shape:
        - v: (m, n), w: (m, k), h: (k, n); outputs: updated (w, h), in h's dtype
    """
    w, h = np.array(w, dtype=h.dtype), h.copy()
    v = np.asarray(v, dtype=h.dtype)
    d2 = float(delta) ** 2
    for _ in range(iterations):
        if update_h:
            num = w.T @ v
            den = (w.T @ w) @ h
            if d2:
                num += d2
                den += d2 * h.sum(axis=0, keepdims=True)
            den += _EPS
            num /= den
            h *= num
            np.maximum(h, _FLOOR, out=h)
        if update_w:
            num = v @ h.T
            den = w @ (h @ h.T)
            den += _EPS
            num /= den
            w *= num
            np.maximum(w, _FLOOR, out=w)
    return w, h


def cnmf(
    lr_hsi: Array,
    hr_msi: np.ndarray | torch.Tensor,
    scale: int,
    *,
    response: ResponseLike = None,
    phase: int = 0,
    blur_kernel: KernelLike = None,
    endmembers: int = 30,
    iterations: int = 200,
    outer: int = 2,
    init: InitMode = "vca",
    seed: int = 0,
    sum_to_one: float = 0.5,
) -> Array:
    """Fuse one scene by Coupled NMF (see the module docstring for the exact algorithm).

    Args:
        lr_hsi: the LR-HSI ``Y``, non-negative (negative values are clipped to 0).
        hr_msi: the HR-MSI ``Z`` on the grid ``scale`` times finer, non-negative.
        scale: the HR / LR grid ratio.
        response: the spectral response ``R`` (c, C) (an array, tensor or SpectralResponse), or None to
            estimate it by NNLS.
        phase: the HR pixel of each ``scale x scale`` cell that the decimation kept, in [0, scale).
        blur_kernel: the LR-HSI's blur (kh, kw), normalised to sum 1 here; None estimates a Gaussian.
        endmembers: the most endmembers ``M`` (also at most C and the number of LR pixels).
        iterations: multiplicative steps per NMF stage (each of the "one factor fixed" and "both" stages).
        outer: the number of HSI + MSI unmixing rounds.
        init: endmember initialisation: ``"vca"`` (seeded) or ``"spa"`` (deterministic).
        seed: VCA's random seed.
        sum_to_one: the weight of the soft sum-to-one constraint on the abundances, relative to the
            image's root-mean-square pixel norm (0 turns it off).

    Returns:
        The fused HR-HSI ``E A``, float32, numpy when ``lr_hsi`` is numpy, else a tensor.

    Shape:
        - lr_hsi: (C, h, w); hr_msi: (c, h scale, w scale); response: (c, C)
        - output: (C, h scale, w scale)

    Raises:
        InputError: mismatched grids or response, bad options, non-finite values, an all-zero image.
    """
    y, z, s, p = prepare(lr_hsi, hr_msi, scale, phase)
    m_max = _check_positive_int(endmembers, "endmembers", 1)
    iters = _check_positive_int(iterations, "iterations", 1)
    n_outer = _check_positive_int(outer, "outer", 1)
    if init not in ("vca", "spa"):
        raise InputError(f"init must be 'vca' or 'spa', got {init!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if isinstance(sum_to_one, bool) or not isinstance(sum_to_one, (int, float)) or not 0 <= sum_to_one < np.inf:
        raise InputError(f"sum_to_one must be a finite number >= 0, got {sum_to_one!r}")
    weight = float(sum_to_one)
    c_hsi, h, w = y.shape
    c_msi, hh, ww = z.shape
    r = resolve_response_matrix(response, c_hsi, c_msi)
    for name, t in (("lr_hsi", y), ("hr_msi", z)):
        if not float(t.max()) > 0:
            raise InputError(f"{name} has no positive value: CNMF needs non-negative data (e.g. reflectance in [0, 1])")
        if float(t.min()) < 0:
            logger.warning("cnmf: %s has negative values (min %g); clipped to 0", name, float(t.min()))
    y = y.clamp_min(0)
    z = z.clamp_min(0)
    kernel = resolve_kernel(blur_kernel, y, z, s, p)
    if r is None:
        r = estimate_response(y, degrade(z, kernel, s, p))
    r_pos = np.clip(r, 0.0, None).astype(_NMF_DTYPE)
    m = min(m_max, c_hsi, h * w)
    y_mat = y.reshape(c_hsi, -1).numpy()
    z_mat = z.reshape(c_msi, -1).numpy().astype(_NMF_DTYPE)
    idx = vca(y_mat, m, seed=int(seed)) if init == "vca" else spa(y_mat, m)
    y_mat = y_mat.astype(_NMF_DTYPE)
    e = np.maximum(y_mat[:, idx], _EPS)  # (C, M)
    a_lr = np.full((m, h * w), 1.0 / m, dtype=_NMF_DTYPE)
    a_hr: np.ndarray | None = None
    d_y = weight * float(np.sqrt(np.square(y_mat, dtype=np.float64).sum(0).mean()))
    d_z = weight * float(np.sqrt(np.square(z_mat, dtype=np.float64).sum(0).mean()))
    logger.info("cnmf: M=%d endmembers (%s), %d outer x 2 x %d iterations", m, init, n_outer, iters)
    for rnd in range(n_outer):
        # HSI unmixing: Y ~ E A_lr
        if a_hr is None:
            e, a_lr = nmf_updates(y_mat, e, a_lr, iters, update_w=False, delta=d_y)
        else:
            a_deg = degrade(torch.from_numpy(a_hr.reshape(m, hh, ww)), kernel, s, p)
            a_lr = np.maximum(a_deg.reshape(m, -1).numpy(), _EPS)
            e, a_lr = nmf_updates(y_mat, e, a_lr, iters, update_h=False, delta=d_y)
        e, a_lr = nmf_updates(y_mat, e, a_lr, iters, delta=d_y)
        # MSI unmixing: Z ~ (R E) A
        e_m = np.maximum(r_pos @ e, _EPS)
        if a_hr is None:
            a_up = upsample_in_phase(torch.from_numpy(a_lr.reshape(m, h, w)), s, p)
            a_hr = np.maximum(a_up.reshape(m, -1).numpy(), _EPS)
        e_m, a_hr = nmf_updates(z_mat, e_m, a_hr, iters, update_w=False, delta=d_z)
        e_m, a_hr = nmf_updates(z_mat, e_m, a_hr, iters, delta=d_z)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "cnmf: round %d, RMS error of the HSI fit %.4g, of the MSI fit %.4g",
                rnd,
                float(np.sqrt(np.mean((y_mat - e @ a_lr) ** 2))),
                float(np.sqrt(np.mean((z_mat - e_m @ a_hr) ** 2))),
            )
    if a_hr is None:  # unreachable: outer >= 1
        raise RuntimeError("cnmf ran no round")
    out = torch.from_numpy((e @ a_hr).reshape(c_hsi, hh, ww))
    return to_output(out, lr_hsi)
