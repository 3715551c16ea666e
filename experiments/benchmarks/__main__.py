"""``python -m experiments.benchmarks [--quick] [--out DIR]``: see :mod:`experiments.benchmarks.run`."""
from experiments.benchmarks.run import main

main()
