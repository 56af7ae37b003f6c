"""Types and ranges of hyperparameters, checked when a method is built from its YAML, before any model loads.

A method's dataclass fields are its hyperparameters; their annotations say the type (int, float, bool, str, a
Literal of choices, `X | None`, list[...] or dict[...]) and, through `Annotated`, the accepted range:

    num_steps: Steps                                   # an int >= 1
    guidance_scale: Guidance                           # a float >= 0
    cross_replace_steps: Annotated[float, between(0, 1)]

`check_fields` turns a wrong value into a ConfigError that names the key, the value and what is accepted, so
`inversion.num_steps=-5`, `editor.guidance_scale=abc` or `num_steps=2.5` stop the job with exit code 2 instead of
running zero steps or failing every sample later.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np

from invbench.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """low <= value <= high (or < where open); None: unbounded. `multiple_of`: the value is a multiple of it."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    multiple_of: int | None = None

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return self.multiple_of is None or value % self.multiple_of == 0

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        if self.multiple_of is not None:
            parts.append(f"a multiple of {self.multiple_of}")
        return " and ".join(parts)


def at_least(low: float) -> Range:
    return Range(low=low)


def above(low: float) -> Range:
    return Range(low=low, low_open=True)


def between(low: float, high: float) -> Range:
    return Range(low=low, high=high)


Steps = Annotated[int, at_least(1)]  # a number of steps or iterations that must happen at least once
Count = Annotated[int, at_least(0)]  # a number of iterations or items that may be zero
Guidance = Annotated[float, at_least(0)]  # a classifier-free guidance scale
Fraction = Annotated[float, between(0, 1)]  # a share of the denoising steps, a probability, a quantile
Positive = Annotated[float, above(0)]  # a learning rate, a threshold
NonNegative = Annotated[float, at_least(0)]  # a loss weight, a step size that may be switched off with 0


def check_fields(cls: type, values: Mapping[str, Any], where: str, prefix: str) -> dict[str, Any]:
    """`values` checked against the annotated fields of dataclass `cls`; returns them with ints given for floats
    converted (so that 1 and 1.0 are one configuration). `where` names the file, `prefix` the config key."""
    hints = typing.get_type_hints(cls, include_extras=True)
    checked = dict(values)
    for field in dataclasses.fields(cls):
        if field.init and field.name in checked:
            checked[field.name] = check_value(hints[field.name], checked[field.name], f"{prefix}{field.name}", where)
    return checked


def check_value(hint: Any, value: Any, key: str, where: str) -> Any:
    """`value` of config key `key` checked against type hint `hint` (see the module docstring)."""
    ranges = []
    while typing.get_origin(hint) is Annotated:
        hint, *metadata = typing.get_args(hint)
        ranges += [item for item in metadata if isinstance(item, Range)]
    converted, expected = _convert(hint, value)
    if expected is not None:
        raise ConfigError(f"{key}={value!r} is not {expected} ({where}). Set {key} to {expected}.")
    for accepted in ranges:
        if converted is not None and not accepted.contains(converted):
            raise ConfigError(
                f"{key}={value!r} is out of range ({where}): it must be {accepted.describe()}. "
                f"Set {key} to a value {accepted.describe()}."
            )
    return converted


def _convert(hint: Any, value: Any) -> tuple[Any, str | None]:
    """(the value as the field holds it, None) or (None, a description of what was expected)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value, None
    if origin is Annotated:  # a range inside a union or a list: `int >= 1 | None`, `list[int in [0, 9]]`
        inner, *metadata = typing.get_args(hint)
        converted, expected = _convert(inner, value)
        ranges = [item for item in metadata if isinstance(item, Range)]
        if expected is None and all(accepted.contains(converted) for accepted in ranges):
            return converted, None
        return None, " ".join([expected or _describe(inner), *(accepted.describe() for accepted in ranges)])
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None, None
        expectations = []
        for option in (o for o in options if o is not type(None)):
            converted, expected = _convert(option, value)
            if expected is None:
                return converted, None
            expectations.append(expected)
        return None, " or ".join(expectations + (["null"] if type(None) in options else []))
    if origin is Literal:
        choices = typing.get_args(hint)
        return (value, None) if value in choices else (None, f"one of {', '.join(map(repr, choices))}")
    if hint is bool:
        return (value, None) if isinstance(value, bool) else (None, "true or false")
    if hint is int:
        return (value, None) if isinstance(value, int) and not isinstance(value, bool) else (None, "an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), None
        return None, "a number"
    if hint is str:
        return (value, None) if isinstance(value, str) else (None, "a string")
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            return None, f"a list of {_plural(item)}"
        converted = []
        for element in value:
            element, expected = _convert(item, element)
            if expected is not None:
                return None, f"a list of {_plural(item)}"
            converted.append(element)
        return converted, None
    if origin is dict or hint is dict:
        return (value, None) if isinstance(value, Mapping) else (None, "a mapping of keys to values")
    return value, None  # a type this module does not check (e.g. a nested method's own dataclass)


def _describe(hint: Any) -> str:
    """What a value of `hint` is, in words: 'an integer', 'a number', ..."""
    return _convert(hint, object())[1] or str(hint)


def _plural(hint: Any) -> str:
    """'integers >= 1', 'numbers', ...: the elements a list field holds."""
    ranges = []
    while typing.get_origin(hint) is Annotated:
        hint, *metadata = typing.get_args(hint)
        ranges += [item.describe() for item in metadata if isinstance(item, Range)]
    words = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, str(hint))
    return " ".join([words, *ranges])


KNOB_SCALES = ("linear", "log", "int")


@dataclasses.dataclass(frozen=True)
class Knob:
    """A trade-off knob a method declares in its YAML (`frontier: {<field>: {low, high, scale}}`): a hyperparameter
    that moves the method along its preservation–editability curve, and the range a frontier sweep covers."""

    name: str
    low: float
    high: float
    scale: str = "linear"

    def values(self, points: int) -> list[float | int]:
        """`points` settings from low to high (fewer for an integer knob with fewer values), ends included."""
        if points < 2:
            raise ConfigError(f"frontier.points={points}: a frontier needs at least 2 points per knob")
        if self.scale == "log":
            found = [float(v) for v in np.geomspace(self.low, self.high, points)]
        else:
            found = [float(v) for v in np.linspace(self.low, self.high, points)]
        if self.scale == "int":
            return list(dict.fromkeys(round(v) for v in found))
        return [round(v, 6) for v in found]


def check_knobs(cls: type, declared: Any, where: str, prefix: str) -> list[Knob]:
    """A method's `frontier` declaration checked: each knob a hyperparameter of `cls`, both ends valid values of
    it, low < high, a known scale (log: both ends > 0)."""
    if declared is None:
        return []
    if not isinstance(declared, Mapping):
        raise ConfigError(f"{prefix}frontier must map knob names to {{low, high, scale}} ({where})")
    fields = {field.name for field in dataclasses.fields(cls) if field.init}
    knobs = []
    for name, spec in declared.items():
        key = f"{prefix}frontier.{name}"
        if name not in fields:
            raise ConfigError(
                f"{key}: '{name}' is not a hyperparameter of this method ({where}); it has {sorted(fields)}"
            )
        if not isinstance(spec, Mapping) or not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "scale"}:
            raise ConfigError(f"{key} must be {{low: <value>, high: <value>, scale: linear|log|int}} ({where})")
        scale = spec.get("scale", "linear")
        if scale not in KNOB_SCALES:
            raise ConfigError(f"{key}.scale={scale!r} is not one of {list(KNOB_SCALES)} ({where})")
        hint = typing.get_type_hints(cls, include_extras=True)[name]
        ends = {end: check_value(hint, spec[end], f"{key}.{end}", where) for end in ("low", "high")}
        if not ends["low"] < ends["high"] or (scale == "log" and ends["low"] <= 0):
            raise ConfigError(f"{key}: low={ends['low']!r} must be below high={ends['high']!r}"
                              + (" and above 0 on a log scale" if scale == "log" else "") + f" ({where})")  # fmt: skip
        knobs.append(Knob(name, ends["low"], ends["high"], scale))
    return knobs
