"""Declaring a config: nested groups and leaf fields with their metadata, the tree of leaves
(dotted paths), reading and replacing by path, and old flat attribute names.

Field metadata says what a field is, instead of hand-kept lists beside the config:

* ``resume=False``: the field does not shape a training run (paths, evaluation, sampling,
  bookkeeping), so a checkpoint written under another value still resumes
  (:func:`fingerprint`);
* ``legacy="old_name"``: the field's flat name before configs were nested (default: the
  group's ``legacy_prefix`` + the field name), so old ``--set`` names and the ``config.json``
  of earlier runs still load (with a :class:`FutureWarning`, shown by default), and code
  reading ``cfg.old_name`` still works (with a :class:`DeprecationWarning`);
* ``legacy_none=0`` (or ``""``): the old "0 / empty means auto" value, now ``None``;
* ``added=True``: a field added after runs were checkpointed, whose default is what those runs
  did: left out of the :func:`fingerprint` while it holds its default, so their checkpoints
  still resume (any other value is fingerprinted as usual);
* ``replaces=("a", "b")``: the field merges older fields of its group (``model.conv`` replaced
  ``train_conv`` and ``sample_conv``): a saved config holding any of them, nested
  (``model.a``) or flat (``a``), loads with this field set to the value of the *last* name and
  the others dropped (:func:`from_dict`, with a :class:`FutureWarning`);
* ``fingerprint_constants={"a": value}``: fields of the group that were removed (or merged
  away) after runs were checkpointed with them, each holding ``value`` in every such run: the
  :func:`fingerprint` keeps ``{old flat name: value}``, so those checkpoints still resume.
"""
from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from typing import Any


def group(cls, legacy_prefix: str = "", **metadata):
    """A nested config field of dataclass ``cls`` (its defaults); ``legacy_prefix`` is what its
    fields' flat names began with before nesting (``"gen_"``, ``"density_"``)."""
    return dataclasses.field(default_factory=cls, metadata={"legacy_prefix": legacy_prefix, **metadata})


def field(default, *, resume: bool = True, legacy: str | None = None, legacy_none=None, added: bool = False,
          replaces: tuple[str, ...] = (), fingerprint_constants: dict | None = None):
    """A leaf field with its metadata (see the module docstring)."""
    meta = {"resume": resume}
    if added:
        meta["added_default"] = default
    if legacy is not None:
        meta["legacy"] = legacy
    if legacy_none is not None:
        meta["legacy_none"] = legacy_none
    if replaces:
        if isinstance(replaces, str) or not all(isinstance(n, str) and n for n in replaces):
            raise TypeError(f"`replaces` takes a tuple of old field names, e.g. replaces=({replaces!r},); "
                            f"got {replaces!r}.")
        meta["replaces"] = tuple(replaces)
    if fingerprint_constants:
        if not isinstance(fingerprint_constants, dict) or not all(isinstance(n, str) for n in fingerprint_constants):
            raise TypeError(f"`fingerprint_constants` takes {{old field name: value}}, got {fingerprint_constants!r}.")
        meta["fingerprint_constants"] = dict(fingerprint_constants)
    if isinstance(default, (list, dict, set)):
        raise TypeError("config defaults must be immutable: use a tuple.")
    return dataclasses.field(default=default, metadata=meta)


class Leaf(typing.NamedTuple):
    path: str           # "model.width"
    legacy: str         # "width": the flat name before nesting
    hint: Any           # the type annotation
    metadata: Any       # dataclasses.Field.metadata
    legacy_prefix: str = ""  # what its group's flat names began with ("gen_"): old fields' flat names


def _is_group(hint) -> bool:
    return dataclasses.is_dataclass(hint) and isinstance(hint, type)


def leaves(cls, prefix: str = "", legacy_prefix: str = "") -> list[Leaf]:
    """Every leaf field of config class ``cls``, nested groups flattened to dotted paths."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _is_group(hint):
            out += leaves(hint, f"{prefix}{f.name}.", legacy_prefix + f.metadata.get("legacy_prefix", ""))
        else:
            out.append(Leaf(prefix + f.name, f.metadata.get("legacy", legacy_prefix + f.name), hint, f.metadata,
                            legacy_prefix))
    return out


def get(config, path: str):
    for part in path.split("."):
        config = getattr(config, part)
    return config


def replace(config, changes: dict):
    """A new config with the dotted ``{path: value}`` replaced (groups copied, never mutated)."""
    nested: dict[str, dict] = {}
    top = {}
    for path, value in changes.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    for head, sub in nested.items():
        top[head] = replace(top.get(head, getattr(config, head)), sub)
    return dataclasses.replace(config, **top)


def _legacy_map(cls) -> dict[str, Leaf]:
    return {leaf.legacy: leaf for leaf in leaves(cls)}


def _group_of(leaf: Leaf) -> str:
    return leaf.path[: len(leaf.path) - len(leaf.path.rpartition(".")[2])]  # "model." of "model.conv"


def _optional(hint):
    """``(inner type, True)`` for ``X | None`` / ``Optional[X]``, else ``(hint, False)``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _deprecated(old: str, new: str, where: str, category=FutureWarning) -> None:
    # FutureWarning (shown by default) where a user typed or saved the old name (--set,
    # config.json); DeprecationWarning where code reads it (cfg.old_name).
    warnings.warn(f"{where}: `{old}` is the old flat name of `{new}`; use {new} (the old name still works).",
                  category, stacklevel=3)


class Legacy:
    """Mixin for a top-level config: ``cfg.old_flat_name`` still reads (deprecated), giving the
    old value (``0`` where the field is now ``None``), so code written against the flat configs
    keeps working while it moves to ``cfg.group.name``."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        leaf = _legacy_map(type(self)).get(name)
        if leaf is None:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        _deprecated(name, leaf.path, type(self).__name__, DeprecationWarning)
        value = get(self, leaf.path)
        return leaf.metadata.get("legacy_none", value) if value is None else value
