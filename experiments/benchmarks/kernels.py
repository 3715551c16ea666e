"""The kernel rows: every convolution of the ResNet on its own, and Langevin chains (one
lax.scan, a Python loop of jitted steps, the PyTorch loop)."""
from __future__ import annotations

from experiments.benchmarks.harness import (_first_call, _jax_compile, _jax_name, _rel_err, dispatch_s, hlo_kernels,
                                            interleaved)
from experiments.benchmarks.modes import LANGEVIN_STEP, MODES


def resnet_conv_shapes(net: dict, image: int) -> dict:
    """``{(H, W, C_in, C_out, (kh, kw)): count}``: every convolution of ``ResNetEnergy(**net)``
    on ``image``×``image``×1 inputs, read off the module by intercepting its conv layers."""
    import collections

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import dsm_jax as dj

    shapes = collections.Counter()

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, dj.nets.CanonicalConv) and context.method_name == "__call__":
            _, h, w, c = args[0].shape
            shapes[(h, w, c, context.module.features, tuple(context.module.kernel_size))] += 1
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(dj.ResNetEnergy(**net, conv_impl="canonical").init, jax.random.key(0),
                       jnp.zeros((1, image, image, 1)))
    return dict(shapes)


CONV_OPS = ("fwd", "dx", "dK")  # forward, input gradient, kernel gradient


def run_conv_ops(spec) -> dict:
    """Each convolution shape of the MDSM ResNet on its own: forward, input gradient and kernel
    gradient of ``CanonicalConv`` (its custom VJPs, XLA:CPU's Eigen kernels, ynn-off) against
    PyTorch's ``conv2d`` / ``convolution_backward`` (oneDNN), same data."""
    import jax
    import numpy as np
    import torch

    import dsm_jax as dj
    from experiments.benchmarks import torch_impl as ti

    m = MODES[spec["mode"]]
    r = m["resnet"]
    batch = m["resnet_batches"][0]
    net = {k: r[k] for k in ("width", "n_stages", "blocks_per_stage")}
    shapes = resnet_conv_shapes(net, r["image"])
    impls, per_shape = {}, []
    for (h, w, c_in, c_out, k), count in sorted(shapes.items(), key=lambda kv: (-kv[0][0], kv[0][2], kv[0][3], kv[0][4])):
        keys = jax.random.split(jax.random.key(h * 1000 + c_in), 3)
        x = jax.random.normal(keys[0], (batch, h, w, c_in))
        g = jax.random.normal(keys[1], (batch, h, w, c_out))
        kernel = jax.random.normal(keys[2], (*k, c_in, c_out)) / np.sqrt(k[0] * k[1] * c_in)
        pads = dj.nets.same_padding(k)
        conv = lambda x_, k_: dj.nets.canonical_conv(x_, k_, pads)  # noqa: E731
        jax_ops = {"fwd": lambda x_, k_, g_: conv(x_, k_),
                   "dx": lambda x_, k_, g_: jax.vjp(lambda a: conv(a, k_), x_)[1](g_)[0],
                   "dK": lambda x_, k_, g_: jax.vjp(lambda b: conv(x_, b), k_)[1](g_)[0]}
        tx, tg, tk = ti.nchw(x), ti.nchw(g), ti.oihw(kernel)
        t_pad = [k[0] // 2, k[1] // 2]

        def t_backward(mask, tx=tx, tg=tg, tk=tk, t_pad=t_pad):
            return torch.ops.aten.convolution_backward(tg, tx, tk, None, [1, 1], t_pad, [1, 1], False, [0, 0], 1, mask)

        torch_ops = {"fwd": lambda tx=tx, tk=tk, t_pad=t_pad: torch.nn.functional.conv2d(tx, tk, padding=t_pad),
                     "dx": lambda: t_backward([True, False, False])[0],
                     "dK": lambda: t_backward([False, True, False])[1]}
        label = f"{h}x{w} {c_in}->{c_out} {k[0]}x{k[1]} (x{count})"
        flops = 2.0 * batch * h * w * c_in * c_out * k[0] * k[1]
        fns, infos, errs = {}, {}, {}
        for op in CONV_OPS:
            compiled, info = _jax_compile(jax_ops[op], x, kernel, g, ynn_fusions=False)
            out = np.asarray(compiled(x, kernel, g))
            t_out = torch_ops[op]().numpy()
            t_out = t_out.transpose(2, 3, 1, 0) if op == "dK" else t_out.transpose(0, 2, 3, 1)
            errs[op] = _rel_err(out, t_out)
            fns[f"jax ynn-off {op} {label}"] = lambda compiled=compiled: compiled(x, kernel, g).block_until_ready()
            infos[f"jax ynn-off {op} {label}"] = dict(info, op=op, framework="jax ynn-off")
            fns[f"torch {op} {label}"], infos[f"torch {op} {label}"] = torch_ops[op], dict(op=op, framework="torch")
        timings = interleaved(fns, m["resnet_repeats"], m["block_s"])
        for name in fns:
            impls[name] = dict(infos[name], **timings[name], flops=flops, count=count)
        per_shape.append(dict(h=h, w=w, c_in=c_in, c_out=c_out, kernel=list(k), count=count, rel_err=errs))
    return dict(impls=impls, sizes=dict(r, batch=batch, shapes=per_shape), unit="call", items_per_call=batch)


def run_langevin(spec) -> dict:
    import jax
    import numpy as np
    import torch

    import dsm_jax as dj
    from experiments.benchmarks import torch_impl as ti

    m = MODES[spec["mode"]]
    key = jax.random.key(0)
    k_init, k_x, k_run = jax.random.split(key, 3)
    if spec["kind"] == "langevin_mlp":
        cfg = dict(m["langevin_mlp"], depth=m["mlp"]["depth"], width=m["mlp"]["width"])
        cfg["chains"] = spec.get("chains", cfg["chains"])
        module = dj.MLPEnergy(cfg["depth"], cfg["width"])
        params = dj.init_params(module, k_init, (2,))
        x0 = jax.random.normal(k_x, (cfg["chains"], 2))
        # name -> (module, ynn_fusions, also time the per-step Python loop)
        variants = {_jax_name(None, ynn): (module, ynn, True) for ynn in (False, True)}
        t_model = ti.mlp_from_flax(params, 2, cfg["depth"], cfg["width"])
        tx0 = torch.from_numpy(np.array(x0))
    else:
        r = m["resnet"]
        cfg = dict(m["langevin_resnet"], **r)
        net = {k: r[k] for k in ("width", "n_stages", "blocks_per_stage")}
        shape = (r["image"], r["image"], 1)
        params = dj.init_params(dj.ResNetEnergy(**net), k_init, shape)
        x0 = 0.5 + jax.random.normal(k_x, (cfg["chains"], *shape))
        impls = m.get("langevin_resnet_impls",
                      (("canonical", False, True), ("canonical", True, False), ("matmul", True, False)))
        variants = {_jax_name(impl, ynn): (dj.ResNetEnergy(**net, conv_impl=impl), ynn, loop)
                    for impl, ynn, loop in impls}
        t_model = ti.resnet_from_flax(params, **net, image_size=r["image"])
        tx0 = ti.nchw(x0)
    n_steps = cfg["steps"]
    fns, infos = {}, {}
    for name, (module, ynn, with_loop) in variants.items():
        efn = dj.energy_fn_of(module)
        scan, info = _jax_compile(dj.langevin(efn, LANGEVIN_STEP, n_steps), params, k_run, x0, ynn_fusions=ynn)
        scan_call = lambda scan=scan: scan(params, k_run, x0).block_until_ready()  # noqa: E731
        info.update(_first_call(scan_call))
        # The scan's while over the n_steps steps (the key splitting has a small while of its own).
        info["kernels_per_step"] = max(k for n, k in hlo_kernels(scan.as_text())["whiles"] if n == n_steps)
        fns[f"{name} lax.scan"], infos[f"{name} lax.scan"] = scan_call, info
        if not with_loop:
            continue
        init, _ = _jax_compile(lambda p, x: dj.init_chain(efn, p, x), params, x0, ynn_fusions=ynn)
        kernel = dj.langevin_kernel(efn)
        state0 = init(params, x0)
        one, info = _jax_compile(lambda p, k, s: kernel(p, k, s, LANGEVIN_STEP, 1.0)[0], params, k_run, state0,
                                 ynn_fusions=ynn)
        keys = list(jax.random.split(k_run, n_steps))
        info["kernels_per_step"] = hlo_kernels(one.as_text())["entry"]
        # What calling a compiled step costs by itself: a computation taking the same
        # arguments that reads one number.
        noop, _ = _jax_compile(lambda p, k, s: s.x.reshape(-1)[0], params, k_run, state0, ynn_fusions=ynn)
        info["dispatch_s"] = dispatch_s(noop, params, k_run, state0)

        def loop_call(init=init, one=one, keys=keys):
            s = init(params, x0)
            for k in keys:
                s = one(params, k, s)
            s.x.block_until_ready()

        info["flops"] = info["flops"] * n_steps if info.get("flops") else None
        info.update(_first_call(loop_call))
        fns[f"{name} python loop"], infos[f"{name} python loop"] = loop_call, info

    def torch_call():
        return ti.langevin_chain(t_model, tx0, n_steps, LANGEVIN_STEP)

    infos["torch python loop"] = _first_call(torch_call)
    fns["torch python loop"] = torch_call
    timings = interleaved(fns, m["langevin_repeats"], m["block_s"])
    loop_flops = next((v["flops"] for k, v in infos.items() if k.endswith("python loop") and v.get("flops")), None)
    impls = {}
    for k in fns:
        impls[k] = dict(infos[k], **timings[k])
        impls[k]["flops"] = loop_flops  # the same n_steps chain steps for every implementation
        impls[k]["chain_steps_per_s"] = cfg["chains"] * n_steps / timings[k]["median_s"]
    return dict(impls=impls, sizes=cfg, unit="chain", items_per_call=cfg["chains"] * n_steps)
