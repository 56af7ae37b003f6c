"""Command-line conveniences shared by launch.py and score.py (and their console scripts, invbench and invbench-score). Importing this module puts the process offline
(invbench/offline.py), before anything imports a model library."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from invbench.offline import stay_offline

stay_offline()

import orchestration.resolvers  # noqa: F401  (conf/config.yaml names folders with them)
from invbench.configs import config_dir
from invbench.errors import InvbenchError, OutputFault

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


@contextmanager
def exit_on_user_error(log: logging.Logger, in_sweep: bool = False) -> Iterator[None]:
    """A user's mistake (an InvbenchError) is logged with what to fix and ends the program with exit code 2,
    without a traceback; anything else propagates. In a sweep's job the error propagates after the log line, so
    that the launcher records this job as failed and the sweep goes on with the others.

    A fault of the machine (OutputFault: a full disk, a read-only or vanished folder) ends the program with exit code
    3 and its one message, a local sweep included: its next jobs would meet the same disk. A job that submitit runs
    (Slurm, submitit_local) lets it propagate instead, so that the launcher reports it as that job's failure."""
    try:
        yield
    except InvbenchError as error:
        log.error("%s", error)
        if in_sweep:
            raise
        sys.exit(2)
    except OutputFault as fault:
        log.error("%s", fault)
        if in_sweep and os.environ.get("SUBMITIT_FOLDER"):
            raise
        sys.exit(OutputFault.EXIT_CODE)


def start(main: Callable[[], None]) -> None:
    """Run a Hydra entry point with its group choices spelled as the configuration folder names them."""
    sys.argv = normalise_group_choices(sys.argv, config_dir())
    main()
