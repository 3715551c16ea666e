"""dsm_jax.nets.CanonicalConv (same results as nn.Conv, canonical convolutions inside scans)
and dsm_jax.compiler_options (no YNNPACK fusions in that one computation, same results): the
library changes behind the benchmarks' rows (moved here from test_benchmarks.py)."""
from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import pytest

import dsm_jax as dj

CANONICAL = "b01f_01io->b01f"


def _conv_labels(compiled_text: str) -> list[str]:
    return re.findall(r" convolution\(.*?dim_labels=([^,\s]+)", compiled_text)


def _tiny_resnet(conv_impl, n_stages=1):
    return dj.ResNetEnergy(width=4, n_stages=n_stages, blocks_per_stage=1, conv_impl=conv_impl)


# ---------------------------------------------------------------------------------------
# Library: CanonicalConv.
# ---------------------------------------------------------------------------------------
def test_canonical_conv_matches_nn_conv_through_the_mdsm_loss():
    """Energy, input gradient, and the MDSM loss with its parameter gradient (a derivative
    of the input gradient: second order) equal nn.Conv's."""
    key = jax.random.key(0)
    x = jax.random.uniform(key, (3, 8, 8, 1))
    params = dj.init_params(_tiny_resnet("xla"), key, (8, 8, 1))
    results = {}
    for impl in ("xla", "canonical"):
        efn = dj.energy_fn_of(_tiny_resnet(impl))
        loss = dj.mdsm_loss(efn, 0.1, 3.0, 0.1)
        results[impl] = jax.jit(lambda p: (efn(p, x), dj.core.energy_grad(efn, p, x),  # noqa: B023
                                           jax.value_and_grad(loss)(p, key, x)))(params)  # noqa: B023
    chex.assert_trees_all_close(results["canonical"], results["xla"], rtol=2e-5, atol=1e-6)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(results["xla"][2][1])) > 0  # not trivially equal
    with pytest.raises(ValueError, match="conv_impl"):
        _tiny_resnet("eigen").init(key, x)


def test_canonical_conv_keeps_every_convolution_canonical_inside_a_scan():
    """The cause of jax-ml/jax#12868: inside a scanned MDSM training step nn.Conv's
    gradient convolutions keep non-canonical labels (XLA:CPU's slow path); CanonicalConv's
    never do. Asymmetric even kernels check the adjoint padding too."""
    key = jax.random.key(1)
    x = jax.random.uniform(key, (2, 6, 6, 1))
    opt = dj.adam(1e-3)
    module = _tiny_resnet("canonical")
    params = dj.init_params(module, key, (6, 6, 1))
    step = dj.make_train_step(dj.mdsm_loss(dj.energy_fn_of(module), 0.1, 1.0), opt)
    scanned = lambda s: jax.lax.scan(lambda c, _: step(c, x), s, None, length=2)  # noqa: E731
    labels = _conv_labels(jax.jit(scanned).lower(dj.init_train_state(params, opt, key)).compile().as_text())
    assert labels and set(labels) == {CANONICAL}
    if jax.default_backend() == "cpu":  # the problem itself: nn.Conv's input gradient in a scan
        efn = dj.energy_fn_of(_tiny_resnet("xla"))
        chain = lambda p, x0: jax.lax.scan(  # noqa: E731
            lambda z, _: (z - dj.core.energy_grad(efn, p, z), None), x0, None, length=2)[0]
        labels = _conv_labels(jax.jit(chain).lower(params, x).compile().as_text())
        assert set(labels) != {CANONICAL}, "nn.Conv no longer shows the XLA:CPU loop-body problem"

    # An even kernel: asymmetric 'SAME' padding, and its adjoint, against nn.Conv.
    import flax.linen as nn

    x = jax.random.normal(key, (2, 5, 5, 3))
    ref, ours = nn.Conv(4, (2, 4)), dj.nets.CanonicalConv(4, (2, 4))
    p = ref.init(key, x)
    def second_order(module):
        def input_grad_sq(p_, x_):
            gx = jax.grad(lambda z: jnp.sum(jnp.sin(module.apply(p_, z))))(x_)
            return jnp.sum(gx**2)
        return jax.jit(jax.grad(input_grad_sq, argnums=(0, 1)))(p, x)

    g_ref, g_ours = second_order(ref), second_order(ours)
    chex.assert_trees_all_close(g_ours, g_ref, rtol=2e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Library: dsm_jax.compiler_options (XLA:CPU's YNNPACK fusions per computation).
# ---------------------------------------------------------------------------------------
def _ynn_fusions(compiled_text: str) -> int:
    return compiled_text.count('"__ynn_fusion"')


def test_compiler_options_turn_off_library_fusions_for_one_computation_only():
    """On CPU ``compiler_options(ynn_fusions=False)`` leaves no YNNPACK fusion in the
    compiled DSM step, changes its results only by rounding, and leaves other jits (XLA's
    defaults) alone; ``fit`` passes the options to its chunk."""
    assert dj.compiler_options() is None and dj.compiler_options(True) is None
    assert dj.compiler_options(False, backend="gpu") is None
    with pytest.raises(TypeError, match="ynn_fusions"):
        dj.compiler_options("false")
    if jax.default_backend() != "cpu":
        assert dj.compiler_options(False) is None
        return
    assert dj.compiler_options(False) == {"xla_cpu_experimental_ynn_fusion_type": ""}
    key = jax.random.key(0)
    module = dj.MLPEnergy(3, 32)
    params = dj.init_params(module, key, (2,))
    opt = dj.adam(1e-3)
    x = jax.random.normal(key, (256, 2))
    step = dj.make_train_step(dj.dsm_loss(dj.energy_fn_of(module), 0.2), opt)
    state = dj.init_train_state(params, opt, key)
    off = jax.jit(step, compiler_options=dj.compiler_options(False)).lower(state, x).compile()
    default = jax.jit(step).lower(state, x).compile()
    assert _ynn_fusions(off.as_text()) == 0
    if _ynn_fusions(default.as_text()) == 0:
        pytest.skip("this jaxlib emits no YNNPACK fusions by default: nothing to turn off")
    (s_off, m_off), (s_def, m_def) = off(state, x), default(state, x)
    chex.assert_trees_all_close((s_off.params, m_off), (s_def.params, m_def), rtol=1e-5, atol=1e-7)

    batches = lambda n: jnp.broadcast_to(x, (n, *x.shape))  # noqa: E731
    fitted = [dj.fit(step, state, 4, steps_per_call=2, batches=batches, progress=False, mesh=None,
                     compiler_options=options)[0].params for options in (dj.compiler_options(False), None)]
    chex.assert_trees_all_close(fitted[0], fitted[1], rtol=1e-4, atol=1e-6)
