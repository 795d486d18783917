"""A new user's first commands: options checked before a job is recorded, source errors that
say what the path is, offline failures that are fast and true, and help that teaches.

Most commands run in-process through ``helmproc.cli.app.main`` (the same error table, exit
codes and streams as the installed command); servers are real, on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer

from helmproc.cli import app as app_module
from tests.fakes.jobkit import FIXTURE

README = Path(__file__).resolve().parents[2] / "README.md"
RUN_DIR = FIXTURE / "runs" / "v1.1.0" / "simple_mcqa:model=simple_model1"


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    """``cli(*args) -> (exit code, stdout, stderr)``, run in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1800000000")

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(app_module, "_job_recorded", False, raising=False)
        monkeypatch.setattr(sys, "argv", ["helmproc", *args])
        with pytest.raises(SystemExit) as stopped:
            app_module.main()
        out = capsys.readouterr()
        code = stopped.value.code
        return (code if isinstance(code, int) else 1), out.out, out.err

    return invoke


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def plain_mirror(tmp_path: Path) -> Iterator[str]:
    """A plain static HTTP server (no GCS listing API) holding ``mirror/lite/benchmark_output``."""
    root = tmp_path / "www"
    shutil.copytree(FIXTURE, root / "mirror" / "lite" / "benchmark_output")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mirror"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


# -- options are checked before anything is planned or recorded ----------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--max-workers", "-1"], "--max-workers"),
        (["--max-workers", "0"], "--max-workers"),
        (["--max-workers", "abc"], "--max-workers"),
        (["--memory-budget", "4X"], "--memory-budget"),
        (["--disk-budget", "lots"], "--disk-budget"),
        (["--executor", "foo"], "--executor"),
        (["--chunk-size", "0"], "--chunk-size"),
        (["--max-file-bytes", "0"], "--max-file-bytes"),
        (["--to", "/proc/nope"], "--to /proc/nope"),
    ],
)
def test_a_bad_option_stops_run_before_a_job_is_recorded(
    cli, tmp_path: Path, args: list[str], option: str
) -> None:
    code, out, err = cli("run", "--source", str(FIXTURE), *args)
    assert code == 2, err
    assert option in err
    assert "Traceback" not in err
    assert not (tmp_path / ".helmproc").exists()  # nothing planned, nothing journaled
    assert not (tmp_path / "helm-eee-dataset").exists()


def test_a_destination_inside_the_source_is_refused(cli, tmp_path: Path) -> None:
    source = tmp_path / "benchmark_output"
    shutil.copytree(FIXTURE, source)
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    code, _, err = cli("run", "--source", str(source), "--to", str(source / "runs" / "s-a"))
    assert code == 2
    assert "is inside the source" in err
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before
    assert not (tmp_path / ".helmproc").exists()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: str(tmp / "hostname"), "is a file"),
        (lambda tmp: "ftp://mirror.example/helm", "unsupported scheme ftp://"),
        (lambda tmp: str(tmp / "missing"), "source folder not found"),
    ],
)
def test_source_errors_say_what_the_path_is(cli, tmp_path: Path, make, expected: str) -> None:
    (tmp_path / "hostname").write_text("a file, not a folder\n")
    for command in (["run"], ["list", "runs"]):
        code, _, err = cli(*command, "--source", make(tmp_path))
        assert code == 2 and expected in err, err
        assert "next:" in err
    assert not (tmp_path / ".helmproc").exists()


def test_a_single_run_folder_is_accepted_as_a_source(cli, tmp_path: Path) -> None:
    spec_name = json.loads((RUN_DIR / "run_spec.json").read_text())["name"]
    code, out, err = cli("list", "runs", "--source", str(RUN_DIR), "--json")
    assert code == 0, err
    assert [r["run_name"] for r in json.loads(out)] == [spec_name]
    assert "helmproc: 1 run\n" in err  # singular
    code, out, err = cli("run", "--source", str(RUN_DIR), "--to", "out", "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["runs"] == {"ok": 1, "failed": 0}


def test_the_project_name_of_a_local_source(cli, tmp_path: Path) -> None:
    nested = tmp_path / "myproj" / "benchmark_output"
    plain = tmp_path / "plain"
    shutil.copytree(FIXTURE, nested)
    shutil.copytree(FIXTURE, plain)

    def projects(*args: str) -> set[str]:
        code, out, err = cli("list", "runs", "--json", *args)
        assert code == 0, err
        return {r["project"] for r in json.loads(out)}

    assert projects("--source", str(nested), "--benchmark", "lite") == {"lite"}
    assert projects("--source", str(nested)) == {"myproj"}
    assert projects("--source", str(nested / "runs" / "v1.1.0")) == {"myproj"}
    assert projects("--source", str(plain)) == {"local"}
    code, out, err = cli("run", "--source", str(nested), "--to", "out", "--limit", "1", "-q")
    assert code == 0, err
    assert f"project 'myproj' (the folder holding {nested})" in err


# -- offline: fast, one line, the right next step -------------------------------------------


def test_an_unreachable_bucket_fails_with_one_line_and_no_resume_hint(
    cli, tmp_path: Path
) -> None:
    source = f"http://127.0.0.1:{dead_port()}/crfm-helm-public"
    code, out, err = cli("run", "--source", source, "--benchmark", "lite")
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0] == "helmproc: cannot reach 127.0.0.1: offline? use --source DIR"
    assert lines[1].startswith("  next: ") and len(lines) == 2
    assert "resume" not in err  # no job was recorded
    assert not (tmp_path / ".helmproc").exists()
    code, _, err = cli("list", "releases", "--benchmark", "lite", "--source", source)
    assert code == 1 and "cannot reach 127.0.0.1" in err and "resume" not in err


def test_latest_on_a_plain_http_mirror_says_to_pass_release(cli, plain_mirror: str) -> None:
    code, _, err = cli("list", "runs", "--source", plain_mirror, "--benchmark", "lite")
    assert code == 1
    assert "needs the GCS JSON API" in err and "pass --release R" in err
    assert "resume" not in err
    code, out, err = cli(
        "list", "runs", "--source", plain_mirror, "--benchmark", "lite", "--release", "v1.1.0",
        "--json",
    )
    assert code == 0, err
    index = json.loads((FIXTURE / "releases" / "v1.1.0" / "runs_to_run_suites.json").read_text())
    assert sorted(r["run_name"] for r in json.loads(out)) == sorted(index)


# -- help that teaches -----------------------------------------------------------------------


def commands() -> Iterator[tuple[str, Any]]:
    """Every leaf command of the CLI with its full name (``list runs``, ``run``, ...)."""
    root = typer.main.get_command(app_module.app)
    assert root.commands  # type: ignore[attr-defined]

    def walk(group: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a group (``list``)
                yield from walk(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", command

    yield from walk(root, "")


def readme_rows(name: str) -> str:
    """The README command table's rows for ``helmproc NAME`` (the first cell of each row)."""
    rows = []
    for line in README.read_text().splitlines():
        cell = re.split(r"(?<!\\)\|", line)[1] if line.startswith("| `helmproc") else ""
        head = cell.strip().strip("`")
        if head.startswith(f"helmproc {name} ") or head == f"helmproc {name}":
            rows.append(cell)
        elif name.startswith("list ") and head.startswith("helmproc list "):
            words = re.split(r"[\s\\|]+", head)
            if name.split()[1] in words:
                rows.append(cell)
    return "\n".join(rows)


def test_every_option_of_every_command_is_in_the_readme_command_table() -> None:
    found = list(commands())
    assert {name for name, _ in found} >= {"run", "resume", "status", "verify", "export-eee",
                                           "list releases", "list suites", "list runs"}
    missing = []
    for name, command in found:
        rows = readme_rows(name)
        assert rows, f"no README command-table row for helmproc {name}"
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help" and not re.search(
                    re.escape(opt) + r"(?![\w-])", rows
                ):
                    missing.append(f"helmproc {name} {opt}")
    assert missing == []


def test_help_has_clean_metavars_defaults_and_examples(cli) -> None:
    for name, command in commands():
        code, out, err = cli(*name.split(), "-h")
        assert code == 0, err
        placeholder = r"<(str|int|float|bool|path|list\[\w+\])( range)?>"
        assert re.search(placeholder, out) is None, f"{name}: internal placeholder"
        assert "[x>=" not in out and "<bool>" not in out, name
        examples = out.split("Examples:", 1)
        assert len(examples) == 2, f"helmproc {name} -h has no examples"
        lines = [ln.strip() for ln in examples[1].splitlines() if ln.strip()]
        assert 2 <= len(lines) <= 3 and all(ln.startswith("helmproc ") for ln in lines)
        for option in re.findall(r"(--[\w-]+)", " ".join(lines)):
            assert option in {o for p in command.params for o in p.opts}, (name, option)
    code, out, _ = cli("run", "--help")
    assert "[default: (https://storage.googleapis.com/crfm-helm-public)]" in " ".join(
        out.split()
    ).replace("crfm-helm- public", "crfm-helm-public")
    assert re.search(r"--max-workers N\|auto .*\[default: \(\d+ workers?, one per CPU\)\]",
                     " ".join(out.split()))


def test_version_and_short_help(cli) -> None:
    code, out, _ = cli("--version")
    assert (code, out) == (0, f"helmproc {version('helmproc')}\n")
    code, out, _ = cli("-h")
    assert code == 0 and "--install-completion" in out and "Commands:" in out
    assert "--install-completion" in README.read_text()  # shell completion is documented
