"""What the one-call estimators share: build-check-run, and the one return convention
``f`` → ``(log_z, stderr)``, ``f_with_info`` → ``(log_z, stderr, info)`` (``return_info=`` deprecated)."""
from __future__ import annotations

import warnings

from dsm_jax import validation
from dsm_jax.likelihood.proposals import broadcast_proposal


def build_and_run(make, energy_fn, params, key, event_shape, proposal_mean, proposal_scale, config):
    """``make(energy_fn, event_shape, **config)(params, key, mean, scale)``; a concrete proposal is
    checked here, before anything compiles."""
    event_shape = validation.check_event_shape(event_shape)
    estimate = make(energy_fn, event_shape, **config)
    mean, scale = broadcast_proposal(event_shape, proposal_mean, proposal_scale)
    return estimate(params, key, mean, scale)


def legacy_return_info(name: str, out, return_info):
    """``out = (log_z, stderr, info)`` cut to the pair, unless a deprecated ``return_info=True``."""
    if return_info is not None:
        warnings.warn(f"`{name}(..., return_info=...)` is deprecated: use `{name}` (returns (log_z, stderr)) or "
                      f"`{name}_with_info` (returns (log_z, stderr, info)).", DeprecationWarning, stacklevel=3)
        if return_info:
            return out
    return out[0], out[1]
