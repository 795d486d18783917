"""helmproc: HELM benchmark output into a Hugging Face dataset of Parquet shards (EEE shapes).

The package root only: the code lives in the repository's top-level folders, which this folder
links in as subpackages (``engine`` -> ``helmproc.engine``: the pipeline and its public Python
API; ``journal`` -> ``helmproc.journal``: the checkpoint journal; ``cli`` -> ``helmproc.cli``:
the ``helmproc`` command). Importing it imports nothing else.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("helmproc")
except PackageNotFoundError:  # a source tree that was never installed (pip install -e .)
    __version__ = "0+unknown"

__all__ = ["__version__"]
