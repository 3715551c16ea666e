"""The benchmark's sizes per mode and its rows (``row_specs``)."""
from __future__ import annotations

# glibc's malloc with transparent huge pages: XLA:CPU mallocs each call's temporaries as one
# block (61 MiB for the toy MLP's gradient at 10,000 chains), which glibc mmaps and the kernel
# faults in 4 KiB at a time on every call (15,600 minor faults per call measured); with
# huge pages 610.
HUGETLB_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}

# The peer rows (torchebm, blackjax): the 4 × 128 softplus MLP, DSM batch 2,048,
# 10,000 chains × 200 steps.
PEERS = dict(peer_mlp=dict(depth=4, width=128), peer_batch=2048, peer_chains=10_000, peer_steps=200,
             peer_train_repeats=30, peer_chain_repeats=3)
PEER_ROWS = ("peer_dsm_torchebm", "peer_langevin_torchebm", "peer_mala_blackjax", "peer_ula_blackjax")
# --rows accepts these names for groups of rows.
ROW_GROUPS = {"peers": PEER_ROWS}

# Sizes per mode. "tiny" is for the tests: every code path in seconds.
MODES = {
    "full": dict(
        mlp=dict(depth=25, width=32, batch=2048), mlp_repeats=30,
        resnet=dict(width=64, n_stages=3, blocks_per_stage=2, image=32), resnet_batches=(128, 64), resnet_repeats=5,
        langevin_mlp=dict(chains=10_000, steps=200), langevin_resnet=dict(chains=256, steps=3), langevin_repeats=3,
        peak_sizes=(2048, 4096), peak_conv=(32, 8, 512), peak_repeats=5, block_s=0.25,
        **PEERS,
    ),
    "quick": dict(
        mlp=dict(depth=25, width=32, batch=2048), mlp_repeats=10,
        resnet=dict(width=64, n_stages=3, blocks_per_stage=2, image=32), resnet_batches=(32,), resnet_repeats=3,
        langevin_mlp=dict(chains=10_000, steps=30), langevin_resnet=dict(chains=32, steps=2), langevin_repeats=3,
        peak_sizes=(2048,), peak_conv=(32, 8, 512), peak_repeats=5, block_s=0.25,
        **dict(PEERS, peer_steps=30, peer_train_repeats=10, peer_chain_repeats=3),
    ),
    "tiny": dict(
        mlp=dict(depth=3, width=8, batch=64), mlp_repeats=3,
        resnet=dict(width=4, n_stages=1, blocks_per_stage=1, image=8), resnet_batches=(4,), resnet_repeats=2,
        langevin_mlp=dict(chains=32, steps=2), langevin_resnet=dict(chains=4, steps=2), langevin_repeats=2,
        peak_sizes=(128,), peak_conv=(2, 4, 16), peak_repeats=2, block_s=0.005,
        # One torch thread: on a loaded 2-core machine each 2-thread OpenMP region of a tiny op
        # can wait a scheduler time slice (~12 ms measured) for its second thread.
        torch_threads=1,
        resnet_impls=(("canonical", False),), langevin_resnet_impls=(("canonical", False, True),),
        skip_rows=("langevin_mlp_100chains",),  # the same code path as langevin_mlp
        peer_mlp=dict(depth=2, width=8), peer_batch=64, peer_chains=16, peer_steps=2, peer_train_repeats=2,
        peer_chain_repeats=2,
    ),
}
# The losses' settings: DDE's toy σ; MDSM's Fashion-MNIST σ range, σ₀ and Adam β₂.
DSM_SIGMA, MDSM_SIGMAS, MDSM_SIGMA0 = 0.2, (0.1, 3.0), 0.1
LANGEVIN_STEP = 1e-3


def row_specs(mode: str) -> list[dict]:
    m = MODES[mode]
    rows = [dict(name="peak", kind="peak"), dict(name="train_mlp", kind="train_mlp"),
            dict(name="train_mlp_ops", kind="train_mlp_ops")]
    for b in m["resnet_batches"]:
        rows.append(dict(name=f"train_resnet_b{b}", kind="train_resnet", batch=b))
    b = m["resnet_batches"][0]
    rows.append(dict(name=f"train_resnet_b{b}_hugetlb", kind="train_resnet", batch=b, env=HUGETLB_ENV,
                     impls=("jax[canonical] ynn-off", "torch")))
    rows.append(dict(name=f"conv_ops_b{b}", kind="conv_ops"))
    rows += [dict(name="langevin_mlp", kind="langevin_mlp"),
             dict(name="langevin_mlp_hugetlb", kind="langevin_mlp", env=HUGETLB_ENV),
             dict(name="langevin_mlp_100chains", kind="langevin_mlp", chains=100),
             dict(name="langevin_resnet", kind="langevin_resnet")]
    rows += [dict(name=name, kind=name) for name in PEER_ROWS]
    skip = set(m.get("skip_rows", ()))
    rows = [r for r in rows if r["name"] not in skip]
    for r in rows:
        r["mode"] = mode
    return rows
