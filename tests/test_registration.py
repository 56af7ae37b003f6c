"""A method is registered by its own file alone: the method packages import every module they hold."""

from __future__ import annotations

import importlib
import sys
import textwrap

from invbench.registry import Registry, import_submodules


def test_a_new_file_in_a_method_package_registers_itself(tmp_path, monkeypatch):
    package = tmp_path / "methods_under_test"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from invbench.registry import Registry, import_submodules\n"
        "METHODS = Registry('method')\n"
        "import_submodules(__name__, __path__)\n"
    )
    for name in ("alpha", "beta", "_private"):
        (package / f"{name}.py").write_text(
            textwrap.dedent(f"""
                from dataclasses import dataclass
                from methods_under_test import METHODS

                @METHODS.register("{name.strip("_")}")
                @dataclass
                class Method:
                    steps: int
            """)
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("methods_under_test")
        # every public module registered itself; a leading underscore marks a helper that is not imported
        assert sorted(module.METHODS.names()) == ["alpha", "beta"]
        assert module.METHODS.build({"name": "beta", "steps": 3}).steps == 3
    finally:
        for name in [name for name in sys.modules if name.startswith("methods_under_test")]:
            del sys.modules[name]


def test_the_shipped_packages_import_every_module():
    import editors
    import inversions

    for package in (inversions, editors):
        names = import_submodules(package.__name__, package.__path__)
        assert all(f"{package.__name__}.{name}" in sys.modules for name in names)
        assert "base" in names and len(names) >= 8
    assert isinstance(inversions.INVERSIONS, Registry) and "p2p_edict" in editors.EDITORS.names()
