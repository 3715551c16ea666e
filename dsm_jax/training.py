"""Deprecated: ``dsm_jax.training`` was split by job. Import from the new homes (or from
``dsm_jax`` itself); this shim only re-exports the old names and is removed later.

* pure steps, ``TrainState``, EMA, ``adam``: :mod:`dsm_jax.train_step`
* the host loop ``fit``: :mod:`dsm_jax.loop`
* checkpoints (``Checkpoints``, ``latest_step``, ``IncompatibleCheckpointError``):
  :mod:`dsm_jax.checkpoint`
* the JSONL run log (``read_log``, ``append_record``): :mod:`dsm_jax.runlog`
"""
import warnings

from dsm_jax.checkpoint import (  # noqa: F401
    Checkpoints,
    IncompatibleCheckpointError,
    latest_step,
    state_digest,
    state_layout,
)
from dsm_jax.loop import Every, fit  # noqa: F401
from dsm_jax.pytree import nonfinite_leaves  # noqa: F401
from dsm_jax.runlog import append_record, read_log  # noqa: F401
from dsm_jax.train_step import (  # noqa: F401
    TrainState,
    adam,
    apply_loss,
    init_train_state,
    make_train_step,
    skip_nonfinite_steps,
    update_ema,
    with_data,
)

warnings.warn("dsm_jax.training is deprecated: import from dsm_jax (or dsm_jax.train_step / loop / checkpoint / "
              "runlog).", DeprecationWarning, stacklevel=2)
