"""A tiny training run for tests/test_resilience.py's kill-and-restart test.

It takes the experiments' path through the library (``fit`` over a prefetching
``BatchIterator``, MDSM loss on an MLP energy, cosine Adam, EMA, orbax checkpoints with a
fingerprint, JSONL log), small enough to start, be SIGKILLed and restart in seconds. It
writes every leaf of the final state to ``<out>/final.npz`` and prints one JSON line.

    python tests/_resume_worker.py --out DIR [--chunk_sleep 0.3]

``--chunk_sleep`` slows each chunk on the host (after the compiled step) so the test can
kill the process mid-run; it changes no computed value.
"""
import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dsm_jax as dj  # noqa: E402
from dsm_jax import data  # noqa: E402

STEPS, STEPS_PER_CALL, CHECKPOINT_EVERY = 60, 5, 10


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--chunk_sleep", type=float, default=0.0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 2)) * [1.0, 0.5] + [1.0, -1.0]).astype(np.float32)
    module = dj.MLPEnergy(2, 16, "softplus")
    energy_fn = dj.energy_fn_of(module)
    k_init, k_train = jax.random.split(jax.random.key(0))
    opt = dj.adam(1e-2, total_steps=STEPS, final_lr=1e-4)
    state = dj.init_train_state(dj.init_params(module, k_init, (2,)), opt, k_train, ema=True)
    step = dj.make_train_step(dj.mdsm_loss(energy_fn, 0.1, 1.0, sigma0=0.1), opt, ema_decay=0.9)
    # 200 examples at batch 32: 6 batches an epoch, so the 60 steps cross 10 epoch boundaries.
    batches = data.BatchIterator(x, 32, seed=0, prefetch=2)
    sleep = (lambda state, record: time.sleep(args.chunk_sleep)) if args.chunk_sleep else None
    final, history = dj.fit(
        step, state, STEPS, steps_per_call=STEPS_PER_CALL, batches=batches, progress=False,
        log_path=os.path.join(args.out, "log.jsonl"), checkpoint_dir=os.path.join(args.out, "ckpt"),
        checkpoint_every=CHECKPOINT_EVERY, fingerprint={"width": 16, "steps": STEPS}, callback=sleep,
    )
    batches.close()
    leaves = jax.tree.leaves(final)
    arrays = {f"leaf{i}": np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                                      else leaf) for i, leaf in enumerate(leaves)}
    np.savez(os.path.join(args.out, "final.npz"), **arrays)
    print(json.dumps({"first_chunk_end": history[0]["step"] if history else None, "n_leaves": len(leaves),
                      "data_position": batches.position}), flush=True)


if __name__ == "__main__":
    main()
