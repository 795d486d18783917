"""The installable package holds every module of the tree (``pip install .``, not editable)."""

from __future__ import annotations

import tomllib
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def test_every_package_of_the_tree_is_listed_in_pyproject() -> None:
    config = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {folder: name for name, folder in config["package-dir"].items()}
    in_tree = {
        ".".join([roots[init.parent.relative_to(CHECKOUT).parts[0]],
                  *init.parent.relative_to(CHECKOUT).parts[1:]])
        for root in roots
        for init in (CHECKOUT / root).rglob("__init__.py")
    }
    assert in_tree  # the walk found the packages
    assert sorted(config["packages"]) == sorted(in_tree)


def test_package_root_has_the_installed_version_and_runs_as_a_module(tmp_path: Path) -> None:
    """``helmproc.__version__`` is the installed distribution's version, and ``python -m
    helmproc`` is the command line (run from elsewhere: the installed package, not the tree)."""
    import importlib.metadata
    import subprocess
    import sys

    import helmproc

    assert helmproc.__version__ == importlib.metadata.version("helmproc")
    shown = subprocess.run(
        [sys.executable, "-m", "helmproc", "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "export-eee" in shown.stdout and "resume" in shown.stdout
