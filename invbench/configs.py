"""Where the configuration files are: `conf/` of the checkout this code runs from, or the copy an installed package
ships inside `invbench` (pyproject.toml maps `conf/` to the package `invbench.conf`), so that the console scripts
work after a plain `pip install .` from any directory while `python launch.py` in a clone reads the clone's files."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The folder holding config.yaml and one folder per config group."""
    for candidate in (_HERE / "conf", _HERE.parent / "conf"):  # installed copy first: a site-packages/conf is not ours
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no configuration folder: neither {_HERE / 'conf'} nor {_HERE.parent / 'conf'} exists")
