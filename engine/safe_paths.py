"""Path safety: names from the input stay inside their folder; the job's own files stay private.

Two small rules shared by every place that builds a path or creates the job's files:

- **Containment.** A run's ``location`` is joined under a source root, and a run name or suite
  taken from a release index (or a bucket listing) becomes a directory name inside it. Such a
  text is accepted only as plain names: ``unsafe_part`` finds an empty, ``.`` or ``..`` part, a
  backslash or a NUL (so neither ``../../etc`` nor ``/etc`` can leave the root), and
  ``name_problem`` also refuses a ``/`` in what must be one directory name (HELM writes run
  names verbatim as directory names, so a real one never holds ``/``). Shard paths need no
  check here: they are built from the job id and chunk numbers only
  (``dataset_layout.shard_path``), and the journal refuses any other shape
  (``store._check_shard_path``).
- **Privacy.** The work folder holds the journal (the job's whole history and config), the
  staging shards and the downloads. ``make_private_dir`` creates folders with mode 0700 and
  ``create_private_file`` files with mode 0600, set with ``chmod`` after creating them, so the
  result does not depend on the umask. SQLite gives the journal's ``-wal`` and ``-shm`` files
  the mode of the journal itself.

Nothing here keeps state. A crash between creating a folder and setting its mode can leave
it with the umask's mode; callers that own a folder outright (staging, scratch, the job's work
folder) pass ``own=True``, which sets the mode again on every start.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def unsafe_part(location: str) -> str | None:
    """The first part of a ``/``-separated relative location that could leave its root.

    Empty (``a//b``, a leading ``/``), ``.``, ``..``, or holding a backslash or a NUL; None
    when every part is a plain name.
    """
    for part in location.split("/"):
        if part in ("", ".", "..") or "\\" in part or "\0" in part:
            return part
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a single directory name, or None if it can."""
    if name == "":
        return "is empty"
    if name in (".", ".."):
        return f"is {name!r}"
    for char, what in (("/", "'/'"), ("\\", "a backslash"), ("\0", "a NUL byte")):
        if char in name:
            return f"holds {what}"
    return None


def make_private_dir(path: Path, *, own: bool = False) -> Path:
    """Create ``path`` and any missing parents with mode 0700, whatever the umask.

    Folders that already exist keep their mode (a ``--journal`` may sit in the user's own
    folder), except ``path`` itself when ``own`` says helmproc owns it outright (staging,
    scratch, the job's work folder).
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by someone else: not ours to change
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode went through the umask
    if own and path not in missing:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def create_private_file(path: Path) -> bool:
    """Create an empty ``path`` with mode 0600 unless it exists; True if this call created it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return True
