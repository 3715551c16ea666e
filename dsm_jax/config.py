"""The one config system of the experiments: a frozen dataclass of settings, named presets
that override some fields, and a command line ``--preset NAME --set field=value ...``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
import warnings
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
    if hasattr(config, "validate"):  # refuse an inconsistent config before any compute
        config.validate()
    return config, args


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def load(base, path: str):
    """The config a run wrote to ``path`` (its ``config.json``: ``to_dict`` plus ``preset``),
    as an instance of ``base``'s dataclass. JSON lists become tuples where ``base`` has tuples.
    Fields the dataclass no longer has (a run from an older version) are reported and ignored;
    fields it has but the file lacks keep ``base``'s values."""
    with open(path) as f:
        saved = json.load(f)
    saved.pop("preset", None)
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(saved) - known)
    if unknown:
        warnings.warn(f"{path}: ignoring fields {unknown} unknown to {type(base).__name__} "
                      f"(written by another version of the script).", stacklevel=2)
        saved = {k: v for k, v in saved.items() if k in known}
    values = {k: tuple(v) if isinstance(getattr(base, k), tuple) and isinstance(v, list) else v
              for k, v in saved.items()}
    return dataclasses.replace(base, **values)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def check_fields(config, *, positive_int=(), nonnegative_int=(), positive=(), nonnegative=(),
                 unit_interval=(), open_unit=(), ordered=(), within_limit=(), choices=None,
                 subsets=None) -> None:
    """Validate fields of an experiment config; the first violation raises ``ValueError``
    naming the field, its value and a ``--set`` that fixes it.

    ``positive_int``/``nonnegative_int``: ints > 0 / >= 0; ``positive``/``nonnegative``:
    finite numbers > 0 / >= 0; ``unit_interval``: in (0, 1]; ``open_unit``: in [0, 1);
    ``ordered``: pairs ``(lo, hi)`` that must satisfy ``lo <= hi``; ``within_limit``: pairs
    ``(n, limit)`` with ``n <= limit`` unless ``limit`` is 0 (no limit); ``choices``:
    ``{field: allowed}``; ``subsets``: ``{field: allowed}`` for tuple fields.
    """
    def fail(name, need, example):
        raise ValueError(f"config field `{name}` must be {need}, got {getattr(config, name)!r}; "
                         f"fix it with --set {name}={example}.")

    for name in positive_int:
        if not _int(getattr(config, name)) or getattr(config, name) < 1:
            fail(name, "an int >= 1", 1)
    for name in nonnegative_int:
        if not _int(getattr(config, name)) or getattr(config, name) < 0:
            fail(name, "an int >= 0", 0)
    for name in positive:
        if not _num(getattr(config, name)) or getattr(config, name) <= 0:
            fail(name, "a finite number > 0", "<a positive number>")
    for name in nonnegative:
        if not _num(getattr(config, name)) or getattr(config, name) < 0:
            fail(name, "a finite number >= 0", 0)
    for name in unit_interval:
        if not _num(getattr(config, name)) or not 0 < getattr(config, name) <= 1:
            fail(name, "in (0, 1]", 0.5)
    for name in open_unit:
        if not _num(getattr(config, name)) or not 0 <= getattr(config, name) < 1:
            fail(name, "in [0, 1)", 0.9)
    for lo, hi in ordered:
        a, b = getattr(config, lo), getattr(config, hi)
        if a > b:
            raise ValueError(f"config field `{lo}` ({a}) must be <= `{hi}` ({b}); swap them "
                             f"(--set {lo}={b} --set {hi}={a}) or change one.")
    for name, limit in within_limit:
        n, cap = getattr(config, name), getattr(config, limit)
        if cap and n > cap:
            raise ValueError(f"`{name}` ({n}) exceeds `{limit}` ({cap}); fix it with --set {name}={cap} "
                             f"or --set {limit}=0 (no limit).")
    for name, allowed in (choices or {}).items():
        if getattr(config, name) not in allowed:
            fail(name, f"one of {tuple(allowed)}", tuple(allowed)[0])
    for name, allowed in (subsets or {}).items():
        value = getattr(config, name)
        unknown = [v for v in value if v not in allowed]
        if not value or unknown:
            raise ValueError(f"config field `{name}` must be a non-empty comma list from {tuple(allowed)}, "
                             f"got {value!r}{f' (unknown: {unknown})' if unknown else ''}; fix it with "
                             f"--set {name}={','.join(allowed)}.")


def fingerprint(config, ignore: Sequence[str] = ()) -> dict:
    """The config fields that shape a training run (all but ``ignore``: paths, evaluation
    and logging settings), for ``fit(..., fingerprint=...)``: a checkpoint written under
    another fingerprint is refused on resume instead of silently mixing two runs."""
    return {k: v for k, v in to_dict(config).items() if k not in set(ignore)}
