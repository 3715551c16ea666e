"""The one config system of the experiments: frozen dataclasses nested by job
(``cfg.model.width``, ``cfg.train.steps``), named presets that replace some groups, and a
command line ``--preset NAME --set group.field=value ...``.

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

Every value a user can type is checked where it enters: an unknown field, a value of the
wrong type (``--set train.steps=abc``) and, through each config's ``validate``, values out of
range; each error names the field and a ``--set`` that fixes it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
import warnings
from typing import Any, Sequence

from dsm_jax import validation


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


def _deprecated(old: str, new: str, where: str, category=FutureWarning) -> None:
    # FutureWarning (shown by default) where a user typed or saved the old name (--set,
    # config.json); DeprecationWarning where code reads it (cfg.old_name).
    warnings.warn(f"{where}: `{old}` is the old flat name of `{new}`; use {new} (the old name still works).",
                  category, stacklevel=3)


def _optional(hint):
    """``(inner type, True)`` for ``X | None`` / ``Optional[X]``, else ``(hint, False)``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _parse_value(leaf: Leaf, text: str, name: str) -> Any:
    hint, optional = _optional(leaf.hint)
    where = f"--set {name}={text}"
    if optional and text.lower() in ("none", "auto", ""):
        return None
    if optional and "legacy_none" in leaf.metadata and text == str(leaf.metadata["legacy_none"]):
        warnings.warn(f"{where}: {text!r} for auto / off is deprecated; use --set {leaf.path}=none.",
                      FutureWarning, stacklevel=3)
        return None
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: `{name}` expects true or false; fix it with --set {name}=true.")
    if typing.get_origin(hint) is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_scalar(item, v, name, where, False) for v in text.split(",") if v)
    if hint in (int, float, str):
        return _scalar(hint, text, name, where, optional)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: `{name}` expects a JSON value ({err}).") from None


_EXAMPLES = {int: "3", float: "0.5", str: "name"}


def _scalar(kind, text: str, name: str, where: str, optional: bool):
    try:
        if kind is int:  # int("1e3") fails; accept only integer literals, never silently round
            return int(text)
        return kind(text)
    except ValueError:
        none = f" (or --set {name}=none: auto)" if optional else ""
        raise ValueError(f"{where}: `{name}` expects {'an' if kind is int else 'a'} {kind.__name__}, got {text!r}; "
                         f"fix it with --set {name}={_EXAMPLES[kind]}{none}.") from None


def resolve(cls, name: str, where: str = "--set") -> Leaf:
    """The leaf a user-typed ``name`` means: a dotted path, or an old flat name (deprecated)."""
    by_path = {leaf.path: leaf for leaf in leaves(cls)}
    if name in by_path:
        return by_path[name]
    legacy = _legacy_map(cls)
    if name in legacy:
        _deprecated(name, legacy[name].path, where)
        return legacy[name]
    raise ValueError(f"{where} {name!r}: expected field=value with field one of {sorted(by_path)}.")


def apply_overrides(config, overrides: Sequence[str]):
    """``["train.lr=1e-3", "toys=rings,checkerboard"]`` → a new config with those fields replaced.
    Old flat names (``lr=1e-3``) still work, with a :class:`FutureWarning`."""
    changes = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected field=value with field one of "
                             f"{sorted(leaf.path for leaf in leaves(type(config)))}.")
        leaf = resolve(type(config), name, f"--set {item!r}")
        changes[leaf.path] = _parse_value(leaf, text, name)
    return replace(config, changes)


def legacy_names_in(config, overrides: Sequence[str]) -> bool:
    """Whether any ``--set`` in ``overrides`` uses an old flat name (then errors speak that dialect)."""
    paths = {leaf.path for leaf in leaves(type(config))}
    return any(item.partition("=")[0] not in paths for item in overrides)


def in_legacy_names(cls, message: str) -> str:
    """``message`` with every dotted field path replaced by its old flat name (and ``none``
    by the old "auto" value), for a user who typed the old names."""
    for leaf in sorted(leaves(cls), key=lambda lf: -len(lf.path)):
        if "legacy_none" in leaf.metadata:
            message = message.replace(f"--set {leaf.path}=none", f"--set {leaf.legacy}={leaf.metadata['legacy_none']}")
        message = message.replace(f"`{leaf.path}`", f"`{leaf.legacy}`").replace(f"--set {leaf.path}=",
                                                                              f"--set {leaf.legacy}=")
    return message


def parse_args(base, presets: dict[str, dict], description: str, argv=None, default_preset="default",
               flags: Sequence[str] = ()):
    """Build the config from ``--preset`` and ``--set`` flags; returns ``(config, args)``.

    ``args`` carries ``out`` (output directory), ``preset`` and ``no_progress``. Each field
    path in ``flags`` also gets its own ``--NAME VALUE`` option, NAME its last part (same as
    ``--set PATH=VALUE``). The config is validated before it is returned.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", default=default_preset, choices=sorted(presets))
    parser.add_argument("--out", default=None, help="output directory (default: runs/<script>-<preset>)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
        help="override one config field, e.g. train.steps=100 (repeatable); tuples as comma lists",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    for path in flags:
        parser.add_argument(f"--{path.rpartition('.')[2]}", dest=path, default=None, help=f"same as --set {path}=VALUE")
    args = parser.parse_args(argv)
    config = with_preset(base, presets, args.preset)
    extra = [f"{path}={getattr(args, path)}" for path in flags if getattr(args, path) is not None]
    config = apply_overrides(config, [*args.overrides, *extra])
    if hasattr(config, "validate"):  # refuse an inconsistent config before any compute
        try:
            config.validate()
        except ValueError as err:
            if not legacy_names_in(config, args.overrides):
                raise
            raise ValueError(in_legacy_names(type(config), str(err))) from None
    return config, args


def with_preset(base, presets: dict[str, dict], name: str):
    """``base`` with preset ``name`` applied: its top-level fields or groups, or dotted paths."""
    if name not in presets:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(presets)} (--preset {sorted(presets)[0]}).")
    return replace(base, presets[name])


def to_dict(config) -> dict:
    """``{dotted path: value}``: what ``config.json`` holds and ``--set`` takes."""
    return {leaf.path: get(config, leaf.path) for leaf in leaves(type(config))}


def to_legacy(config) -> dict:
    """The flat ``{old name: old value}`` the config had before nesting (``None`` back to its
    old "auto" value): what the fingerprints of earlier checkpoints were computed from."""
    out = {}
    for leaf in leaves(type(config)):
        value = get(config, leaf.path)
        out[leaf.legacy] = leaf.metadata["legacy_none"] if value is None and "legacy_none" in leaf.metadata else value
    return out


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


def _group_of(leaf: Leaf) -> str:
    return leaf.path[: len(leaf.path) - len(leaf.path.rpartition(".")[2])]  # "model." of "model.conv"


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


# ---------------------------------------------------------------------------------------
# Range checks (each config's ``validate`` calls these): the first violation raises
# ``ValueError`` naming the field, its value and a ``--set`` that fixes it.
# ---------------------------------------------------------------------------------------
def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def check_fields(config, *, positive_int=(), nonnegative_int=(), positive=(), nonnegative=(),
                 unit_interval=(), open_unit=(), ordered=(), within_limit=(), at_least=(), choices=None,
                 subsets=None) -> None:
    """Validate fields (dotted paths) of an experiment config.

    ``positive_int``/``nonnegative_int``: ints > 0 / >= 0; ``positive``/``nonnegative``:
    finite numbers > 0 / >= 0; ``unit_interval``: in (0, 1]; ``open_unit``: in [0, 1);
    ``ordered``: pairs ``(lo, hi)`` that must satisfy ``lo <= hi``; ``within_limit``: pairs
    ``(n, limit)`` with ``n <= limit`` unless ``limit`` is None (no limit); ``at_least``: pairs
    ``(name, bound)`` with a number bound; ``choices``: ``{field: allowed}``; ``subsets``:
    ``{field: allowed}`` for tuple fields. A field whose value is ``None`` (auto, or off) is
    not range-checked.
    """
    value = lambda name: get(config, name)  # noqa: E731
    given = lambda names: [n for n in names if value(n) is not None]  # noqa: E731  (None: auto / off)

    def fail(name, need, example):
        raise ValueError(f"config field `{name}` must be {need}, got {value(name)!r}; "
                         f"fix it with --set {name}={example}.")

    for name in given(positive_int):
        if not validation.is_int(value(name)) or value(name) < 1:
            fail(name, "an int >= 1", 1)
    for name in given(nonnegative_int):
        if not validation.is_int(value(name)) or value(name) < 0:
            fail(name, "an int >= 0", 0)
    for name in given(positive):
        if not _num(value(name)) or value(name) <= 0:
            fail(name, "a finite number > 0", "<a positive number>")
    for name in given(nonnegative):
        if not _num(value(name)) or value(name) < 0:
            fail(name, "a finite number >= 0", 0)
    for name in given(unit_interval):
        if not _num(value(name)) or not 0 < value(name) <= 1:
            fail(name, "in (0, 1]", 0.5)
    for name in given(open_unit):
        if not _num(value(name)) or not 0 <= value(name) < 1:
            fail(name, "in [0, 1)", 0.9)
    for lo, hi in ordered:
        a, b = value(lo), value(hi)
        if a > b:
            raise ValueError(f"config field `{lo}` ({a}) must be <= `{hi}` ({b}); swap them "
                             f"(--set {lo}={b} --set {hi}={a}) or change one.")
    for name, bound in at_least:
        if value(name) < bound:
            fail(name, f">= {bound}", bound)
    for name, limit in within_limit:
        n, cap = value(name), value(limit)
        if cap is not None and n > cap:
            raise ValueError(f"`{name}` ({n}) exceeds `{limit}` ({cap}); fix it with --set {name}={cap} "
                             f"or --set {limit}=none (no limit).")
    for name, allowed in (choices or {}).items():
        if value(name) not in allowed:
            fail(name, f"one of {tuple(allowed)}", tuple(allowed)[0])
    for name, allowed in (subsets or {}).items():
        got = value(name)
        unknown = [v for v in got if v not in allowed]
        if not got or unknown:
            raise ValueError(f"config field `{name}` must be a non-empty comma list from {tuple(allowed)}, "
                             f"got {got!r}{f' (unknown: {unknown})' if unknown else ''}; fix it with "
                             f"--set {name}={','.join(allowed)}.")



def check_t_high(config, path: str, t_low: float = 1.0) -> None:
    """An annealed chain cools from ``t_high`` down to T = ``t_low``: a lower start would heat
    it instead (accepted silently before)."""
    value = get(config, path)
    if not _num(value) or value < t_low:
        raise ValueError(f"config field `{path}` ({value}) must be >= the final temperature {t_low} (the chain "
                         f"anneals from `{path}` down to T = {t_low}); fix it with --set {path}={max(t_low, 10.0)}.")
