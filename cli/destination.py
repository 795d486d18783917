"""CLI options that choose and pace the destination: a local folder or a Hugging Face repo.

``--repo-id ORG/NAME`` selects the Hub (``--revision``, ``--private``); without it the
destination is the ``--to`` folder. The Hub token is never a flag: it comes from ``HF_TOKEN``
or the huggingface_hub login. ``--upload-workers``, ``--files-per-commit`` and
``--commits-per-hour`` are runtime options (not journaled), so ``resume`` accepts them too.
Stateless; nothing here survives a crash or needs to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from helmproc.cli.option_checks import at_least
from helmproc.engine import DEFAULT_FILES_PER_COMMIT, DEFAULT_UPLOAD_WORKERS
from helmproc.engine.errors import ConfigError

RepoIdOpt = Annotated[
    str | None,
    typer.Option(
        "--repo-id",
        metavar="ORG/NAME",
        help="Publish to this Hugging Face dataset repo (ORG/NAME, created if missing) instead "
        "of --to. Token: HF_TOKEN or `hf auth login`.",
    ),
]
RevisionOpt = Annotated[
    str,
    typer.Option(
        "--revision",
        metavar="BRANCH",
        help="Branch of --repo-id to commit to (created if missing).",
    ),
]
PrivateOpt = Annotated[
    bool, typer.Option("--private", help="Create the --repo-id repo private (if it is new).")
]
UploadWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--upload-workers",
        metavar="N",
        callback=at_least(1),
        help="Commits in flight at once.",
        show_default=str(DEFAULT_UPLOAD_WORKERS),
    ),
]
FilesPerCommitOpt = Annotated[
    int | None,
    typer.Option(
        "--files-per-commit",
        metavar="N",
        callback=at_least(1),
        help="Most shard files in one commit.",
        show_default=str(DEFAULT_FILES_PER_COMMIT),
    ),
]
CommitsPerHourOpt = Annotated[
    float | None,
    typer.Option(
        "--commits-per-hour",
        metavar="N",
        callback=at_least(0.1),
        help="Commit pace, at least 0.1.",
        show_default="100 for the Hub, unlimited for a folder",
    ),
]


def check_folder_destination(to: Path, source_root: Path | None) -> None:
    """Refuse a ``--to`` that cannot be written or lies inside the local source, before the
    job is planned. A missing folder is created as a probe and removed again (the publisher
    creates it for real), so a command that fails later leaves nothing behind."""
    target = to.resolve()
    if source_root is not None and target.is_relative_to(source_root):
        raise ConfigError(
            f"--to {to} is inside the source {source_root}: the dataset would be written among "
            "the HELM folders; pick a folder outside it"
        )
    missing = [p for p in (target, *target.parents) if not p.exists()]
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--to {to}: cannot create the folder ({exc.strerror or exc})") from None
    writable = target.is_dir() and os.access(target, os.W_OK | os.X_OK)
    for folder in missing:  # deepest first: only the folders the probe made
        folder.rmdir()
    if not writable:
        raise ConfigError(f"--to {to}: not a writable folder")
