"""A small explicit name -> class registry (one per axis: inversions, editors, metric suites, loggers).

Methods are dataclasses whose fields are their hyperparameters, with no defaults in code: every value comes from
`conf/<axis>/<name>.yaml`, so the YAML file is the single place a hyperparameter is set. Building one checks every
value against its field's annotated type and range (invbench/hyperparameters.py) before anything loads.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from invbench.errors import ConfigError
from invbench.hyperparameters import Knob, check_fields, check_knobs

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

    def build(self, config: Mapping[str, Any], key: str | None = None) -> T:
        """Instantiate from a config node `{name: ..., <hyperparameter>: value, ...}`; `key` is where the node sits
        in the job configuration (default: the axis), for messages."""
        params = dict(config)
        declared_knobs = params.pop("frontier", None)  # the method's trade-off knobs, not a hyperparameter
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
        # Types and ranges; Hydra reads `guidance_scale=1` as an int, and the float field then holds 1.0, so that 1
        # and 1.0 are one configuration (same hash, same row values).
        params = check_fields(cls, params, where, f"{key or self.axis}.")
        check_knobs(cls, declared_knobs, where, f"{key or self.axis}.")
        return cls(**params)

    def knobs(self, config: Mapping[str, Any], key: str | None = None) -> list[Knob]:
        """The trade-off knobs a method's config node declares (`frontier:`), checked; [] when it declares none."""
        cls = self.get(config.get("name"))
        return check_knobs(
            cls, config.get("frontier"), f"conf/{self.axis}/{config.get('name')}.yaml", f"{key or self.axis}."
        )


def hyperparameters(method: Any) -> dict[str, Any]:
    """The name and hyperparameters of a built method, as recorded in result rows and hashed."""
    return {"name": method.name, **dataclasses.asdict(method)}


def import_submodules(package: str, path: Iterable[str]) -> list[str]:
    """Import every module of a package (call from its __init__ with __name__, __path__), so that each registers
    what it defines: a new method is its own file and YAML, with no list to edit. Returns the modules' names."""
    names = sorted(module.name for module in pkgutil.iter_modules(list(path)) if not module.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
