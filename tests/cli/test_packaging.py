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
