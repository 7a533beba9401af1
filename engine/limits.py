"""Ranges of numeric settings, carried in the config dataclasses' type annotations and checked at the
command line's boundary.

A field written `fps: Annotated[int, Range(1, 60)] = 25` is still a plain `int` to tyro and to the code
that reads it; `validate(config)` walks a (nested) config dataclass and raises `ValueError` naming the
command-line option and its valid range for the first value out of range, before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """A closed range [lo, hi] (either end may be open-ended: None); `above` makes the lower end
    exclusive (lo < value)."""

    lo: float | None = None
    hi: float | None = None
    above: bool = False

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None and not self.above:
            return f"from {_num(self.lo)} to {_num(self.hi)}"
        parts = []
        if self.lo is not None:
            parts.append(f"{'above' if self.above else 'at least'} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"at most {_num(self.hi)}")
        return " and ".join(parts) or "any number"

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.above else value < self.lo):
            return False
        return self.hi is None or value <= self.hi


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def option(name: str) -> str:
    """The command-line spelling of a config field."""
    return "--" + name.replace("_", "-")


def validate(config: object) -> None:
    """Check every `Range`-annotated field of `config` and of the dataclasses nested in it."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return
    hints = typing.get_type_hints(type(config), include_extras=True)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        hint = hints.get(f.name)
        ranges = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Range)]
        for r in ranges:
            values = value if isinstance(value, tuple) else (value,)
            for v in values:
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not r.contains(v):
                    raise ValueError(f"{option(f.name)} {v!r} is out of range: it must be {r.describe()}.")
        if dataclasses.is_dataclass(value):
            validate(value)
