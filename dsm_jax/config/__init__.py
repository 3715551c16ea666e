"""The one config system of the experiments: frozen dataclasses nested by job
(``cfg.model.width``, ``cfg.train.steps``), named presets that replace some groups, and a
command line ``--preset NAME --set group.field=value ...``.

One module per job:

* :mod:`.fields` — declaring a config: :func:`group`, :func:`field` and its metadata (what a
  field is, instead of hand-kept lists beside the config), :func:`leaves`, :func:`get`,
  :func:`replace`, the :class:`Legacy` mixin for old attribute names.
* :mod:`.cli` — the command line: :func:`parse_args`, :func:`with_preset`,
  :func:`apply_overrides`, :func:`resolve`.
* :mod:`.saved` — a run's ``config.json``: :func:`to_dict`, :func:`from_dict`, :func:`load`.
* :mod:`.resume` — what a checkpoint must match to resume: :func:`fingerprint`,
  :func:`resume_ignored`, :func:`to_legacy`.
* :mod:`.checks` — range checks for each config's ``validate``: :func:`check_fields`,
  :func:`check_t_high`.

Every value a user can type is checked where it enters: an unknown field, a value of the
wrong type (``--set train.steps=abc``) and, through each config's ``validate``, values out of
range; each error names the field and a ``--set`` that fixes it.
"""
from __future__ import annotations

from dsm_jax.config.fields import field, get, group, Leaf, leaves, Legacy, replace
from dsm_jax.config.cli import apply_overrides, in_legacy_names, legacy_names_in, parse_args, resolve, with_preset
from dsm_jax.config.saved import from_dict, load, to_dict
from dsm_jax.config.resume import fingerprint, resume_ignored, to_legacy
from dsm_jax.config.checks import check_fields, check_t_high

__all__ = [
    "apply_overrides", "check_fields", "check_t_high", "field", "fingerprint", "from_dict", "get", "group",
    "in_legacy_names", "Leaf", "leaves", "Legacy", "legacy_names_in", "load", "parse_args", "replace",
    "resolve", "resume_ignored", "to_dict", "to_legacy", "with_preset",
]
