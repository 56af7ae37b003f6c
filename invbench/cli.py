"""Command-line conveniences shared by launch.py and evaluate.py."""

from __future__ import annotations

from pathlib import Path

_HYDRA_SYNTAX = set("[](){}'\"$:")


def normalise_group_choices(arguments: list[str], conf_dir: Path) -> list[str]:
    """Spell config-group choices as their files are named, matching case-insensitively: `inversion=ntI` and
    `-m inversion=NTI,todinv` select conf/inversion/nti.yaml. Hydra itself matches file names exactly; anything that
    is not a plain `group=choice[,choice...]` override, or has no unique match, is passed on unchanged."""
    normalised = []
    for argument in arguments:
        group, separator, value = argument.partition("=")
        folder = conf_dir / group
        if separator and group.isidentifier() and folder.is_dir() and not _HYDRA_SYNTAX & set(value):
            available = {path.stem.lower(): path.stem for path in folder.glob("*.yaml")}
            choices = [
                choice if (folder / f"{choice}.yaml").is_file() else available.get(choice.lower(), choice)
                for choice in value.split(",")
            ]
            argument = f"{group}={','.join(choices)}"
        normalised.append(argument)
    return normalised
