"""What there is to run, read from conf/ and the method registries: every config group with its options and one line
on each, the models with their families, the methods with the families they support, and the inversion × editor
pairs that compose on a model.

    invbench-pairs model=sd3_tiny                    # the pairs that run on a model (python -m orchestration.catalog)
    invbench-pairs model=tiny guidance_scale=1       # ... under other run-level settings
    python -m orchestration.catalog --write docs     # regenerate docs/reference/*.md (a test keeps them fresh)

A pair composes when both methods support the model's family and orchestration/compatibility.py finds nothing that
refuses it, for the methods as conf/ composes them with that model: the same checks a sweep runs before launching.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from invbench.configs import config_dir
from invbench.errors import ConfigError
from invbench.markdown import markdown_table

METHOD_AXES = ("inversion", "editor")
# the embedded model of each family: the pairs page lists what composes on it
FAMILY_MODELS = {"sd": "tiny", "sdxl": "sdxl_tiny", "sd3": "sd3_tiny", "flux": "flux_tiny"}
GENERATED_NOTE = "Generated from conf/ and the method registries by `python -m orchestration.catalog --write docs` (a test fails when this page and the code differ)."  # fmt: skip


def groups() -> dict[str, list[str]]:
    """Config group -> its options (file names), from conf/."""
    root = config_dir()
    return {
        folder.name: sorted(path.stem for path in folder.glob("*.yaml"))
        for folder in sorted(root.iterdir())
        if folder.is_dir() and any(folder.glob("*.yaml")) and not folder.name.startswith(("_", "local"))
    }


def summary(group: str, option: str) -> str:
    """The first sentence of an option file's leading comment: what it is, in one line."""
    lines = []
    for line in (config_dir() / group / f"{option}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("@package"):
            continue
        lines.append(text)
    text = " ".join(lines)
    first = re.split(r"(?<=[.;])\s+(?=[A-Z(`])", text, maxsplit=1)[0]
    return first.rstrip(".;:") if first else "-"


@cache
def composed(overrides: tuple[str, ...]) -> dict[str, Any]:
    """config.yaml composed with `overrides`, resolved, as launch.py composes a job."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return OmegaConf.to_container(compose("config", list(overrides)), resolve=True)


def method(axis: str, option: str, overrides: tuple[str, ...] = ()):
    """The method conf/<axis>/<option>.yaml builds, composed with `overrides` (the model, run-level settings)."""
    from editors import EDITORS
    from inversions import INVERSIONS

    registry = {"inversion": INVERSIONS, "editor": EDITORS}[axis]
    return registry.build(composed((*overrides, f"{axis}={option}"))[axis])


def registered_class(axis: str, option: str):
    """The registered class behind an option file, following a variant's defaults list to its base."""
    from editors import EDITORS
    from inversions import INVERSIONS

    node = yaml.safe_load((config_dir() / axis / f"{option}.yaml").read_text(encoding="utf-8"))
    while "name" not in node:
        base = next(item for item in node["defaults"] if item != "_self_")
        node = yaml.safe_load((config_dir() / axis / f"{base}.yaml").read_text(encoding="utf-8"))
    return {"inversion": INVERSIONS, "editor": EDITORS}[axis].get(node["name"])


def model_family(model: str) -> str:
    return composed((f"model={model}",))["model"]["family"]


def valid_pairs(
    model: str, overrides: Sequence[str] = ()
) -> tuple[list[tuple[str, str]], dict[tuple[str, str], list[str]]]:
    """(the inversion × editor options that compose on `model`, {refused pair: reasons}) under `overrides`.
    Pairs where a method does not support the model's family are in neither."""
    from orchestration.compatibility import incompatibilities

    settings = (f"model={model}", *overrides)
    family = composed(settings)["model"]["family"]
    options = {
        axis: [name for name in groups()[axis] if family in registered_class(axis, name).families]
        for axis in METHOD_AXES
    }
    inversions = {name: method("inversion", name, settings) for name in options["inversion"]}
    editors = {name: method("editor", name, settings) for name in options["editor"]}
    valid, refused = [], {}
    for inversion_name, inversion in inversions.items():
        for editor_name, editor in editors.items():
            problems = incompatibilities(inversion, editor)
            if problems:
                refused[inversion_name, editor_name] = problems
            else:
                valid.append((inversion_name, editor_name))
    return valid, refused


def options_page() -> str:
    """docs/reference/options.md: each config group, its options, what each is; models with their families; methods
    with the families they support."""
    lines = ["# Options", "", GENERATED_NOTE, "", ("Pick one option per group (`launch.py inversion=nti editor=p2p`), "
             "sweep several (`-m inversion=nti,todinv`). Which pairs compose on each model: [pairs](pairs.md)."), ""]  # fmt: skip
    for group, names in groups().items():
        if group in ("model", *METHOD_AXES):
            continue
        lines += [f"## `{group}`", "", markdown_table(["option", "what it is"],
                                                        [[f"`{name}`", summary(group, name)] for name in names]), ""]  # fmt: skip
    lines += ["## `model`", ""]
    rows = [[f"`{name}`", f"`{model_family(name)}`", summary("model", name)] for name in groups()["model"]]
    lines += [markdown_table(["option", "family", "what it is"], rows), ""]
    for axis in METHOD_AXES:
        rows = [
            [f"`{name}`", ", ".join(f"`{family}`" for family in sorted(registered_class(axis, name).families)),
             knobs_cell(axis, name), summary(axis, name)]
            for name in groups()[axis]
        ]  # fmt: skip
        header = ["option", "families", "frontier knobs ([frontiers](../frontiers.md))", "what it is"]
        lines += [f"## `{axis}`", "", markdown_table(header, rows), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def knobs_cell(axis: str, option: str) -> str:
    """The trade-off knobs an option declares, as `name` low–high (scale), from its composed configuration."""
    from editors import EDITORS
    from inversions import INVERSIONS

    registry = {"inversion": INVERSIONS, "editor": EDITORS}[axis]
    families = registered_class(axis, option).families
    family = "sd" if "sd" in families else min(families)
    node = composed((f"model={FAMILY_MODELS[family]}", f"{axis}={option}"))[axis]
    return (
        "<br>".join(
            f"`{knob.name}` {knob.low:g}–{knob.high:g}" + (f" ({knob.scale})" if knob.scale != "linear" else "")
            for knob in registry.knobs(node, axis)
        )
        or "-"
    )


def pairs_page() -> str:
    """docs/reference/pairs.md: per model family, each editor with the inversions it composes with."""
    lines = ["# Which pairs compose", "", GENERATED_NOTE, "",
             ("Per model family, on its embedded model at the default run-level settings (`num_steps`, "
             "`guidance_scale`): each editor and the inversions it runs with. Another model or setting: "
             "`invbench-pairs model=<model> [settings]`. A sweep checks every job the same way before launching any."),
             ""]  # fmt: skip
    for family, model in FAMILY_MODELS.items():
        valid, _ = valid_pairs(model)
        by_editor: dict[str, list[str]] = {}
        for inversion, editor in valid:
            by_editor.setdefault(editor, []).append(inversion)
        rows = [
            [f"`{editor}`", ", ".join(f"`{name}`" for name in inversions)] for editor, inversions in by_editor.items()
        ]
        lines += [f"## `{family}` (`model={model}`): {len(valid)} pairs", "",
                  markdown_table(["editor", "inversions"], rows), ""]  # fmt: skip
    return "\n".join(lines).rstrip("\n") + "\n"


PAGES = {"reference/options.md": options_page, "reference/pairs.md": pairs_page}


def print_pairs(arguments: Sequence[str]) -> int:
    models = [argument.split("=", 1)[1] for argument in arguments if argument.startswith("model=")]
    overrides = [argument for argument in arguments if not argument.startswith("model=")]
    if len(models) != 1 or any("=" not in argument for argument in overrides):
        print(
            "usage: invbench-pairs model=<name> [key=value ...]   e.g. invbench-pairs model=sd3_tiny", file=sys.stderr
        )
        print(f"models: {', '.join(groups()['model'])}", file=sys.stderr)
        return 2
    try:
        valid, refused = valid_pairs(models[0], overrides)
    except ConfigError as error:
        print(f"invbench-pairs: {error}", file=sys.stderr)
        return 2
    print(f"{len(valid)} inversion × editor pairs compose on model={models[0]} ({model_family(models[0])} family)"
          + (f" with {' '.join(overrides)}" if overrides else "") + ":")  # fmt: skip
    print(markdown_table(["inversion", "editor"], [[inversion, editor] for inversion, editor in valid]))
    if refused:
        print(f"\n{len(refused)} pairs of methods supporting the family are refused:")
        for (inversion, editor), problems in refused.items():
            print(f"  {inversion} + {editor}: {problems[0]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--write"]:
        parser = argparse.ArgumentParser(prog="python -m orchestration.catalog")
        parser.add_argument("--write", type=Path, required=True, help="the docs folder to write reference/ into")
        docs = parser.parse_args(arguments).write
        for name, page in PAGES.items():
            (docs / name).parent.mkdir(parents=True, exist_ok=True)
            (docs / name).write_text(page(), encoding="utf-8")
            print(f"wrote {docs / name}")
        return 0
    return print_pairs(arguments)


def pairs_entry() -> None:
    """The `invbench-pairs` console script."""
    from invbench.offline import stay_offline

    stay_offline()
    sys.exit(main())


if __name__ == "__main__":
    pairs_entry()
