"""Which code and which libraries computed a row: recorded in every row and in run.json, and compared when a job
resumes in a folder, so that a folder never mixes rows of two code versions or two image-decoding stacks.

`code_version()`: the package version, the git commit of a checkout with a flag for uncommitted changes, and the
SHA-256 of invbench's own source files (what decides the result even where there is no git: an installed package,
or a checkout with changes the commit does not name). `library_versions()`: the libraries whose versions decide the
pixels and the numbers (torch, diffusers and transformers compute; Pillow and numpy decode and resize the images).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

# invbench's code: its packages and the scripts users run (tests and docs do not change a result)
SOURCE_PACKAGES = ("invbench", "pie_bench", "inversions", "editors", "metrics", "reports", "orchestration",
                   "hydra_plugins.invbench_launcher", "hydra_plugins.invbench_sweeper")  # fmt: skip
SOURCE_SCRIPTS = ("launch", "aggregate", "score")
LIBRARIES = {"torch": "torch", "diffusers": "diffusers", "transformers": "transformers", "Pillow": "pillow",
             "numpy": "numpy"}  # fmt: skip


@cache
def code_version() -> dict[str, Any]:
    """{"invbench": version, "git_commit": commit or None, "git_dirty": bool or None, "source_sha256": digest}."""
    import invbench

    commit, dirty = _git_state(Path(invbench.__file__).resolve().parent.parent)
    return {
        "invbench": invbench.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "source_sha256": source_digest(),
    }


def describe(version: Mapping[str, Any]) -> str:
    """'0.1.0, commit 1a2b3c4d5e6f with uncommitted changes, source 9f8e7d6c5b4a' for messages."""
    commit = version.get("git_commit")
    text = f"{version.get('invbench')}"
    if commit:
        text += f", commit {commit[:12]}" + (" with uncommitted changes" if version.get("git_dirty") else "")
    return text + f", source {str(version.get('source_sha256'))[:12]}"


def source_digest() -> str:
    """SHA-256 over invbench's Python files (relative path and bytes, in path order), wherever they are installed."""
    digest = hashlib.sha256()
    for name in SOURCE_PACKAGES + SOURCE_SCRIPTS:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations)))
            files = sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)
            base = root.parents[name.count(".")]
        else:
            files, base = [Path(spec.origin)], Path(spec.origin).parent
        for path in files:
            digest.update(path.relative_to(base).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def library_versions() -> dict[str, str | None]:
    versions = {}
    for name, distribution in LIBRARIES.items():
        try:
            versions[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def row_fields() -> dict[str, Any]:
    """What every result row records of the code and libraries that computed it."""
    return {"code_version": dict(code_version()), "library_versions": dict(library_versions())}


def differences(rows: list[Mapping[str, Any]]) -> list[str]:
    """How the code and libraries of earlier rows differ from this process's, one line each ([] when they do not, or
    when the rows predate these fields)."""
    now = row_fields()
    found: list[str] = []
    for row in rows:
        old_code, old_libraries = row.get("code_version"), row.get("library_versions")
        if isinstance(old_code, dict) and old_code.get("source_sha256") != now["code_version"]["source_sha256"]:
            line = f"invbench's code: {describe(old_code)} -> {describe(now['code_version'])}"
            if line not in found:
                found.append(line)
        if isinstance(old_libraries, dict):
            for name, version in now["library_versions"].items():
                if name in old_libraries and old_libraries[name] != version:
                    line = f"{name} {old_libraries[name]} -> {version}"
                    if line not in found:
                        found.append(line)
    return found


def _git_state(root: Path) -> tuple[str | None, bool | None]:
    """The commit of the checkout at `root` and whether it has uncommitted changes; (None, None) outside git."""
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())
