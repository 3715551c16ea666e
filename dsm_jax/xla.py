"""XLA compile options for dsm_jax's compiled steps and samplers.

``compiler_options(ynn_fusions=False)`` returns the per-computation options for
``jax.jit(fn, compiler_options=...)`` (and ``fit(..., compiler_options=...)``) that turn
off XLA:CPU's YNNPACK library fusions. XLA:CPU hands dots, convolutions and some
elementwise chains to YNNPACK by default; whether that helps depends on the shapes,
measured on 2 Zen 4 cores (``experiments/benchmarks`` has the side-by-side rows):

* faster **without** them: the DDE toy MLP's DSM step (25 × 32 softplus, batch 2048;
  2·10⁶-FLOP dots): 14.3 → 9.4 ms; MDSM ResNet steps and scanned Langevin chains with
  ``CanonicalConv`` (XLA's Eigen convolutions beat YNNPACK's at 64 channels): CPU ResNet
  training step 191 → 165 ms, its Langevin step at 250 chains 247 → 195 ms;
* faster **with** them: mid-sized dense layers (DDE's Fashion-MNIST DenseNet, K up to 1808,
  batch 100): 43 → 67 ms per step without; a 256² matmul 157 → 107 GFLOP/s.

So it is a per-workload choice, not a global flag: the experiments carry it as a config
field (``ynn_fusions``). Only rounding changes (the same math in another summation order):
losses agree to 1 ulp. Per-computation options leave the rest of the process (and the
user's ``XLA_FLAGS``) alone; on GPU/TPU, or with a jaxlib that does not know the option,
``compiler_options`` returns ``None`` (XLA's defaults). JAX takes compiler options on the
outermost ``jax.jit`` only: pass them where the computation is compiled, not to a jitted
function that another jit calls.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dsm_jax import validation

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def _cpu_accepts(option: str, value: str) -> bool:
    """Whether this jaxlib's CPU compiler accepts ``option=value`` (options come and go)."""
    try:
        jax.jit(jnp.negative, compiler_options={option: value}).lower(jnp.zeros(2)).compile()
    except Exception:  # noqa: BLE001 - an unknown option is an XlaRuntimeError; any failure means "no"
        return False
    return True


def compiler_options(ynn_fusions: bool = True, backend: str | None = None) -> dict | None:
    """``compiler_options`` for ``jax.jit``: ``None`` (XLA's defaults) unless
    ``ynn_fusions=False`` on the CPU backend (``backend``: None for ``jax.default_backend()``,
    or one of ``validation.KNOWN_BACKENDS``),
    then ``{"xla_cpu_experimental_ynn_fusion_type": ""}``.

    >>> step = jax.jit(train_step, compiler_options=dsm_jax.compiler_options(ynn_fusions=False))
    """
    if not isinstance(ynn_fusions, bool):
        raise TypeError(f"`ynn_fusions` must be True or False, got {ynn_fusions!r}.")
    validation.check_backend("backend", backend)  # before the early return: a typo never passes
    if ynn_fusions:
        return None
    if (backend or jax.default_backend()) != "cpu" or not _cpu_accepts(YNN_OPTION, ""):
        return None
    return {YNN_OPTION: ""}
