"""Which fields shape a training run: the fingerprint a checkpoint must match to resume, keyed by
the old flat names so checkpoints written before configs were nested still resume."""
from __future__ import annotations

from typing import Sequence

from dsm_jax.config.fields import _group_of, get, leaves


def to_legacy(config) -> dict:
    """The flat ``{old name: old value}`` the config had before nesting (``None`` back to its
    old "auto" value): what the fingerprints of earlier checkpoints were computed from."""
    out = {}
    for leaf in leaves(type(config)):
        value = get(config, leaf.path)
        out[leaf.legacy] = leaf.metadata["legacy_none"] if value is None and "legacy_none" in leaf.metadata else value
    return out


def resume_ignored(cls) -> tuple[str, ...]:
    """The dotted paths marked ``resume=False``."""
    return tuple(leaf.path for leaf in leaves(cls) if not leaf.metadata.get("resume", True))


def fingerprint(config, ignore: Sequence[str] = ()) -> dict:
    """The config fields that shape a training run (those not marked ``resume=False``, not
    ``added`` fields at their default, and not in ``ignore``), for ``fit(..., fingerprint=...)``:
    a checkpoint written under another fingerprint is refused on resume instead of silently
    mixing two runs. Keyed by the old flat names with their old values, so checkpoints written
    before configs were nested resume; removed fields' ``fingerprint_constants`` come last."""
    flat = to_legacy(config)
    skip = set(ignore)
    fields = leaves(type(config))
    out = {leaf.legacy: flat[leaf.legacy] for leaf in fields
           if leaf.metadata.get("resume", True) and leaf.legacy not in skip and leaf.path not in skip
           and not ("added_default" in leaf.metadata and get(config, leaf.path) == leaf.metadata["added_default"])}
    for leaf in fields:
        for name, value in leaf.metadata.get("fingerprint_constants", {}).items():
            if leaf.legacy_prefix + name not in skip and _group_of(leaf) + name not in skip:
                out[leaf.legacy_prefix + name] = value
    return out
