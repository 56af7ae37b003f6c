"""A small explicit name -> class registry (one per axis: inversions, editors, model loaders).

Methods are dataclasses whose fields are their hyperparameters, with no defaults in code: every value comes from
`conf/<axis>/<name>.yaml`, so the YAML file is the single place a hyperparameter is set.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from invbench.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, axis: str):
        self.axis = axis
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        key = name.lower()

        def add(cls: type[T]) -> type[T]:
            if key in self._entries:
                raise ValueError(f"{self.axis} '{name}' is registered twice")
            self._entries[key] = cls
            cls.name = name
            return cls

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        try:
            return self._entries[str(name).lower()]
        except KeyError:
            raise ConfigError(
                f"unknown {self.axis} '{name}'. Available: {', '.join(self.names())}. "
                f"Pick one with {self.axis}=<name> (a file conf/{self.axis}/<name>.yaml)."
            ) from None

    def build(self, config: Mapping[str, Any]) -> T:
        """Instantiate from a config node `{name: ..., <hyperparameter>: value, ...}`."""
        params = dict(config)
        name = params.pop("name", None)
        if name is None:
            raise ConfigError(f"conf/{self.axis}/*.yaml must set 'name' (one of: {', '.join(self.names())})")
        cls = self.get(name)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(params) - fields)
        missing = sorted(f for f in fields - set(params))
        where = f"conf/{self.axis}/{name}.yaml"
        if unknown:
            raise ConfigError(
                f"{where}: unknown hyperparameter(s) {unknown} for {self.axis} '{name}'; it accepts {sorted(fields)}"
            )
        if missing:
            raise ConfigError(f"{where}: missing hyperparameter(s) {missing} for {self.axis} '{name}'")
        # Hydra reads `guidance_scale=1` as an int; store it as the float the method declares, so that 1 and 1.0
        # are one configuration (same hash, same row values).
        hints = typing.get_type_hints(cls)
        for key, value in params.items():
            if hints.get(key) is float and isinstance(value, int) and not isinstance(value, bool):
                params[key] = float(value)
        return cls(**params)


def hyperparameters(method: Any) -> dict[str, Any]:
    """The name and hyperparameters of a built method, as recorded in result rows and hashed."""
    return {"name": method.name, **dataclasses.asdict(method)}
