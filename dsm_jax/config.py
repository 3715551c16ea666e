"""The one config system of the experiments: a frozen dataclass of settings, named presets
that override some fields, and a command line ``--preset NAME --set field=value ...``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any, Sequence


def _parse_value(field: dataclasses.Field, text: str, hint) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {field.name}={text}: expected true/false.")
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(item(v) for v in text.split(",") if v)
    if hint in (int, float, str):
        return hint(text)
    return json.loads(text)


def apply_overrides(config, overrides: Sequence[str]):
    """``["lr=1e-3", "toys=rings,checkerboard"]`` → a new config with those fields replaced."""
    hints = typing.get_type_hints(type(config))
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(
                f"--set {item!r}: expected field=value with field one of {sorted(fields)}."
            )
        changes[name] = _parse_value(fields[name], text, hints[name])
    return dataclasses.replace(config, **changes)


def parse_args(base, presets: dict[str, dict], description: str, argv=None, default_preset="default",
               flags: Sequence[str] = ()):
    """Build the config from ``--preset`` and ``--set`` flags; returns ``(config, args)``.

    ``args`` carries ``out`` (output directory), ``preset`` and ``no_progress``. Each field
    named in ``flags`` also gets its own ``--FIELD VALUE`` option (same as ``--set FIELD=VALUE``).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", default=default_preset, choices=sorted(presets))
    parser.add_argument("--out", default=None, help="output directory (default: runs/<script>-<preset>)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
        help="override one config field (repeatable); tuples as comma lists",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    for name in flags:
        parser.add_argument(f"--{name}", default=None, help=f"same as --set {name}=VALUE")
    args = parser.parse_args(argv)
    config = dataclasses.replace(base, **presets[args.preset])
    extra = [f"{name}={getattr(args, name)}" for name in flags if getattr(args, name) is not None]
    config = apply_overrides(config, [*args.overrides, *extra])
    return config, args


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
