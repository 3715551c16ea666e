"""A run's ``config.json``: written as dotted paths, read back from dotted, nested or old flat
names (and fields a ``replaces=`` field merged)."""
from __future__ import annotations

import json
import typing
import warnings

from dsm_jax.config.fields import Leaf, _group_of, _legacy_map, _optional, get, leaves, replace


def to_dict(config) -> dict:
    """``{dotted path: value}``: what ``config.json`` holds and ``--set`` takes."""
    return {leaf.path: get(config, leaf.path) for leaf in leaves(type(config))}


def _from_json(leaf: Leaf, value):
    hint, _ = _optional(leaf.hint)
    if isinstance(value, list) and typing.get_origin(hint) is tuple:
        return tuple(value)
    return value


def _flatten_json(saved: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in saved.items():
        if isinstance(v, dict):
            out.update(_flatten_json(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _merge_replaced(cls, saved: dict, where: str) -> dict:
    """``saved`` with the old fields of every ``replaces=`` leaf merged into it (see :func:`field`)."""
    saved = dict(saved)
    for leaf in leaves(cls):
        old = leaf.metadata.get("replaces", ())
        for prefix in dict.fromkeys((_group_of(leaf), leaf.legacy_prefix)):  # nested, then flat spelling
            names = [prefix + n for n in old]
            if not any(n in saved for n in names):
                continue
            source = names[-1]
            value = saved.get(source)
            for n in names:
                saved.pop(n, None)
            if value is None:  # only the dropped names: the field keeps base's value
                how = f"kept its default ({source} absent)"
            else:
                saved[leaf.path] = value
                how = f"read as {leaf.path}={value} (from {source})"
            listed = " and ".join(f"`{n}`" for n in names)
            warnings.warn(f"{where}: {listed} {'are now one field,' if len(names) > 1 else 'is now'} `{leaf.path}`; "
                          f"{how}.", FutureWarning, stacklevel=4)
    return saved


def from_dict(base, saved: dict, where: str = "config"):
    """``base`` with the values of a saved config: dotted paths, nested dicts, or the flat old
    names of an earlier version (mapped, ``0``/``""`` "auto" values to ``None``), and the old
    fields a ``replaces=`` field merged. Fields the dataclass no longer has are reported and
    ignored; fields the dict lacks keep ``base``'s."""
    saved = _flatten_json({k: v for k, v in saved.items() if k != "preset"})
    saved = _merge_replaced(type(base), saved, where)
    by_path = {leaf.path: leaf for leaf in leaves(type(base))}
    legacy = _legacy_map(type(base))
    changes, unknown, renamed = {}, [], []
    for name, value in saved.items():
        if name in by_path:
            leaf = by_path[name]
        elif name in legacy:
            leaf = legacy[name]
            renamed.append(name)
            if "legacy_none" in leaf.metadata and value == leaf.metadata["legacy_none"]:
                value = None
        else:
            unknown.append(name)
            continue
        changes[leaf.path] = _from_json(leaf, value)
    if renamed:
        warnings.warn(f"{where}: written with the old flat field names ({len(renamed)} fields, e.g. "
                      f"{renamed[0]!r}); read as the nested ones.", FutureWarning, stacklevel=3)
    if unknown:
        warnings.warn(f"{where}: ignoring fields {sorted(unknown)} unknown to {type(base).__name__} "
                      f"(written by another version of the script).", stacklevel=3)
    return replace(base, changes)


def load(base, path: str):
    """The config a run wrote to ``path`` (its ``config.json``), as an instance of ``base``'s
    dataclass: see :func:`from_dict` (old runs' flat files load too)."""
    with open(path) as f:
        return from_dict(base, json.load(f), path)
