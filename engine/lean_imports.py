"""Libraries helmproc's own processes never use but would import anyway.

pyarrow checks on its first array whether a value is a pandas object, and to do so imports
pandas when it is installed (it often is: ``datasets`` needs it). That costs each process
that touches Arrow 0.3 s of CPU on a quiet machine (1-2 s under load) and tens of MB of
memory, in the CLI's process and again in every pool worker, for nothing: helmproc reads and
writes Arrow and Parquet only. ``refuse_pandas()`` makes ``import pandas`` fail in the calling
process, which pyarrow takes as "pandas is not installed".

Only processes helmproc owns call it (the CLI's ``main`` and the pool workers' initializer);
a program that imports ``helmproc.engine`` as a library keeps its pandas. Import state only:
nothing here outlives the process or a crash.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

REFUSED = "pandas"


class _Refuse(importlib.abc.MetaPathFinder):
    """A finder that says "no such module" for pandas and its submodules."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == REFUSED or fullname.startswith(REFUSED + "."):
            raise ModuleNotFoundError(f"helmproc does not use {REFUSED}", name=fullname)
        return None


def refuse_pandas() -> None:
    """Make ``import pandas`` fail in this process from now on (once; no effect if it is
    imported already)."""
    if REFUSED in sys.modules or any(isinstance(f, _Refuse) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Refuse())
