"""Range checks of config fields (each config's ``validate`` calls them): the first violation
raises ``ValueError`` naming the field, its value and a ``--set`` that fixes it."""
from __future__ import annotations

from dsm_jax import validation
from dsm_jax.config.fields import get


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

    number, integer = validation.is_finite_number, validation.is_int
    ranges = (  # (fields, the test each value must pass, what it must be, a --set example), in this order
        (positive_int, lambda v: integer(v) and v >= 1, "an int >= 1", 1),
        (nonnegative_int, lambda v: integer(v) and v >= 0, "an int >= 0", 0),
        (positive, lambda v: number(v) and v > 0, "a finite number > 0", "<a positive number>"),
        (nonnegative, lambda v: number(v) and v >= 0, "a finite number >= 0", 0),
        (unit_interval, lambda v: number(v) and 0 < v <= 1, "in (0, 1]", 0.5),
        (open_unit, lambda v: number(v) and 0 <= v < 1, "in [0, 1)", 0.9),
    )
    for names, ok, need, example in ranges:
        for name in given(names):
            if not ok(value(name)):
                fail(name, need, example)
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
    if not validation.is_finite_number(value) or value < t_low:
        raise ValueError(f"config field `{path}` ({value}) must be >= the final temperature {t_low} (the chain "
                         f"anneals from `{path}` down to T = {t_low}); fix it with --set {path}={max(t_low, 10.0)}.")
