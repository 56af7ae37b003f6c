"""The layered core, read from the source: the bottom (models, schedules, attention, registry and the other
building blocks in invbench/, and editors/attention.py) imports no method, metric, dataset or report module, and
methods never import the orchestration (runner, evaluation, job checks). Every import counts, including those inside
functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ORCHESTRATION = {
    "runner", "evaluation", "job_config", "compatibility", "hydra_callbacks", "resolvers", "cli", "prompt_limits"
}  # fmt: skip
UPPER_PACKAGES = ("editors", "inversions", "metrics", "reports", "pie_bench")


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def reaches(names: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(name for name in names if name.split(".")[0] in packages)


def test_the_core_imports_no_method_metric_dataset_or_report():
    core = [path for path in (REPO / "invbench").rglob("*.py") if path.stem not in ORCHESTRATION]  # backbones too
    core.append(REPO / "editors" / "attention.py")
    assert len(core) >= 15
    bad = {str(path.relative_to(REPO)): reaches(imported(path), UPPER_PACKAGES) for path in core}
    assert not {path: names for path, names in bad.items() if names}
    attention = imported(REPO / "editors" / "attention.py")
    assert not [name for name in attention if name.startswith("editors.") or name == "editors"]


def test_methods_never_import_the_orchestration():
    orchestration = {f"invbench.{name}" for name in ORCHESTRATION}
    for package in ("inversions", "editors", "metrics", "pie_bench"):
        for path in (REPO / package).glob("*.py"):
            assert not imported(path) & orchestration, path


def test_the_check_reads_every_kind_of_import(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nimport os\nif TYPE_CHECKING:\n    from editors.p2p import P2P\n"
        "def f():\n    import inversions.ddim\n    from . import sibling\n"
    )
    assert reaches(imported(module), UPPER_PACKAGES) == ["editors.p2p", "inversions.ddim"]


@pytest.mark.ci_only  # about 30 s on 2 cores (a fresh interpreter per package); .ci/run runs it
def test_every_package_imports_first_in_a_fresh_interpreter():
    """No import cycle hides behind the order a test session happens to import things in."""
    import subprocess
    import sys

    for package in ("inversions", "editors", "metrics", "invbench.models", "invbench.runner", "pie_bench"):
        done = subprocess.run([sys.executable, "-c", f"import {package}"], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, (package, done.stderr[-2000:])
