"""The layer order of the code, as one table, read from the source: a module imports only from its own layer and the
layers below it. Every import counts, including those inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Bottom to top. Each entry: (layer, the top-level packages and scripts in it, why it sits there).
LAYERS = [
    ("core", {"invbench"}, ("models, backbones, schedules, attention control, tokenizer, registry, hyperparameter "
     "types, the row schema and the job-folder formats")),
    ("data", {"pie_bench"}, "datasets in the PIE-Bench format, read and checked before any model loads"),
    ("metrics", {"metrics"}, "the metric suite and its backbones (StyleDiffusion's CLIP image tower comes from them)"),
    ("inversions", {"inversions"}, "inversion methods and the inversion result, the contract editors consume"),
    ("editors", {"editors"}, "editing methods, consuming an inversion result"),
    ("reports", {"reports"}, "tables, statistics, figures, gallery, published values: read result rows only"),
    ("orchestration", {"orchestration"}, "a job: runner, evaluation, configuration and pair checks, cache, loggers"),
    ("faces", {"launch", "aggregate", "score", "hydra_plugins", "benchmarks"}, "what users and the tools run"),
]  # fmt: skip
LAYER_OF = {name: level for level, (_, names, _) in enumerate(LAYERS) for name in names}
NOT_CODE = {"tests", "docs", "conf", "tools", "build", "dist", "site"}


def imported(path: Path) -> set[str]:
    """Absolute module names a file imports, wherever the import statement is."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top_level(path: Path) -> str:
    first = path.relative_to(REPO).parts[0]
    return first.removesuffix(".py")


def our_python_files() -> list[Path]:
    files = []
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if parts[0].startswith(".") or parts[0] in NOT_CODE or "oracle" in parts[:2] and parts[0] == "benchmarks":
            continue  # the oracle scripts run reference code outside our layers
        files.append(path)
    return files


def against_the_order(path: Path) -> list[str]:
    level = LAYER_OF[top_level(path)]
    return sorted(
        name for name in imported(path) if name.split(".")[0] in LAYER_OF and LAYER_OF[name.split(".")[0]] > level
    )


def test_every_package_and_script_has_a_layer():
    assert {top_level(path) for path in our_python_files()} <= set(LAYER_OF)
    packages = {path.parent.relative_to(REPO).parts[0] for path in REPO.glob("*/__init__.py")}
    assert packages - NOT_CODE <= set(LAYER_OF)


def test_no_import_runs_against_the_layer_order():
    files = our_python_files()
    assert len(files) > 100  # the walk found the code
    bad = {str(path.relative_to(REPO)): against_the_order(path) for path in files}
    assert {path: names for path, names in bad.items() if names} == {}


def test_the_check_reads_every_kind_of_import(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nimport os\nif TYPE_CHECKING:\n    from editors.p2p import P2P\n"
        "def f():\n    import orchestration.runner\n    from . import sibling\n"
    )
    assert imported(module) == {"typing", "os", "editors.p2p", "orchestration.runner"}
    core_file = REPO / "invbench" / "module.py"  # where the check would place it
    level = LAYER_OF[top_level(core_file)]
    assert sorted(
        n for n in imported(module) if n.split(".")[0] in LAYER_OF and LAYER_OF[n.split(".")[0]] > level
    ) == [
        "editors.p2p",
        "orchestration.runner",
    ]


@pytest.mark.ci_only  # about 30 s on 2 cores (a fresh interpreter per package); .ci/run runs it
def test_every_package_imports_first_in_a_fresh_interpreter():
    """No import cycle hides behind the order a test session happens to import things in."""
    import subprocess
    import sys

    for package in ("inversions", "editors", "metrics", "invbench.models", "orchestration.runner", "pie_bench"):
        done = subprocess.run([sys.executable, "-c", f"import {package}"], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, (package, done.stderr[-2000:])
