"""CLI options that choose and pace the destination: a local folder or a Hugging Face repo.

``--repo-id ORG/NAME`` selects the Hub (``--revision``, ``--private``); without it the
destination is the ``--to`` folder. The Hub token is never a flag: it comes from ``HF_TOKEN``
or the huggingface_hub login. ``--upload-workers``, ``--files-per-commit`` and
``--commits-per-hour`` are runtime options (not journaled), so ``resume`` accepts them too.
Stateless; nothing here survives a crash or needs to.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from helmproc.engine.job.options import ExecOptions

RepoIdOpt = Annotated[
    str | None,
    typer.Option(
        "--repo-id",
        help="Publish to this Hugging Face dataset repo (ORG/NAME, created if missing) instead "
        "of --to. Token: HF_TOKEN or `hf auth login`.",
    ),
]
RevisionOpt = Annotated[
    str, typer.Option("--revision", help="Branch of --repo-id to commit to (created if missing).")
]
PrivateOpt = Annotated[
    bool, typer.Option("--private", help="Create the --repo-id repo private (if it is new).")
]
UploadWorkersOpt = Annotated[
    int, typer.Option("--upload-workers", min=1, help="Commits in flight at once.")
]
FilesPerCommitOpt = Annotated[
    int, typer.Option("--files-per-commit", min=1, help="Most shard files in one commit.")
]
CommitsPerHourOpt = Annotated[
    float | None,
    typer.Option(
        "--commits-per-hour",
        min=0.1,
        help="Commit pace (default: 100 for the Hub, unlimited for a folder).",
    ),
]


def with_publishing(
    options: ExecOptions,
    upload_workers: int,
    files_per_commit: int,
    commits_per_hour: float | None,
) -> ExecOptions:
    return dataclasses.replace(
        options,
        upload_workers=upload_workers,
        publish_max_files=files_per_commit,
        commits_per_hour=commits_per_hour,
    )
