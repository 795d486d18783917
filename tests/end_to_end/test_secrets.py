"""Credentials in a source URL (user:password, a token parameter) are used for requests and
appear nowhere else: not in the journal, the work folder, the dataset (card included), or
anything a command prints, including failure reasons that quote URLs."""

from __future__ import annotations

import base64
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from helmproc.engine.url_secrets import strip_credentials
from tests.fakes.bucket_server import BucketServer
from tests.fakes.jobkit import FIXTURE, helmproc

SUITE, RELEASE = "v1.0.0", "v1.1.0"
RUNS = ("simple_classification:model=simple_model1", "simple1:model=simple_model1")
PASSWORD = "pw-5ecret-Zq81"
TOKEN = "tok-5ecret-Hv27"



def tree(root: Path) -> Path:
    for run in RUNS:
        shutil.copytree(FIXTURE / "runs" / SUITE / run, root / "runs" / SUITE / run)
    index = root / "releases" / RELEASE / "runs_to_run_suites.json"
    index.parent.mkdir(parents=True)
    index.write_text("{" + ", ".join(f'"{r}": "{SUITE}"' for r in RUNS) + "}")
    (root / "runs" / SUITE / RUNS[1] / "stats.json").unlink()  # a 404 quoting its URL
    return root


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@h/b?token=1&x=2", "https://h/b?x=2"),
        ("http://h/b?X-Goog-Signature=s&api_key=k&access_token=t&page=3", "http://h/b?page=3"),
        ("http://h/b/lite", "http://h/b/lite"),
    ],
)
def test_strip_credentials(url: str, shown: str) -> None:
    assert strip_credentials(url) == shown


def test_credentials_are_used_and_never_stored_printed_or_published(tmp_path: Path) -> None:
    src = tree(tmp_path / "src")
    with BucketServer() as server:
        server.mount("lite/benchmark_output", src)
        auth = "Basic " + base64.b64encode(f"reader:{PASSWORD}".encode()).decode()
        server.required = (auth, f"access_token={TOKEN}")
        parts = urlsplit(server.base_url)
        netloc = f"reader:{PASSWORD}@{parts.netloc}"
        url = urlunsplit(parts._replace(netloc=netloc, query=f"access_token={TOKEN}"))
        source = ["--source", url, "--benchmark", "lite", "--release", RELEASE]
        run = helmproc(tmp_path, "run", *source, "--to", "out")
        # the credentials reached the server: the runs converted, one failed on a 404
        assert run.returncode == 0, run.stderr
        assert "done: 1 run converted, 1 failed" in run.stdout
        assert "stats.json: not found (HTTP 404) at http://" in run.stderr
        outputs = [run, helmproc(tmp_path, "status"), helmproc(tmp_path, "status", "--json")]
        # resume has only the journal: the server refuses it, and says so without credentials
        outputs.append(helmproc(tmp_path, "resume", "--retry-failed"))
        assert any(e.status == 403 for e in server.log)
        # the same command again continues the job with the credentials
        outputs.append(helmproc(tmp_path, "run", *source, "--to", "out"))
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    journals = list(tmp_path.glob(".helmproc/jobs/*/journal.sqlite"))
    assert journals
    with sqlite3.connect(journals[0]) as db:
        stored = "\n".join(str(row) for row in db.iterdump())
    assert server.base_url in stored  # the source is recorded, without its credentials
    card = (tmp_path / "out" / "README.md").read_text()
    assert server.base_url in card
    for secret in (PASSWORD, TOKEN):
        assert secret not in stored
        for done in outputs:
            assert secret not in done.stdout + done.stderr
        for path in tmp_path.rglob("*"):
            if path.is_file() and src not in path.parents:
                assert secret.encode() not in path.read_bytes(), path
