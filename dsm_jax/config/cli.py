"""The command line: ``--preset NAME`` and ``--set group.field=value`` (old flat names too), each
value parsed to its field's type, errors naming the field and a ``--set`` that fixes it."""
from __future__ import annotations

import argparse
import json
import typing
import warnings
from typing import Any, Sequence

from dsm_jax.config.fields import Leaf, _deprecated, _legacy_map, _optional, leaves, replace


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
