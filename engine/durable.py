"""Making a rename durable: fsync of the folder that holds the new name.

After ``os.replace`` the new directory entry survives a power loss only once the folder
itself is fsynced. The journal (its file's creation) and the engine (shards, published
files) both need it; it lives here, below both, so neither imports the other for it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync the folder ``path`` (its entries: names created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
