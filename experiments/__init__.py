"""The experiments: scripts run as modules from the repository root, e.g.
``python -m experiments.toy2d --preset smoke``. Shared scaffolding is in
:mod:`experiments.common`; each experiment's config dataclasses and presets in
:mod:`experiments.configs`."""
