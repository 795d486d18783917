"""Sources: where HELM runs come from. ``DirSource`` reads a local ``benchmark_output/``.

A source has two jobs: ``discover()`` lists the runs of the job as ``RunRef`` values in a
deterministic order (the planner relies on it), and ``fetch(ref, scratch)`` returns a local
directory holding that run's JSON files. A source is rebuilt inside each worker from its
``config`` (a small JSON-able dict recorded in the journal), so it must not hold open
resources across pickling. Sources keep no state on disk, so a crash loses nothing here.

DirSource modes, chosen from what ``root`` holds:
- release mode (``release`` given, or ``root/releases/`` exists; newest release by version):
  ``releases/<R>/runs_to_run_suites.json`` maps each run name to its suite, files under
  ``runs/<suite>/<run>/``;
- suite mode (``suite`` given, or ``root/runs/`` without releases: every suite in turn):
  every run directory in ``runs/<S>/``;
- bare folder: ``root`` itself holds run directories. Their names may differ from the run
  name (e.g. ``:`` replaced by ``-``), so the run name is read from each ``run_spec.json``;
- a single run: ``root`` is one run directory (it holds ``run_spec.json``); the job has that
  one run, read as a bare folder of one from ``root``'s parent (config key ``run``).

A path that is not a folder is refused with what it is (missing, a file). The project name of
a local source (``project_for_folder``) is the one given, else the name of the folder holding
``benchmark_output/`` (as in the bucket's ``<project>/benchmark_output/``), else ``local``.

Other sources: ``HttpSource`` (``bucket.py``), ``MultiSource`` (several projects in one job),
and any of them wrapped in a ``FilteredSource`` (``filters.py``), whose filters are part of the
recorded config. ``registry.py`` rebuilds any of them from its config.

Schemas. ``schema_for(ref)`` gives the ``schema.json`` that decides a run's metrics: the
release's (``releases/<R>/schema.json``) for a run listed by a release, else the suite's
(``runs/<S>/schema.json``, written by helm-summarize since v0.4.0); None when there is none
(older suites, bare folders). Each file is read and parsed once per source object, i.e. once
per worker and job execution; a malformed one fails each run that needs it
(``RunConversionError`` naming the file), never the job.

Bad input that concerns one run fails that run at ``fetch`` (``RunConversionError``), never
the job: a location that is not a plain relative path (a run name or suite holding ``..``,
``/...``; see :func:`check_location`), a run the release index lists under two different
suites (:func:`parse_runs_index`; the same suite twice is one run), a run folder or input
file that is a link leading outside the source root, an input file that is not a regular file
(FIFO, device, socket), and, with ``max_file_bytes`` (``--max-file-bytes``), an input file over
the limit. Links that stay inside the root are followed (``engine/input_files.py`` says what
is followed and how reads are bounded). A release index that is not a JSON object of run
name -> suite (malformed, nested too deeply) is a ``SourceError`` before anything is planned.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from helmproc.engine.errors import ConfigError, RunConversionError, SourceError
from helmproc.engine.facts import RunRef
from helmproc.engine.helm.file_names import (
    NON_RUN_DIRS,
    RUN_INPUT_FILES,
    RUN_SPEC_FILE,
    RUNS_INDEX,
)
from helmproc.engine.helm.schema_file import SCHEMA_FILE, HelmSchema, parse_schema
from helmproc.engine.input_files import check_regular, file_too_large, outside_root, read_input
from helmproc.engine.safe_paths import name_problem, unsafe_part
from helmproc.engine.sources.filters import SpecFacts, local_spec_facts

BENCHMARK_OUTPUT = "benchmark_output"
DEFAULT_LOCAL_PROJECT = "local"


class Source(Protocol):
    """What the pipeline needs from any source of HELM runs."""

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able description from which ``registry.source_from_config`` rebuilds it."""
        ...

    def discover(self) -> list[RunRef]:
        """All runs of the job, deterministic order, no duplicate identities."""
        ...

    def fetch(self, ref: RunRef, scratch: Path, *, max_file_bytes: int | None = None) -> Path:
        """A local directory with the run's files; downloads (if any) go under ``scratch``.

        An input file larger than ``max_file_bytes`` fails the run (``RunConversionError``).
        """
        ...


def check_run_files(root: Path, run_dir: Path, max_file_bytes: int | None) -> None:
    """Refuse a run whose folder or input files leave ``root`` through a link, whose input
    files are not regular files (a FIFO, a device, a socket: checked without opening them),
    or, with ``max_file_bytes``, whose input file is over the limit (see ``input_files``)."""
    if outside_root(run_dir, root):
        raise RunConversionError(
            run_dir.relative_to(root).as_posix(),
            "the run folder is a link leading outside the source: not read",
        )
    for name in RUN_INPUT_FILES:
        path = run_dir / name
        if not os.path.lexists(path):
            continue  # missing: the converter says whether the run needs it
        if outside_root(path, root):
            raise RunConversionError(name, "a link leading outside the source: not read")
        try:
            size = check_regular(path)
        except FileNotFoundError:
            raise RunConversionError(name, "a link to nothing (dangling): not read") from None
        if max_file_bytes is not None and size > max_file_bytes:
            raise RunConversionError(name, file_too_large(max_file_bytes, size))


def input_sizes_text(run_dir: Path) -> str:
    """``name=bytes`` of each input file in ``run_dir``, in name order, ``;``-joined: the
    ``source_sizes`` the ``runs`` table records (one stat per file)."""
    sizes: list[str] = []
    for name in sorted(RUN_INPUT_FILES):
        try:
            sizes.append(f"{name}={(run_dir / name).stat().st_size}")
        except FileNotFoundError:
            continue
    return ";".join(sizes)


def check_location(ref: RunRef) -> None:
    """Refuse a run whose location could leave the source: absolute, or with an empty,
    ``.`` or ``..`` part, a backslash or a NUL (from a bad run name or suite in the index), or
    whose run name or suite, directory names of the location, holds a ``/`` (``safe_paths``)."""
    location = ref.location
    file = RUNS_INDEX if ref.release is not None else "run location"
    bad = unsafe_part(location)
    if bad is not None:
        raise RunConversionError(
            file,
            f"unsafe run path (part {bad!r} of {location!r}): the run name and suite must be "
            "plain directory names; nothing read",
        )
    if ("/" + location).endswith(f"/{ref.suite}/{ref.run_name}"):
        for what, name in (("run name", ref.run_name), ("suite", ref.suite)):
            problem = name_problem(name)
            if problem is not None:
                raise RunConversionError(
                    file,
                    f"unsafe run path ({what} {name!r} {problem}): the run name and suite "
                    "must be plain directory names; nothing read",
                )


@dataclass(frozen=True)
class RunsIndex:
    """A release's ``runs_to_run_suites.json``: each run's suite (the last entry wins, as in
    Python's and HELM's frontend's JSON readers) and the runs listed under several suites."""

    suites: dict[str, str]
    conflicts: dict[str, tuple[str, ...]]

    def problem(self, run_name: str) -> str | None:
        suites = self.conflicts.get(run_name)
        if suites is None:
            return None
        listed = ", ".join(repr(s) for s in suites)
        return f"lists the run under {len(suites)} suites ({listed}): ambiguous, not converted"


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's members in file order, duplicates kept."""


def parse_runs_index(data: bytes, where: str) -> RunsIndex:
    """Decode a release index, keeping duplicate keys (``SourceError`` if it is no object)."""
    try:
        members = json.loads(data, object_pairs_hook=_Pairs)
    except RecursionError:
        raise SourceError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise SourceError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(members, _Pairs):
        raise SourceError(f"{where}: expected an object of run name -> suite")
    listed: dict[str, list[str]] = {}
    for name, suite in members:
        listed.setdefault(str(name), []).append(str(suite))
    suites = {name: found[-1] for name, found in listed.items()}
    conflicts = {
        name: tuple(dict.fromkeys(found)) for name, found in listed.items() if len(set(found)) > 1
    }
    return RunsIndex(suites, conflicts)


def version_key(name: str) -> tuple[Any, ...]:
    """Sort key comparing release names numerically: v1.10.0 > v1.9.0 > v1.9.0-rc."""
    parts = re.findall(r"\d+|[A-Za-z]+", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def newest_release(names: list[str]) -> str:
    if not names:
        raise SourceError("no releases found")
    return max(names, key=version_key)


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and path.name not in NON_RUN_DIRS and (path / RUN_SPEC_FILE).exists()


def project_for_folder(root: str | Path, given: str | None) -> tuple[str, str]:
    """A local source's project name and why it was chosen: ``given`` (``--benchmark``), else
    the folder holding the nearest ``benchmark_output/`` at or above ``root``, else ``local``."""
    if given:
        return given, "--benchmark"
    path = Path(root).resolve()
    for folder in (path, *path.parents):
        if folder.name == BENCHMARK_OUTPUT and folder.parent.name:
            return folder.parent.name, f"the folder holding {folder}"
    return DEFAULT_LOCAL_PROJECT, f"no --benchmark, and no {BENCHMARK_OUTPUT}/ above the source"


def folder_problem(path: Path) -> str | None:
    """What is wrong with ``path`` as a local source folder, or None."""
    if path.is_dir():
        return None
    if not path.exists():
        return f"source folder not found: {path}"
    kind = "a file" if path.is_file() else "not a folder"
    return (
        f"--source {path} is {kind}: pass a benchmark_output/ folder, a folder of run "
        "folders or one run folder (holding run_spec.json)"
    )


# Who publishes the public bucket (EEE source_organization_name of its runs by default).
PUBLIC_BUCKET_URL = "https://storage.googleapis.com/crfm-helm-public"
PUBLIC_BUCKET_OWNER = "Stanford CRFM (Center for Research on Foundation Models)"


def default_organization(config: dict[str, Any]) -> str | None:
    """The publisher of a source's runs when the user names none: the owner of the public
    bucket for a source reading only that bucket, else None (unknown)."""
    if config.get("filters") is not None:
        config = {k: v for k, v in config.items() if k != "filters"}
    parts = config.get("parts") if config.get("kind") == "multi" else [config]
    if not parts:
        return None
    for part in parts:
        base_url = str(part.get("base_url") or "").rstrip("/")
        if part.get("kind") != "http" or base_url != PUBLIC_BUCKET_URL:
            return None
    return PUBLIC_BUCKET_OWNER


def schema_place(ref: RunRef) -> str | None:
    """Where ``ref``'s ``schema.json`` is, relative to the benchmark root:
    ``releases/<R>/schema.json`` for a release's run, ``runs/<S>/schema.json`` for a run of
    a suite folder, None for a bare folder (or a name that is not a plain path part)."""
    if ref.release is not None:
        parts = ("releases", ref.release)
    elif ref.location.startswith(f"runs/{ref.suite}/") or f"/runs/{ref.suite}/" in ref.location:
        parts = ("runs", ref.suite)
    else:
        return None
    if any(unsafe_part(part) is not None for part in parts):
        return None
    return f"{parts[0]}/{parts[1]}/{SCHEMA_FILE}"


class SchemaCache:
    """Parsed schemas by place, each read once; a bad file's error is kept and raised again."""

    def __init__(self) -> None:
        self._found: dict[str, HelmSchema | RunConversionError | None] = {}

    def get(self, key: str, place: str, read: Callable[[], bytes | None]) -> HelmSchema | None:
        """The schema cached under ``key`` (read and parsed the first time); ``place`` is
        what names it (``releases/<R>/schema.json``) in errors and the runs table."""
        if key not in self._found:
            try:
                data = read()
                self._found[key] = None if data is None else parse_schema(data, place)
            except RunConversionError as exc:
                self._found[key] = exc
        found = self._found[key]
        if isinstance(found, RunConversionError):
            raise found
        return found


class DirSource:
    """HELM runs in a local directory (see module docstring for the three modes)."""

    kind = "dir"

    def __init__(
        self,
        root: str | Path,
        *,
        project: str | None = None,
        release: str | None = None,
        suite: str | None = None,
        run: str | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.project = project or DEFAULT_LOCAL_PROJECT
        if release and suite:
            raise ConfigError("give either --release or --suite, not both")
        problem = folder_problem(self.root)
        if problem is not None:
            raise ConfigError(problem)
        if run is None and is_run_dir(self.root):  # one run folder: its parent, that run only
            if release or suite:
                raise ConfigError(f"{self.root} is one run folder: --release/--suite do not apply")
            self.root, run = self.root.parent, self.root.name
        self.release = release
        self.suite = suite
        self.run = run
        self._indexes: dict[str, RunsIndex] = {}
        self._schemas = SchemaCache()

    @property
    def config(self) -> dict[str, Any]:
        config = {
            "kind": self.kind,
            "root": str(self.root),
            "project": self.project,
            "release": self.release,
            "suite": self.suite,
        }
        if self.run is not None:
            config["run"] = self.run
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DirSource:
        return cls(
            config["root"],
            project=config.get("project"),
            release=config.get("release"),
            suite=config.get("suite"),
            run=config.get("run"),
        )

    # -- discovery -----------------------------------------------------------------------
    def discover(self) -> list[RunRef]:
        if self.run is not None:
            return self._bare_runs(only=self.run)
        if self.release is not None:
            return self._release_runs(self.release)
        if self.suite is not None and (self.root / "runs").is_dir():
            return self._suite_runs(self.suite)
        releases_dir = self.root / "releases"
        if releases_dir.is_dir() and any(releases_dir.iterdir()):
            names = [p.name for p in releases_dir.iterdir() if (p / RUNS_INDEX).exists()]
            return self._release_runs(newest_release(names))
        runs_dir = self.root / "runs"
        if runs_dir.is_dir():
            refs: list[RunRef] = []
            for suite_dir in sorted(runs_dir.iterdir()):
                if suite_dir.is_dir():
                    refs.extend(self._suite_runs(suite_dir.name))
            return refs
        return self._bare_runs()

    def _runs_index(self, release: str) -> RunsIndex:
        index = self._indexes.get(release)
        if index is None:
            path = self.root / "releases" / release / RUNS_INDEX
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise SourceError(
                    f"release {release!r} has no {RUNS_INDEX} under {self.root}"
                ) from None
            index = self._indexes[release] = parse_runs_index(data, str(path))
        return index

    def _release_runs(self, release: str) -> list[RunRef]:
        refs = [
            RunRef(self.project, suite, name, release, f"runs/{suite}/{name}")
            for name, suite in self._runs_index(release).suites.items()
        ]
        return sorted(refs)

    def _suite_runs(self, suite: str) -> list[RunRef]:
        suite_dir = self.root / "runs" / suite
        if not suite_dir.is_dir():
            raise SourceError(f"suite {suite!r} not found: {suite_dir}")
        return sorted(
            RunRef(self.project, suite, p.name, None, f"runs/{suite}/{p.name}")
            for p in suite_dir.iterdir()
            if is_run_dir(p)
        )

    def _bare_runs(self, only: str | None = None) -> list[RunRef]:
        suite = self.suite or self.root.name
        refs: dict[tuple[str, str, str], RunRef] = {}
        found = [self.root / only] if only is not None else sorted(self.root.iterdir())
        for p in found:
            if not is_run_dir(p):
                continue
            name = (None if outside_root(p, self.root) else run_name_from_spec(p)) or p.name
            ref = RunRef(self.project, suite, name, None, p.name)
            refs.setdefault((ref.project, ref.suite, ref.run_name), ref)
        if not refs:
            raise SourceError(
                f"no HELM runs under {self.root}: expected releases/, runs/ or run directories "
                "holding run_spec.json"
            )
        return sorted(refs.values())

    # -- fetching ------------------------------------------------------------------------
    def fetch(self, ref: RunRef, scratch: Path, *, max_file_bytes: int | None = None) -> Path:
        check_location(ref)
        if ref.release is not None:
            problem = self._runs_index(ref.release).problem(ref.run_name)
            if problem is not None:
                raise RunConversionError(RUNS_INDEX, problem)
        run_dir = self.root / ref.location
        if not run_dir.is_dir():
            raise RunConversionError(ref.location, "run directory is missing from the source")
        check_run_files(self.root, run_dir, max_file_bytes)
        return run_dir

    def input_sizes(self, ref: RunRef) -> str | None:
        """The run's ``source_sizes`` as it is now (None when the run is not readable)."""
        if unsafe_part(ref.location) is not None:
            return None
        run_dir = self.root / ref.location
        return input_sizes_text(run_dir) if run_dir.is_dir() else None

    def spec_facts(self, refs: Sequence[RunRef]) -> dict[RunRef, SpecFacts | None]:
        """Method and model of each run, for the run filters (see ``filters``)."""
        return local_spec_facts(self.root, refs)

    def schema_for(self, ref: RunRef) -> HelmSchema | None:
        """The schema.json deciding ``ref``'s metrics (module docstring), or None."""
        place = schema_place(ref)
        if place is None:
            return None

        def read() -> bytes | None:
            path = self.root / place
            if not os.path.lexists(path):
                return None
            if outside_root(path, self.root):
                raise RunConversionError(place, "a link leading outside the source: not read")
            try:
                return read_input(path)  # a regular file only, as every input file
            except RunConversionError as exc:
                raise RunConversionError(place, exc.reason) from None

        return self._schemas.get(place, place, read)


class MultiSource:
    """Several sources (one per project, e.g. several ``--benchmark``) as one job."""

    kind = "multi"

    def __init__(self, parts: Sequence[Source]) -> None:
        self.parts = list(parts)
        self._by_project: dict[str, Source] = {}
        for part in self.parts:
            project = part.config.get("project")
            if not isinstance(project, str) or project in self._by_project:
                raise ConfigError(f"each source of a job needs its own project, got {project!r}")
            self._by_project[project] = part

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"kind": self.kind, "parts": [p.config for p in self.parts]}
        for key in ("root", "base_url"):  # shown in the dataset card when the parts share it
            values = {p.config.get(key) for p in self.parts}
            if len(values) == 1 and None not in values:
                config[key] = values.pop()
        return config

    def discover(self) -> list[RunRef]:
        refs: dict[tuple[str, str, str], RunRef] = {}
        for part in self.parts:
            for ref in part.discover():
                refs.setdefault((ref.project, ref.suite, ref.run_name), ref)
        return sorted(refs.values())

    def _part(self, ref: RunRef) -> Source:
        try:
            return self._by_project[ref.project]
        except KeyError:
            reason = f"no source for project {ref.project!r}"
            raise RunConversionError(ref.location, reason) from None

    def fetch(self, ref: RunRef, scratch: Path, *, max_file_bytes: int | None = None) -> Path:
        return self._part(ref).fetch(ref, scratch, max_file_bytes=max_file_bytes)

    def schema_for(self, ref: RunRef) -> HelmSchema | None:
        reader = getattr(self._part(ref), "schema_for", None)
        return reader(ref) if reader is not None else None

    def input_sizes(self, ref: RunRef) -> str | None:
        sizes = getattr(self._by_project.get(ref.project), "input_sizes", None)
        return sizes(ref) if sizes is not None else None

    def spec_facts(self, refs: Sequence[RunRef]) -> dict[RunRef, SpecFacts | None]:
        out: dict[RunRef, SpecFacts | None] = {}
        for project, part in self._by_project.items():
            mine = [r for r in refs if r.project == project]
            reader = getattr(part, "spec_facts", None)
            if mine and reader is not None:
                out.update(reader(mine))
        return out


def run_name_from_spec(run_dir: Path) -> str | None:
    """The ``name`` recorded in a run's run_spec.json, or None if it cannot be read (then
    the run is planned under its folder's name, and converting it says what is wrong)."""
    try:
        name = json.loads(read_input(run_dir / RUN_SPEC_FILE)).get("name")
    except (OSError, ValueError, AttributeError, RecursionError, RunConversionError):
        return None
    return name if isinstance(name, str) and name else None
