"""``estimate_log_z``: one entry point over the IS, AIS and grid estimators."""
from __future__ import annotations

from dsm_jax import validation
from dsm_jax.core import EnergyFn
from dsm_jax.likelihood._returns import legacy_return_info
from dsm_jax.likelihood.ais import ais_log_z_with_info
from dsm_jax.likelihood.grid import grid_log_z_with_info
from dsm_jax.likelihood.importance import is_log_z_with_info
from dsm_jax.likelihood.proposals import broadcast_proposal, proposal_from_data

_COMMON = ("proposal_mean", "proposal_scale", "data", "scale_inflation", "min_scale")
_OPTIONS = {
    "is": ("n_samples", "n_batches", "chunk_size"),
    "ais": (
        "n_temps", "betas", "n_chains", "chains_per_chunk", "n_mcmc", "kernel", "step_size",
        "adapt_step_size", "target_accept", "pilot_chains", "pilot_steps",
    ),
    "grid": ("bounds", "n", "chunk_size"),
}


def estimate_log_z_with_info(energy_fn: EnergyFn, params, key, event_shape, method: str = "ais", **options):
    """``(log_z, stderr, info)``: :func:`estimate_log_z` plus the method's diagnostics dict."""
    if method not in _OPTIONS:
        raise ValueError(f"Unknown `method` {method!r}; choose one of {list(_OPTIONS)}.")
    allowed = _COMMON + _OPTIONS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for method={method!r}; valid options: {sorted(allowed)}.")
    event_shape = validation.check_event_shape(event_shape)
    opts = dict(options)
    data = opts.pop("data", None)
    inflation, min_scale = opts.pop("scale_inflation", 1.5), opts.pop("min_scale", 1e-3)
    validation.check_positive("scale_inflation", inflation)
    validation.check_positive("min_scale", min_scale)
    mean, scale = opts.pop("proposal_mean", None), opts.pop("proposal_scale", None)
    if data is not None:  # explicit proposal_mean / proposal_scale win over data
        data_mean, data_scale = proposal_from_data(data, event_shape, scale_inflation=inflation, min_scale=min_scale)
        mean = data_mean if mean is None else mean
        scale = data_scale if scale is None else scale
    if method == "grid":
        if "bounds" not in opts:
            m, s = broadcast_proposal(event_shape, mean, scale)
            if not (validation.is_concrete(m) and validation.is_concrete(s)):
                raise ValueError("Pass `bounds=(lo, hi)` for method='grid' under jit (traced proposal).")
            opts["bounds"] = (float((m - 8.0 * s).min()), float((m + 8.0 * s).max()))
        return grid_log_z_with_info(energy_fn, params, event_shape, **opts)
    fn = is_log_z_with_info if method == "is" else ais_log_z_with_info
    return fn(energy_fn, params, key, event_shape, proposal_mean=mean, proposal_scale=scale, **opts)


def estimate_log_z(energy_fn: EnergyFn, params, key, event_shape, method: str = "ais", return_info=None,
                   **options):
    """``log Z = log ∫ exp(−E(x)) dx`` and its standard error: ``(log_z, stderr)``.

    Both are **float32 0-d jax arrays** (call ``float()`` for logging). Pure apart from the
    configuration: it may be called inside the caller's ``jax.jit`` with traced
    ``params``/``key`` (options static) and then compiles once with the caller's function.
    Called eagerly it builds and compiles its estimator on each call; to call it many times,
    build the estimator once with :func:`make_is_log_z` / :func:`make_ais_log_z`.

    ``method``:

    * ``"ais"`` (default) — :func:`make_ais_log_z`; options ``n_temps=256``, ``betas=None``,
      ``n_chains=1024``, ``chains_per_chunk=1024``, ``n_mcmc=1``, ``kernel="mala"``,
      ``step_size=None``, ``adapt_step_size=True``, ``target_accept=0.6``,
      ``pilot_chains=128``, ``pilot_steps=2``. Use it for d > ~10.
    * ``"is"`` — :func:`make_is_log_z`; options ``n_samples=100_000``, ``n_batches=10``,
      ``chunk_size=10_000``. Good for low d with a proposal wider than the model.
    * ``"grid"`` — :func:`grid_log_z`, 1-D and 2-D events; options ``bounds`` (default
      ``(min(mean − 8·scale), max(mean + 8·scale))`` of the proposal), ``n``,
      ``chunk_size``. Its stderr is a quadrature-error estimate.

    Proposal (IS and AIS; the grid's default bounds): ``q = N(proposal_mean,
    diag(proposal_scale²))``, default ``N(0, I)``. Or pass ``data=`` (shape
    ``(n, *event_shape)``, e.g. training data) for :func:`proposal_from_data` (defaults
    ``min_scale=1e-3``, ``scale_inflation=1.5``); explicit ``proposal_mean``/``proposal_scale``
    win over ``data``. ``key`` is ignored by ``"grid"``. Diagnostics:
    :func:`estimate_log_z_with_info` (``return_info=True`` is deprecated).
    """
    out = estimate_log_z_with_info(energy_fn, params, key, event_shape, method, **options)
    return legacy_return_info("estimate_log_z", out, return_info)
