"""The accelerator check's benchmark parts (``experiments.accelerator_parts``): the training and
sampling rows of ``experiments.benchmarks``, jax side only, beside the committed CPU figures."""
from __future__ import annotations

import os

def _time_compiled(call, compile_info: dict, repeats: int, block_s: float) -> dict:
    from experiments.benchmarks.harness import _first_call, interleaved

    info = dict(compile_info, **_first_call(call))
    timing = interleaved({"jax": call}, repeats, block_s)["jax"]
    return dict(info, median_s=timing["median_s"], min_s=timing["min_s"])


def _cpu_reference(row: str, sizes) -> dict | None:
    """The fastest jax implementation of ``row`` in the committed CPU table (docs/benchmarks/),
    when it was measured at the sizes of this run."""
    import json

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "benchmarks",
                        "benchmarks.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError:
        return None
    for r in saved["rows"]:
        if r["name"] == row and saved["mode"] == sizes["bench"]:
            name, v = min(((k, v) for k, v in r["impls"].items() if k.startswith("jax")),
                          key=lambda kv: kv[1]["median_s"])
            return {"impl": name, "median_s": v["median_s"], "machine": saved["machine"].get("cpu_model"),
                    "cores": saved["machine"].get("cpus_usable"), "jax": saved["machine"].get("jax")}
    return None


def _step_timings(make_loss, params, x, opt, m: dict, repeats: int, variants: dict) -> dict:
    """Median time of one ``make_train_step`` step per variant (name -> module arguments)."""
    import jax

    import dsm_jax as dj
    from experiments.benchmarks.harness import _jax_compile

    out = {}
    for name, loss_fn in ((n, make_loss(v)) for n, v in variants.items()):
        step = dj.make_train_step(loss_fn, opt)
        state = [dj.init_train_state(params, opt, jax.random.key(1))]
        compiled, info = _jax_compile(step, state[0], x)

        def call(compiled=compiled, state=state):
            state[0], metrics = compiled(state[0], x)
            jax.block_until_ready(metrics)

        out[name] = _time_compiled(call, info, repeats, m["block_s"])
        out[name]["steps_per_s"] = 1.0 / out[name]["median_s"]
    return out


def bench_train(sizes) -> dict:
    """train_mlp (DDE toy MLP DSM step) and train_resnet (MDSM's Fashion-MNIST ResNet step)."""
    import jax

    import dsm_jax as dj
    from dsm_jax import toy
    from experiments.benchmarks.harness import _jax_name
    from experiments.benchmarks.modes import DSM_SIGMA, MDSM_SIGMA0, MDSM_SIGMAS, MODES

    m = MODES[sizes["bench"]]
    rows = {}
    c = m["mlp"]
    x = toy.get_toy("eight_gaussians").sample(jax.random.key(0), c["batch"])
    module = dj.MLPEnergy(c["depth"], c["width"])
    impls = _step_timings(lambda mod: dj.dsm_loss(dj.energy_fn_of(mod), DSM_SIGMA),
                          dj.init_params(module, jax.random.key(2), (2,)), x, dj.adam(1e-3), m, m["mlp_repeats"],
                          {"jax": module})
    rows["train_mlp"] = {"sizes": c, "impls": impls, "cpu": _cpu_reference("train_mlp", sizes)}
    if not sizes["resnet_rows"]:  # the dry run: the same timing code as the MLP row
        return {"rows": rows, "summary": _bench_summary(rows, "steps_per_s", "steps/s")}
    r = m["resnet"]
    net = {k: r[k] for k in ("width", "n_stages", "blocks_per_stage")}
    shape = (r["image"], r["image"], 1)
    batch = m["resnet_batches"][0]
    x = jax.random.uniform(jax.random.key(0), (batch, *shape))
    params = dj.init_params(dj.ResNetEnergy(**net), jax.random.key(2), shape)
    impls = _step_timings(lambda mod: dj.mdsm_loss(dj.energy_fn_of(mod), *MDSM_SIGMAS, MDSM_SIGMA0), params, x,
                          dj.adam(1e-4, 0.9, 0.95), m, m["resnet_repeats"],
                          {_jax_name(conv): dj.ResNetEnergy(**net, conv_impl=conv) for conv in sizes["convs"]})
    rows[f"train_resnet_b{batch}"] = {"sizes": dict(r, batch=batch), "impls": impls,
                                      "cpu": _cpu_reference(f"train_resnet_b{batch}", sizes)}
    return {"rows": rows, "summary": _bench_summary(rows, "steps_per_s", "steps/s")}


def bench_langevin(sizes) -> dict:
    """langevin_mlp (10,000 chains × 200 steps) and langevin_resnet (256 chains × 3 steps): one lax.scan."""
    import jax

    import dsm_jax as dj
    from experiments.benchmarks.harness import _jax_compile, _jax_name
    from experiments.benchmarks.modes import LANGEVIN_STEP, MODES

    m = MODES[sizes["bench"]]
    r = m["resnet"]
    net = {k: r[k] for k in ("width", "n_stages", "blocks_per_stage")}
    shape = (r["image"], r["image"], 1)
    cases = {
        "langevin_mlp": (dict(m["langevin_mlp"], depth=m["mlp"]["depth"], width=m["mlp"]["width"]), (2,), 0.0,
                         {"jax": dj.MLPEnergy(m["mlp"]["depth"], m["mlp"]["width"])}),
        "langevin_resnet": (dict(m["langevin_resnet"], **r), shape, 0.5,
                            {_jax_name(conv): dj.ResNetEnergy(**net, conv_impl=conv) for conv in sizes["convs"]}),
    }
    if not sizes["resnet_rows"]:  # the dry run: the same timing code as the MLP row
        del cases["langevin_resnet"]
    rows = {}
    for row, (cfg, event, mean, modules) in cases.items():
        params = dj.init_params(next(iter(modules.values())), jax.random.key(0), event)
        x0 = mean + jax.random.normal(jax.random.key(1), (cfg["chains"], *event))
        impls = {}
        for name, module in modules.items():
            scan, info = _jax_compile(dj.langevin(dj.energy_fn_of(module), LANGEVIN_STEP, cfg["steps"]),
                                      params, jax.random.key(2), x0)
            call = lambda scan=scan: scan(params, jax.random.key(2), x0).block_until_ready()  # noqa: E731
            impls[name] = _time_compiled(call, info, m["langevin_repeats"], m["block_s"])
            impls[name]["chain_steps_per_s"] = cfg["chains"] * cfg["steps"] / impls[name]["median_s"]
        cpu = _cpu_reference(row, sizes)
        if cpu:
            cpu["chain_steps_per_s"] = cfg["chains"] * cfg["steps"] / cpu["median_s"]
        rows[row] = {"sizes": cfg, "impls": impls, "cpu": cpu}
    return {"rows": rows, "summary": _bench_summary(rows, "chain_steps_per_s", "chain-steps/s")}


def _bench_summary(rows: dict, key: str, unit: str) -> str:
    return "; ".join(f"{row}: " + ", ".join(f"{n} {v[key]:,.0f} {unit}" for n, v in r["impls"].items())
                     for row, r in rows.items())
