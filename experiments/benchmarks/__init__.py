"""dsm_jax vs PyTorch (CPU) and vs per-step Python loops: ``python -m experiments.benchmarks``.

PyTorch is the optional ``bench`` extra (``pip install -e .[bench]``); the library never
imports it."""
