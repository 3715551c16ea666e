"""Jit-compiled Langevin samplers: one ``lax.scan`` per chain run, chains on the batch axis.

Unadjusted Langevin (ULA) targeting exp(−E/T):
    x ← x − (η/2)∇E(x) + √(η·T)·z,   z ~ N(0, I)
MALA adds a Metropolis–Hastings test per chain, which removes ULA's O(η) bias.
``step_size`` is η in that update (a peer library's ``step_size`` is often η/2).

One module per job:

* :mod:`.kernels` — one step: :class:`ChainState`, :class:`StepInfo`, :func:`init_chain`,
  :func:`langevin_kernel`, :func:`mala_kernel`, :func:`preconditioned_mala_kernel`.
* :mod:`.chains` — a kernel scanned over a schedule: :func:`langevin`, :func:`mala` and their
  ``*_with_info`` twins.
* :mod:`.annealed` — MDSM's chain: :func:`mdsm_temperature_schedule`, :func:`annealed_langevin`
  (+ ``_with_info``), :func:`inpainter`.
* :mod:`.chunked` — many samples on the host: :func:`gaussian_start`, :func:`sample_in_chunks`.

One calling convention everywhere: ``sample_fn(params, key, x0, free_mask=None)``.
One mask meaning everywhere: ``free_mask`` is 1 where a coordinate may move, 0 where it
is kept bit-for-bit (inpainting: free = missing pixels). One return structure per
factory: :func:`langevin`, :func:`mala`, :func:`annealed_langevin` return ``x``; their
``*_with_info`` twins return ``(x, StepInfo)`` with per-step fields of shape (n_steps,), and,
when asked, per-chain fields (``per_chain=True``) and a thinned trajectory (``thin=k``).
ULA chains can be clamped to a box (``clip=(lo, hi)``); MALA refuses it (see :func:`mala_with_info`).
Conventions shared with peers (blackjax, torchebm, MDSM) are tabled in docs/samplers.md.
"""
from __future__ import annotations

from dsm_jax.samplers.kernels import (
    ChainState, init_chain, langevin_kernel, mala_kernel, preconditioned_mala_kernel, StepInfo,
)
from dsm_jax.samplers.chains import langevin, langevin_with_info, mala, mala_with_info
from dsm_jax.samplers.annealed import (
    annealed_langevin, annealed_langevin_with_info, inpainter, mdsm_temperature_schedule,
)
from dsm_jax.samplers.chunked import gaussian_start, sample_in_chunks

__all__ = [
    "annealed_langevin", "annealed_langevin_with_info", "ChainState", "gaussian_start", "init_chain",
    "inpainter", "langevin", "langevin_kernel", "langevin_with_info", "mala", "mala_kernel", "mala_with_info",
    "mdsm_temperature_schedule", "preconditioned_mala_kernel", "sample_in_chunks", "StepInfo",
]
