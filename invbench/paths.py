"""Relative paths that come from data (a mapping file's `image_path`, a result row's image columns): they must stay
inside the folder they are relative to, so that reading a source, writing an edit or linking an image never leaves
the data root or the job folder, whatever a file says."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from invbench.errors import OutputFault

PARTIAL_SUFFIX = ".partial"


def contained_path_problem(value: object, root: Path) -> str | None:
    """Why `value` is not a safe path relative to `root` (None when it is): it must be a non-empty relative
    '/'-separated path without '..' that, symlinks resolved, stays inside `root`."""
    if not isinstance(value, str) or not value.strip():
        return f"{value!r} is not a non-empty relative path"
    if "\\" in value:
        return f"'{value}' contains '\\'; separate folders with '/'"
    path = PurePosixPath(value)
    if path.is_absolute():
        return f"'{value}' is absolute"
    if ".." in path.parts:
        return f"'{value}' contains '..'"
    resolved, inside = (root / path).resolve(), root.resolve()
    if not resolved.is_relative_to(inside):
        return f"'{value}' resolves to {resolved}, outside {inside} (through a symbolic link)"
    return None


def normalised(value: str) -> PurePosixPath:
    """The canonical spelling of a path that passed `contained_path_problem` ('a//b/./c' -> 'a/b/c'), so that two
    spellings of one file are recognised as one."""
    return PurePosixPath(value)


def temporary_sibling(path: Path) -> Path:
    """Where to write `path` before renaming it into place: a hidden name that carries this process's id, so that
    two writers never rename each other's half-written file."""
    return path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def writing(what: str, path: Path) -> Iterator[None]:
    """Where invbench writes one of its own files: an OSError there is the machine's fault (a full disk, a read-only
    or vanished folder), never a sample's, and becomes an OutputFault that names `what` was being written where."""
    try:
        yield
    except OSError as error:
        raise OutputFault(what, path, error) from error


def remove_quietly(path: Path) -> None:
    """Delete a half-written file after a failed write; a folder that cannot be written cannot be cleaned either,
    and the next start removes what stays (job_folder.remove_stale_partials)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
