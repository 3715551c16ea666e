"""Where arguments are checked: every error names the argument and the fix.

Checks run in Python at trace time (shapes and concrete configuration values are static
there), so a bad call fails before any compute instead of producing NaNs later. Values only
known under jit (tracers) pass through; each caller's docstring says which checks that skips.

One module per kind of argument:

* :mod:`.scalars` — numbers, ints and counts, flags, intervals, choices (``check_positive``,
  ``check_positive_int``, ``check_bool``, ``check_choice``, ``is_int``, ``is_concrete``).
* :mod:`.arrays` — batches of examples: floating dtype, ``(batch, *event)`` and event shapes,
  finiteness, 0/1 masks (``check_examples``, ``check_mask``).
* :mod:`.data` — what loaders read and metrics score: images, class labels, 2-D points,
  feature matrices.
* :mod:`.functions` — callables: energy functions (arity, output shape), optimizers, objects.
* :mod:`.paths` — checkpoint directories, log files, the JSON written beside them.
* :mod:`.sampling` — PRNG keys, noise levels σ, temperatures, chain starts, clip boxes, MCMC
  draws, the blackjax extra.

Callers import the package, never a module: ``from dsm_jax import validation;
validation.check_positive_int("n_steps", n_steps)``.
"""
from __future__ import annotations

from dsm_jax.validation.scalars import (
    check_backend, check_bool, check_choice, check_count, check_float_in, check_in_unit_interval,
    check_module_sizes, check_multiple_of, check_nonnegative, check_optional_int, check_positive,
    check_positive_int, check_real, is_concrete, is_finite_number, is_int, is_real_number, KNOWN_BACKENDS,
)
from dsm_jax.validation.arrays import (
    check_all_finite, check_batched, check_binary_mask, check_event_shape, check_examples, check_floating,
    check_mask, check_shape,
)
from dsm_jax.validation.data import (
    check_class_labels, check_images, check_images_like, check_labels, check_matrix, check_points_2d,
)
from dsm_jax.validation.functions import (
    check_arity, check_callable, check_energy_fn, check_energy_output, check_instance, check_optimizer,
)
from dsm_jax.validation.paths import check_directory_path, check_file_path, check_json_dict
from dsm_jax.validation.sampling import (
    check_chain_start, check_clip, check_clip_shape, check_draws, check_prng_key, check_sigma,
    check_sigma_range, check_temperatures, require_blackjax,
)

__all__ = [
    "check_all_finite", "check_arity", "check_backend", "check_batched", "check_binary_mask", "check_bool",
    "check_callable", "check_chain_start", "check_choice", "check_class_labels", "check_clip",
    "check_clip_shape", "check_count", "check_directory_path", "check_draws", "check_energy_fn",
    "check_energy_output", "check_event_shape", "check_examples", "check_file_path", "check_float_in",
    "check_floating", "check_images", "check_images_like", "check_in_unit_interval", "check_instance",
    "check_json_dict", "check_labels", "check_mask", "check_matrix", "check_module_sizes", "check_multiple_of",
    "check_nonnegative", "check_optimizer", "check_optional_int", "check_points_2d", "check_positive",
    "check_positive_int", "check_prng_key", "check_real", "check_shape", "check_sigma", "check_sigma_range",
    "check_temperatures", "is_concrete", "is_finite_number", "is_int", "is_real_number", "KNOWN_BACKENDS",
    "require_blackjax",
]
