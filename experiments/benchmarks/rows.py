"""The peak and training rows (jax against the PyTorch twins, first-step checks), and the
row dispatcher ``run_row``."""
from __future__ import annotations

import os
import time

from experiments.benchmarks.harness import _first_call, _jax_compile, _jax_name, _rel_err, interleaved, jax_train_call
from experiments.benchmarks.kernels import run_conv_ops, run_langevin
from experiments.benchmarks.modes import DSM_SIGMA, MDSM_SIGMA0, MDSM_SIGMAS, MODES
from experiments.benchmarks.op_profile import run_train_mlp_ops
from experiments.benchmarks.peers import PEER_RUNNERS


def run_peak(spec) -> dict:
    import jax
    import torch

    import dsm_jax as dj
    from experiments.benchmarks import torch_impl as ti

    m = MODES[spec["mode"]]
    impls = {}
    for n in m["peak_sizes"]:
        a = jax.random.normal(jax.random.key(0), (n, n))
        mm, _ = _jax_compile(lambda u, v: u @ v, a, a)
        ta = torch.randn(n, n)
        fns = {f"jax matmul {n}": lambda: mm(a, a).block_until_ready(), f"torch matmul {n}": lambda: torch.mm(ta, ta)}
        for k, v in interleaved(fns, m["peak_repeats"], m["block_s"]).items():  # its sizing call warms up
            v["flops"] = 2.0 * n**3
            impls[k] = v
    # A 3x3 convolution too: oneDNN's direct convolution (PyTorch) runs faster than either
    # library's matmul here (measured 260 vs 213 GFLOP/s), so the peak is the best of all.
    batch, size, ch = m["peak_conv"]
    x = jax.random.normal(jax.random.key(1), (batch, size, size, ch))
    kernel = jax.random.normal(jax.random.key(2), (3, 3, ch, ch)) / (3 * ch**0.5)
    conv, _ = _jax_compile(lambda a, b: dj.nets.canonical_conv(a, b, ((1, 1), (1, 1))), x, kernel, ynn_fusions=False)
    tx, tk = ti.nchw(x), ti.oihw(kernel)
    label = f"conv 3x3 {size}x{size} {ch}->{ch} batch {batch}"
    fns = {f"jax ynn-off {label}": lambda: conv(x, kernel).block_until_ready(),
           f"torch {label}": lambda: torch.nn.functional.conv2d(tx, tk, padding=1)}
    for k, v in interleaved(fns, m["peak_repeats"], m["block_s"]).items():
        v["flops"] = 2.0 * batch * size * size * ch * ch * 9
        impls[k] = v
    for v in impls.values():
        v["gflops_per_s"] = v["flops"] / v["min_s"] / 1e9
    return dict(impls=impls, peak_gflops_per_s=max(v["gflops_per_s"] for v in impls.values()),
                unit="call")


def _mdsm_noise(key, x_shape):
    """The σ and ε that ``dsm_jax.mdsm_loss(params, key, x)`` draws (same key use)."""
    import jax

    import dsm_jax as dj

    k_sigma, k_noise = jax.random.split(key)
    return dj.sample_sigmas(k_sigma, x_shape[0], *MDSM_SIGMAS, "geometric"), jax.random.normal(k_noise, x_shape)


def check_first_step(kind: str, params, x, module_cfg: dict, conv_impl: str = "canonical") -> dict:
    """Same weights, same noise: the jax and torch losses and parameter gradients."""
    import jax
    import numpy as np
    import torch

    import dsm_jax as dj
    from experiments.benchmarks import torch_impl as ti

    key = jax.random.key(42)
    if kind == "train_mlp":
        efn = dj.energy_fn_of(dj.MLPEnergy(module_cfg["depth"], module_cfg["width"]))
        loss, grads = jax.jit(jax.value_and_grad(dj.dsm_loss(efn, DSM_SIGMA)))(params, key, x)
        to_torch = lambda p: ti.mlp_from_flax(p, x.shape[1], module_cfg["depth"], module_cfg["width"])  # noqa: E731
        model = to_torch(params)
        noise = torch.from_numpy(np.array(jax.random.normal(key, x.shape)))
        t_loss = ti.dsm_loss(model, torch.from_numpy(np.array(x)), noise, DSM_SIGMA)
    else:
        cfg = {k: module_cfg[k] for k in ("width", "n_stages", "blocks_per_stage")}
        efn = dj.energy_fn_of(dj.ResNetEnergy(**cfg, conv_impl=conv_impl))
        loss, grads = jax.jit(jax.value_and_grad(dj.mdsm_loss(efn, *MDSM_SIGMAS, MDSM_SIGMA0)))(params, key, x)
        to_torch = lambda p: ti.resnet_from_flax(p, **cfg, image_size=module_cfg["image"])  # noqa: E731
        model = to_torch(params)
        sigmas, noise = jax.jit(_mdsm_noise, static_argnums=1)(key, x.shape)
        t_loss = ti.mdsm_loss(model, ti.nchw(x), torch.from_numpy(np.array(sigmas)), ti.nchw(noise), MDSM_SIGMA0)
    t_loss.backward()
    # The jax gradients carried into torch's layout by the same weight converter.
    ref = dict(to_torch(jax.tree.map(np.asarray, grads)).named_parameters())
    # A bias that only shifts E (the read-out's) has no gradient in torch (None) and 0 in jax.
    grad_err = max(_rel_err(np.zeros(p.shape) if p.grad is None else p.grad.numpy(), ref[n].detach().numpy())
                   for n, p in model.named_parameters())
    return dict(loss_jax=float(loss), loss_torch=t_loss.item(), loss_rel_err=abs(float(loss) - t_loss.item()) / abs(float(loss)),
                grad_max_rel_err=grad_err, n_params=int(sum(p.numel() for p in model.parameters())))


def run_train(spec) -> dict:
    import jax
    import numpy as np
    import torch

    import dsm_jax as dj
    from dsm_jax import toy
    from experiments.benchmarks import torch_impl as ti

    m = MODES[spec["mode"]]
    key = jax.random.key(0)
    k_init, k_data, k_state = jax.random.split(key, 3)
    fns, infos = {}, {}
    if spec["kind"] == "train_mlp":
        cfg = m["mlp"]
        x = toy.get_toy("eight_gaussians").sample(k_data, cfg["batch"])
        module = dj.MLPEnergy(cfg["depth"], cfg["width"])
        params = dj.init_params(module, k_init, (2,))
        opt = dj.adam(1e-3)
        loss = dj.dsm_loss(dj.energy_fn_of(module), DSM_SIGMA)
        variants = {_jax_name(None, ynn): (loss, ynn) for ynn in (False, True)}
        t_model = ti.mlp_from_flax(params, 2, cfg["depth"], cfg["width"])
        t_step = ti.make_dsm_step(t_model, ti.adam(t_model, 1e-3), DSM_SIGMA)
        tx = torch.from_numpy(np.array(x))
        repeats, batch = m["mlp_repeats"], cfg["batch"]
    else:
        cfg = m["resnet"]
        batch = spec["batch"]
        net = {k: cfg[k] for k in ("width", "n_stages", "blocks_per_stage")}
        shape = (cfg["image"], cfg["image"], 1)
        x = jax.random.uniform(k_data, (batch, *shape))
        params = dj.init_params(dj.ResNetEnergy(**net), k_init, shape)
        opt = dj.adam(1e-4, 0.9, 0.95)
        variants = {
            _jax_name(impl, ynn): (dj.mdsm_loss(dj.energy_fn_of(dj.ResNetEnergy(**net, conv_impl=impl)),
                                                *MDSM_SIGMAS, MDSM_SIGMA0), ynn)
            for impl, ynn in m.get("resnet_impls", (("canonical", False), ("canonical", True), ("xla", True)))}
        t_model = ti.resnet_from_flax(params, **net, image_size=cfg["image"])
        t_step = ti.make_mdsm_step(t_model, ti.adam(t_model, 1e-4, 0.9, 0.95), *MDSM_SIGMAS, MDSM_SIGMA0)
        tx = ti.nchw(x)
        repeats = m["resnet_repeats"]
        cfg = dict(cfg, batch=batch)
    wanted = spec.get("impls")
    for name, (loss_fn, ynn) in variants.items():
        if wanted and name not in wanted:
            continue
        fns[name], infos[name] = jax_train_call(dj.make_train_step(loss_fn, opt), params, opt, k_state, x, ynn)
    infos["torch"] = _first_call(lambda: t_step(tx))
    fns["torch"] = lambda: t_step(tx)
    timings = interleaved(fns, repeats, m["block_s"])
    flops = next(v["flops"] for v in infos.values() if v.get("flops"))
    impls = {k: dict(infos[k], **timings[k], flops=flops) for k in fns}
    check = check_first_step(spec["kind"], params, x, cfg)
    return dict(impls=impls, sizes=cfg, check=check, unit="step", items_per_call=batch)


RUNNERS = {"peak": run_peak, "train_mlp": run_train, "train_mlp_ops": run_train_mlp_ops, "train_resnet": run_train, "conv_ops": run_conv_ops,
           "langevin_mlp": run_langevin, "langevin_resnet": run_langevin, **PEER_RUNNERS}


def run_row(spec: dict) -> dict:
    t0 = time.perf_counter()
    threads = MODES[spec["mode"]].get("torch_threads")
    if threads:
        import torch

        torch.set_num_threads(threads)
    out = RUNNERS[spec["kind"]](spec)
    out.update(name=spec["name"], kind=spec["kind"], xla_flags=os.environ.get("XLA_FLAGS", ""),
               env={k: os.environ.get(k) for k in spec.get("env", {})}, wall_s=time.perf_counter() - t0)
    return out
