"""The peer rows: dsm_jax beside torchebm (PyTorch EBMs) and blackjax (JAX samplers) on the
issue's 4×128 softplus MLP, each row checked equal before it is timed.

Conventions (read from the peers' source): torchebm's ``DenoisingScoreMatching`` is
½·mean‖∇E(x̃) − (x̃ − x)/σ²‖², so ``dsm_loss`` = 2σ⁴ × it; torchebm's ``LangevinDynamics``,
``blackjax.mala`` and ``blackjax.sgld`` move x + h∇log p + √(2h)·z, i.e. dsm_jax's η = 2h.
Passing the same number to both is the trap: every row gives the peer h = η/2.

The equality checks (``check_*``) take the same weights and the same noise: torchebm is
handed dsm_jax's noise (its loss through ``perturb_data``, its sampler's integrator through
``noise=``); blackjax shares dsm_jax's keys (both split a step key into proposal and
accept keys and draw ``normal(key, x.shape)``), so its per-chain step is compared with
dsm_jax's kernel vmapped over one-chain batches.
"""
from __future__ import annotations

import functools

import numpy as np

from experiments.benchmarks.harness import _first_call, _jax_compile, _jax_name, _rel_err, interleaved, jax_train_call
from experiments.benchmarks.modes import DSM_SIGMA, LANGEVIN_STEP, MODES

# MALA's row: the MLP plus ½‖x‖², so chains stay put and acceptance is well below 1 (on the
# bare MLP at initialisation acceptance is > 0.99 at any step size: it is nearly flat).
MALA_STEP = 1.5  # η; acceptance ≈ 0.79 on this energy
ACCEPTANCE_TOL = 0.01  # "equal acceptance": the two MALA runs' mean acceptance on the row's chains


def _mlp(cfg, key):
    import dsm_jax as dj

    module = dj.MLPEnergy(cfg["depth"], cfg["width"])
    return dj.energy_fn_of(module), dj.init_params(module, key, (2,))


def mala_energy(mlp_energy):
    import jax.numpy as jnp

    return lambda params, x: mlp_energy(params, x) + 0.5 * jnp.sum(x * x, axis=1)


def torchebm_model(params, cfg):
    """The torch twin of ``MLPEnergy`` (same weights) as a torchebm ``BaseModel``."""
    from torchebm.core import BaseModel

    from experiments.benchmarks import torch_impl as ti

    class Energy(BaseModel):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    return Energy(ti.mlp_from_flax(params, 2, cfg["depth"], cfg["width"]))


def _torch(a):
    import torch

    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


# ---------------------------------------------------------------------------------------
# Equality checks: same weights, same noise. Each side is one jitted function per energy
# with the step size as an argument, so a check with another step size compiles nothing.
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _dsm_value_and_grad(energy_fn, sigma):
    import jax

    import dsm_jax as dj

    return jax.jit(jax.value_and_grad(dj.dsm_loss(energy_fn, sigma)))


@functools.lru_cache(maxsize=None)
def _ula_step(energy_fn):
    """``(params, key, x, η) -> x'``: one ``langevin_kernel`` step from ``x``."""
    import jax

    import dsm_jax as dj

    kernel = dj.langevin_kernel(energy_fn)
    return jax.jit(lambda p, k, x, eta: kernel(p, k, dj.init_chain(energy_fn, p, x), eta, 1.0)[0].x)


@functools.lru_cache(maxsize=None)
def _mala_steps(energy_fn):
    """``(params, keys, x, η) -> (x', accepted, acceptance probability)`` per chain: dsm_jax's
    kernel on one-chain batches, vmapped; and ``(params, keys, x, h) -> (state, info)``:
    ``blackjax.mala`` vmapped over chains."""
    import blackjax
    import jax

    import dsm_jax as dj

    kernel = dj.mala_kernel(energy_fn)

    def ours(p, k, x, eta):
        new, info = kernel(p, k, dj.init_chain(energy_fn, p, x[None]), eta, 1.0)
        return new.x[0], info.acceptance_rate, info.acceptance_prob

    def theirs(p, keys, x0, h):
        alg = blackjax.mala(lambda x: -energy_fn(p, x[None])[0], h)
        return jax.vmap(alg.step)(keys, jax.vmap(alg.init)(x0))

    return jax.jit(jax.vmap(ours, in_axes=(None, 0, 0, None))), jax.jit(theirs)


def _sgld(energy_fn, params):
    import blackjax
    import jax
    import jax.numpy as jnp

    # The exact gradient of log p = −ΣE over the batch's independent chains: blackjax has no
    # plain ULA, this is its unadjusted Langevin step.
    return blackjax.sgld(lambda x, _: jax.grad(lambda y: -jnp.sum(energy_fn(params, y)))(x))


@functools.lru_cache(maxsize=None)
def _sgld_step(energy_fn):
    import jax

    return jax.jit(lambda p, k, x, h: _sgld(energy_fn, p).step(k, x, None, h))


def check_torchebm_dsm(energy_fn, params, cfg, x, sigma=DSM_SIGMA, seed=42, share_noise=True) -> dict:
    """``dsm_loss`` / torchebm's ``DenoisingScoreMatching`` = 2σ⁴ on the same noise, and the
    parameter gradients likewise (``ratio_rel_err``, ``grad_max_rel_err``). ``share_noise=False``
    lets torchebm draw its own noise (the check must then fail)."""
    import jax
    from torchebm.losses import DenoisingScoreMatching

    key = jax.random.key(seed)
    loss, grads = _dsm_value_and_grad(energy_fn, sigma)(params, key, x)
    z = _torch(jax.random.normal(key, x.shape, x.dtype))  # the noise dsm_loss draws from `key`
    model = torchebm_model(params, cfg)
    t_loss_fn = DenoisingScoreMatching(model, noise_scale=sigma)
    if share_noise:
        t_loss_fn.perturb_data = lambda x_, generator=None: (x_ + sigma * z, sigma * z)
    t_loss = t_loss_fn(_torch(x))
    t_loss.backward()
    scale = 2.0 * sigma**4
    twin = torchebm_model(jax.tree.map(np.asarray, grads), cfg)  # jax gradients in torch's layout
    ref = dict(twin.named_parameters())
    grad_err = max(_rel_err(np.zeros(p.shape) if p.grad is None else scale * p.grad.numpy(), ref[n].detach().numpy())
                   for n, p in model.named_parameters())
    ratio = float(loss) / t_loss.item()
    return dict(loss_jax=float(loss), loss_peer=t_loss.item(), ratio=ratio, expected_ratio=scale,
                ratio_rel_err=abs(ratio / scale - 1.0), grad_max_rel_err=grad_err)


def _move_errs(x0, ours, theirs) -> dict:
    x0, ours, theirs = (np.asarray(a, np.float64) for a in (x0, ours, theirs))
    return dict(x_rel_err=_rel_err(theirs, ours), move_rel_err=_rel_err(theirs - x0, ours - x0))


def check_torchebm_langevin(energy_fn, params, cfg, x0, step_size=LANGEVIN_STEP, peer_step_size=None, seed=7) -> dict:
    """One ``langevin_kernel`` step against one step of torchebm's ``LangevinDynamics``
    (h = η/2) on dsm_jax's noise, through the sampler's own integrator and drift; and that
    integrator call against the public ``sample(n_steps=1)`` on torch's noise."""
    import jax
    import torch
    from torchebm.samplers import LangevinDynamics

    h = step_size / 2 if peer_step_size is None else peer_step_size
    key = jax.random.key(seed)
    ours = _ula_step(energy_fn)(params, key, x0, step_size)
    model = torchebm_model(params, cfg)
    sampler = LangevinDynamics(model, step_size=h, noise_scale=1.0)
    tx0 = _torch(x0)

    def integrator_step(noise):
        return sampler.integrator.step({"x": tx0}, step_size=h, drift=lambda x_, t_: -model.gradient(x_),
                                       noise=noise, noise_scale=1.0)["x"]

    theirs = integrator_step(_torch(jax.random.normal(key, x0.shape, x0.dtype)))  # langevin_kernel's noise
    public = sampler.sample(x=tx0.clone(), n_steps=1, generator=torch.Generator().manual_seed(seed))
    same_path = integrator_step(torch.randn(tuple(x0.shape), generator=torch.Generator().manual_seed(seed)))
    return dict(_move_errs(x0, ours, theirs.numpy()), step_size=step_size, peer_step_size=h,
                public_sample_rel_err=_rel_err(public.numpy(), same_path.numpy()))


def check_blackjax_mala(energy_fn, params, x0, step_size=MALA_STEP, peer_step_size=None, seed=11) -> dict:
    """One ``mala_kernel`` step per chain (vmapped over one-chain batches) against
    ``blackjax.mala`` (h = η/2) vmapped over chains, same keys: positions, accept flags and
    acceptance probabilities."""
    import jax

    h = step_size / 2 if peer_step_size is None else peer_step_size
    keys = jax.random.split(jax.random.key(seed), x0.shape[0])
    ours, theirs = _mala_steps(energy_fn)
    x_ours, acc_ours, prob_ours = ours(params, keys, x0, step_size)
    state, info = theirs(params, keys, x0, h)
    flips = np.asarray(acc_ours).reshape(-1) != np.asarray(info.is_accepted).reshape(-1)
    return dict(_move_errs(x0, x_ours, state.position), accept_mismatches=int(flips.sum()), chains=int(x0.shape[0]),
                accept_prob_max_abs_diff=float(np.max(np.abs(np.asarray(prob_ours).reshape(-1)
                                                             - np.asarray(info.acceptance_rate).reshape(-1)))),
                acceptance_ours=float(np.mean(acc_ours)), acceptance_peer=float(np.mean(info.is_accepted)),
                step_size=step_size, peer_step_size=h)


def check_blackjax_sgld(energy_fn, params, x0, step_size=LANGEVIN_STEP, peer_step_size=None, seed=13) -> dict:
    """One ``langevin_kernel`` step against ``blackjax.sgld`` given the exact gradient
    (h = η/2) on the whole batch, same key (so the same noise)."""
    import jax

    h = step_size / 2 if peer_step_size is None else peer_step_size
    key = jax.random.key(seed)
    ours = _ula_step(energy_fn)(params, key, x0, step_size)
    theirs = _sgld_step(energy_fn)(params, key, x0, h)
    return dict(_move_errs(x0, ours, theirs), step_size=step_size, peer_step_size=h)


# ---------------------------------------------------------------------------------------
# Chains as the peers' users write them: one lax.scan over steps.
# ---------------------------------------------------------------------------------------
def blackjax_mala_chain(energy_fn, h, n_steps):
    """``(params, key, x0) -> (x, per-step mean accept)``: ``blackjax.mala`` vmapped over
    chains (one key per chain per step), one ``lax.scan``."""
    import blackjax
    import jax
    import jax.numpy as jnp

    def chain(params, key, x0):
        alg = blackjax.mala(lambda x: -energy_fn(params, x[None])[0], h)

        def body(states, k):
            states, info = jax.vmap(alg.step)(jax.random.split(k, x0.shape[0]), states)
            return states, jnp.mean(info.is_accepted)

        states, accept = jax.lax.scan(body, jax.vmap(alg.init)(x0), jax.random.split(key, n_steps))
        return states.position, accept

    return chain


def blackjax_ula_chain(energy_fn, h, n_steps):
    """``(params, key, x0) -> x``: ``blackjax.sgld`` with the exact gradient, one ``lax.scan``."""
    import jax

    def chain(params, key, x0):
        sgld = _sgld(energy_fn, params)
        x, _ = jax.lax.scan(lambda x, k: (sgld.step(k, x, None, h), None), x0, jax.random.split(key, n_steps))
        return x

    return chain


# ---------------------------------------------------------------------------------------
# Rows.
# ---------------------------------------------------------------------------------------
def _jax_variants(fn, args):
    """``fn`` compiled with XLA's defaults and ynn-off: {ynn_fusions: (call, info)}."""
    import jax

    out = {}
    for ynn in (True, False):
        compiled, info = _jax_compile(fn, *args, ynn_fusions=ynn)
        call = lambda compiled=compiled: jax.block_until_ready(compiled(*args))  # noqa: E731
        info.update(_first_call(call))
        out[ynn] = (call, info)
    return out


def run_peer_dsm_torchebm(spec) -> dict:
    """One DSM training step: ``dsm_loss`` + ``make_train_step`` (Adam) against torchebm's
    ``DenoisingScoreMatching`` + PyTorch's Adam (fused), same MLP, data and learning rate."""
    import jax

    import dsm_jax as dj
    from dsm_jax import toy
    from experiments.benchmarks import torch_impl as ti

    m = MODES[spec["mode"]]
    cfg = dict(m["peer_mlp"], batch=m["peer_batch"])
    k_init, k_data, k_state = jax.random.split(jax.random.key(0), 3)
    efn, params = _mlp(cfg, k_init)
    x = toy.get_toy("eight_gaussians").sample(k_data, cfg["batch"])
    check = check_torchebm_dsm(efn, params, cfg, x)
    opt = dj.adam(1e-3)
    step = dj.make_train_step(dj.dsm_loss(efn, DSM_SIGMA), opt)
    fns, infos = {}, {}
    for ynn in (True, False):
        fns[_jax_name(None, ynn)], infos[_jax_name(None, ynn)] = jax_train_call(step, params, opt, k_state, x, ynn)
    from torchebm.losses import DenoisingScoreMatching

    model = torchebm_model(params, cfg)
    loss_fn, t_opt, tx = DenoisingScoreMatching(model, noise_scale=DSM_SIGMA), ti.adam(model, 1e-3), _torch(x)

    def torchebm_step():
        loss = loss_fn(tx)
        t_opt.zero_grad(set_to_none=True)
        loss.backward()
        t_opt.step()

    infos["torchebm"], fns["torchebm"] = _first_call(torchebm_step), torchebm_step
    timings = interleaved(fns, m["peer_train_repeats"], m["block_s"])
    flops = infos["jax"]["flops"]
    impls = {k: dict(infos[k], **timings[k], flops=flops) for k in fns}
    return dict(impls=impls, sizes=cfg, check=check, unit="step", items_per_call=cfg["batch"],
                vs_peer={n: "torchebm" for n in fns if n != "torchebm"})


def _chain_setup(spec):
    import jax

    m = MODES[spec["mode"]]
    cfg = dict(m["peer_mlp"], chains=m["peer_chains"], steps=m["peer_steps"])
    k_init, k_x, k_run = jax.random.split(jax.random.key(0), 3)
    efn, params = _mlp(cfg, k_init)
    return m, cfg, efn, params, jax.random.normal(k_x, (cfg["chains"], 2)), k_run


def _step_flops(efn, params, x0, n_steps):
    """XLA's FLOPs of n_steps Langevin steps (one step's cost analysis × n_steps: the scan's
    own analysis counts its body once)."""
    import jax

    import dsm_jax as dj

    kernel = dj.langevin_kernel(efn)
    _, info = _jax_compile(lambda p, k, s: kernel(p, k, s, LANGEVIN_STEP, 1.0)[0], params, jax.random.key(0),
                           dj.init_chain(efn, params, x0))
    return info["flops"] * n_steps if info.get("flops") else None


def _chain_row(m, cfg, fns, infos, flops, vs_peer, check):
    timings = interleaved(fns, m["peer_chain_repeats"], m["block_s"])
    impls = {}
    for k in fns:
        impls[k] = dict(infos[k], **timings[k], flops=flops)
        impls[k]["chain_steps_per_s"] = cfg["chains"] * cfg["steps"] / timings[k]["median_s"]
    return dict(impls=impls, sizes=cfg, check=check, unit="chain", items_per_call=cfg["chains"] * cfg["steps"],
                vs_peer=vs_peer)


def run_peer_langevin_torchebm(spec) -> dict:
    """Langevin throughput: ``dsm_jax.langevin`` (one lax.scan) against torchebm's
    ``LangevinDynamics.sample`` (h = η/2), same MLP, chains and start."""
    import dsm_jax as dj
    from torchebm.samplers import LangevinDynamics

    m, cfg, efn, params, x0, k_run = _chain_setup(spec)
    check = check_torchebm_langevin(efn, params, cfg, x0)
    variants = _jax_variants(dj.langevin(efn, LANGEVIN_STEP, cfg["steps"]), (params, k_run, x0))
    fns, infos = {}, {}
    for ynn, (call, info) in variants.items():
        fns[_jax_name(None, ynn)], infos[_jax_name(None, ynn)] = call, info
    sampler = LangevinDynamics(torchebm_model(params, cfg), step_size=LANGEVIN_STEP / 2, noise_scale=1.0)
    tx0 = _torch(x0)
    fns["torchebm"] = lambda: sampler.sample(x=tx0.clone(), n_steps=cfg["steps"])
    infos["torchebm"] = _first_call(fns["torchebm"])
    return _chain_row(m, cfg, fns, infos, _step_flops(efn, params, x0, cfg["steps"]),
                      {n: "torchebm" for n in fns if n != "torchebm"}, check)


def run_peer_mala_blackjax(spec) -> dict:
    """MALA throughput at equal acceptance: ``dsm_jax.mala`` against ``blackjax.mala``
    (h = η/2) vmapped over chains, both one lax.scan, on the MLP + ½‖x‖²; the check adds
    both runs' acceptance on the row's chains (they must agree within 0.01)."""
    import jax
    import jax.numpy as jnp

    import dsm_jax as dj

    m, cfg, mlp, params, x0, k_run = _chain_setup(spec)
    efn = mala_energy(mlp)
    n = cfg["steps"]
    check = check_blackjax_mala(efn, params, x0)
    fns, infos, accept = {}, {}, {}
    ours_chain, theirs_chain = dj.mala_with_info(efn, MALA_STEP, n), blackjax_mala_chain(efn, MALA_STEP / 2, n)

    def ours(p, k, x):  # (x, mean acceptance over steps and chains)
        x, info = ours_chain(p, k, x)
        return x, jnp.mean(info.acceptance_rate)

    def theirs(p, k, x):
        x, accept = theirs_chain(p, k, x)
        return x, jnp.mean(accept)

    for who, fn in (("jax", ours), ("blackjax", theirs)):
        for ynn, (call, info) in _jax_variants(fn, (params, k_run, x0)).items():
            name = who if ynn else who + " ynn-off"
            fns[name], infos[name] = call, info
            accept[name] = float(call()[1])
    diff = max(accept.values()) - min(accept.values())
    check.update(acceptance_run=accept, acceptance_run_max_diff=diff, equal_acceptance=diff <= ACCEPTANCE_TOL)
    flops = _step_flops(efn, params, x0, n)  # ≈ MALA's: one energy and gradient per step, as ULA
    return _chain_row(m, cfg, fns, infos, flops, {"jax": "blackjax", "jax ynn-off": "blackjax ynn-off"},
                      dict(check, step_size=MALA_STEP))


def run_peer_ula_blackjax(spec) -> dict:
    """Unadjusted Langevin throughput: ``dsm_jax.langevin`` against ``blackjax.sgld`` with
    the exact gradient (h = η/2), both one lax.scan, same MLP, chains and start."""
    import dsm_jax as dj

    m, cfg, efn, params, x0, k_run = _chain_setup(spec)
    check = check_blackjax_sgld(efn, params, x0)
    fns, infos = {}, {}
    for who, fn in (("jax", dj.langevin(efn, LANGEVIN_STEP, cfg["steps"])),
                    ("blackjax", blackjax_ula_chain(efn, LANGEVIN_STEP / 2, cfg["steps"]))):
        for ynn, (call, info) in _jax_variants(fn, (params, k_run, x0)).items():
            name = who if ynn else who + " ynn-off"
            fns[name], infos[name] = call, info
    return _chain_row(m, cfg, fns, infos, _step_flops(efn, params, x0, cfg["steps"]),
                      {"jax": "blackjax", "jax ynn-off": "blackjax ynn-off"}, check)


PEER_RUNNERS = {"peer_dsm_torchebm": run_peer_dsm_torchebm, "peer_langevin_torchebm": run_peer_langevin_torchebm,
                "peer_mala_blackjax": run_peer_mala_blackjax, "peer_ula_blackjax": run_peer_ula_blackjax}


def peer_check_line(c: dict) -> str:
    """One line of the table's check section for a peer row."""
    if "ratio" in c:
        return (f"dsm_loss / torchebm DSM = {c['ratio']:.7g} (2σ⁴ = {c['expected_ratio']:.7g}, rel {c['ratio_rel_err']:.1e}), "
                f"max parameter-gradient rel err {c['grad_max_rel_err']:.1e}")
    text = (f"one step, shared noise, η = {c['step_size']:g} vs h = {c['peer_step_size']:g}: x rel err "
            f"{c['x_rel_err']:.1e}, move rel err {c['move_rel_err']:.1e}")
    if "public_sample_rel_err" in c:
        text += f"; integrator step = sample(n_steps=1) to {c['public_sample_rel_err']:.1e}"
    if "accept_mismatches" in c:
        text += (f"; accept flags differ on {c['accept_mismatches']} of {c['chains']} chains, acceptance probability "
                 f"to {c['accept_prob_max_abs_diff']:.1e}")
    if "acceptance_run" in c:
        text += ("; row acceptance " + ", ".join(f"{k} {v:.4f}" for k, v in c["acceptance_run"].items())
                 + f" (equal within {ACCEPTANCE_TOL}: {'yes' if c['equal_acceptance'] else 'NO'})")
    return text
