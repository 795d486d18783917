"""HttpSource against the loopback bucket (``bucket_server.py``): layout, quoting, every fault.

All traffic goes to 127.0.0.1 on an ephemeral port; every request loop is bounded by the
client's attempts and timeouts, which the tests shrink (``FAST``) so the file runs in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import pyarrow.parquet as pq
import pytest
import requests

from helmproc.engine import stop_waits
from helmproc.engine.errors import (
    ConfigError,
    RunConversionError,
    SourceError,
    TransientError,
    UnreachableError,
    WaitInterrupted,
)
from helmproc.engine.helm.file_names import REQUIRED_RUN_FILES, RUNS_INDEX
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources import http_client
from helmproc.engine.sources.bucket import HttpSource, quote_name
from helmproc.engine.sources.filters import FilteredSource, RunFilters
from helmproc.engine.sources.folder import DirSource, Source
from helmproc.engine.sources.http_client import (
    BodyCheck,
    ClientSettings,
    HttpClient,
    HttpRetriesExhaustedError,
    parse_retry_after,
    process_session,
)
from helmproc.engine.sources.registry import make_source, source_from_config
from tests.convert.test_shapes import encrypt_run
from tests.fakes.bucket_server import BucketServer
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE, folder_digest

FAST = ClientSettings(
    connect_timeout_s=2.0,
    read_timeout_s=0.3,
    deadline_s=10.0,
    max_attempts=5,
    base_delay_s=0.001,
    max_delay_s=0.01,
    max_retry_after_s=5.0,
)
RUN = "simple_mcqa:model=simple_model1"
RUN_DIR = FIXTURE / "runs/v1.1.0" / RUN
HELMPROC = [sys.executable, "-m", "helmproc.cli"]


pytestmark = pytest.mark.usefixtures("fixed_epoch")


@pytest.fixture
def bucket() -> BucketServer:
    """The fixture tree as project ``lite``, two entries per listing page (paging everywhere)."""
    server = BucketServer(max_page_size=2)
    server.mount("lite/benchmark_output", FIXTURE)
    with server:
        yield server


def http(bucket: BucketServer, **kw: object) -> HttpSource:
    kw.setdefault("project", "lite")
    kw.setdefault("client", FAST)
    kw.setdefault("page_size", 2)
    return HttpSource(bucket.base_url, **kw)  # type: ignore[arg-type]


def ref_of(source: HttpSource, run_name: str = RUN):
    return next(r for r in source.discover() if r.run_name == run_name)


def assert_same_files(fetched: Path, original: Path) -> None:
    for name in REQUIRED_RUN_FILES:
        assert (fetched / name).read_bytes() == (original / name).read_bytes(), name


def statuses(bucket: BucketServer, match: str) -> list[int]:
    return [entry.status for entry in bucket.requests_for(match)]


def run_job(source: Source, dest: Path, work: Path, workers: int = 2) -> tuple[str, dict]:
    started = start_job(source, DirPublisher(dest), chunk_size=3, work_root=work)
    with started.journal as journal:
        job = journal.job()
        assert job is not None
        report = execute_job(journal, ExecOptions(max_workers=workers)).to_json()
    return job.job_id, report


def shard_digest(root: Path, job_id: str) -> dict[str, str]:
    """Shard digests with the job id taken out of the paths (the card is compared apart)."""
    return {
        path.replace(job_id, "JOB"): digest
        for path, digest in folder_digest(root).items()
        if path.endswith(".parquet")
    }


# -- discovery -------------------------------------------------------------------------------


def test_latest_release_is_the_newest_version_with_an_index(
    bucket: BucketServer, tmp_path: Path
) -> None:
    index = json.loads((FIXTURE / "releases/v1.1.0/runs_to_run_suites.json").read_text())
    releases = tmp_path / "releases"
    for name, runs in {
        "v1.9.0": dict(list(index.items())[:3]),
        "v1.10.0": dict(list(index.items())[:5]),  # newest by number, not by text
        "v1.2.0": index,
    }.items():
        (releases / name).mkdir(parents=True)
        (releases / name / "runs_to_run_suites.json").write_text(json.dumps(runs))
    (releases / "v1.11.0-incomplete").mkdir()  # newer, but no index: skipped
    (releases / "v1.11.0-incomplete" / "summary.json").write_text("{}")
    bucket.mount("lite/benchmark_output/releases", releases)

    source = http(bucket)
    assert source.releases() == ["v1.11.0-incomplete", "v1.10.0", "v1.9.0", "v1.2.0", "v1.1.0"]
    refs = source.discover()
    assert {r.release for r in refs} == {"v1.10.0"}
    assert sorted(r.run_name for r in refs) == sorted(list(index)[:5])
    # the releases/ level has 5 entries at 2 per page: the client followed nextPageToken
    pages = [e for e in bucket.log if e.path.endswith("/o")]
    assert len(pages) >= 3 * 2  # two full listings of releases/ (releases(), discover())
    assert statuses(bucket, "v1.11.0-incomplete/runs_to_run_suites.json") == [404]


def test_release_mode_matches_dir_source(bucket: BucketServer) -> None:
    refs = http(bucket, release="v1.1.0").discover()
    local = DirSource(FIXTURE, project="lite", release="v1.1.0").discover()
    assert [(r.project, r.suite, r.run_name, r.release) for r in refs] == [
        (r.project, r.suite, r.run_name, r.release) for r in local
    ]
    pairs = zip(refs, local, strict=True)
    assert all(r.location == f"lite/benchmark_output/{d.location}" for r, d in pairs)
    assert http(bucket).discover() == refs  # latest == the only release


def test_suite_mode_lists_run_prefixes_and_skips_summary_files(bucket: BucketServer) -> None:
    bucket.mount("lite/benchmark_output/runs/v0.1.0/eval_cache", FIXTURE / "runs/v0.1.0/" / RUN)
    refs = http(bucket, suite="v0.1.0").discover()
    assert [r.run_name for r in refs] == [
        "simple1:model=simple_model1",
        "simple_mcqa:model=simple_model1",
    ]
    assert all(r.release is None and r.suite == "v0.1.0" for r in refs)
    assert http(bucket).suites() == ["v1.1.0", "v1.0.0", "v0.1.0"]


@pytest.mark.parametrize(
    "mounts, expected_root",
    [
        # classic's older home: the bucket root
        (["benchmark_output"], "benchmark_output"),
        # the documented classic/ prefix
        (["classic/benchmark_output"], "classic/benchmark_output"),
        # both: classic/ is tried first
        (["benchmark_output", "classic/benchmark_output"], "classic/benchmark_output"),
    ],
)
def test_classic_root_and_classic_prefix(
    mounts: list[str], expected_root: str, tmp_path: Path
) -> None:
    with BucketServer(max_page_size=3) as server:
        for prefix in mounts:
            server.mount(prefix, FIXTURE)
        for kw in ({"release": "v1.1.0"}, {}, {"suite": "v1.0.0"}):
            source = HttpSource(server.base_url, project="classic", client=FAST, **kw)
            refs = source.discover()
            assert refs and all(r.location.startswith(expected_root + "/runs/") for r in refs)
            assert all(r.project == "classic" for r in refs)
        fetched = source.fetch(refs[0], tmp_path)
        assert_same_files(fetched, FIXTURE / refs[0].location.split("benchmark_output/")[1])


def test_base_url_may_point_at_a_benchmark_output(bucket: BucketServer) -> None:
    source = HttpSource(
        f"{bucket.base_url}/lite/benchmark_output", project="lite", client=FAST, release="v1.1.0"
    )
    assert source.discover() == http(bucket, release="v1.1.0").discover()


@pytest.mark.parametrize(
    "kw, text",
    [
        ({"release": "v9.9.9"}, r"release 'v9.9.9' of 'lite' not found \(404 at http://127"),
        ({"suite": "nope"}, r"suite 'nope' of 'lite' not found: nothing listed under"),
        ({"project": "heim"}, r"no release with runs_to_run_suites.json found for 'heim'.*--suite"),
    ],
)
def test_missing_release_suite_or_project_are_clear_errors(
    bucket: BucketServer, kw: dict, text: str
) -> None:
    with pytest.raises(SourceError, match=text):
        http(bucket, **kw).discover()


def test_odd_run_names_are_quoted_in_every_url(tmp_path: Path) -> None:
    odd = "odd:a=1,b=x y,c=50%+#?&é"
    suite = "suite one"
    tree = tmp_path / "benchmark_output"
    simple1 = "simple1:model=simple_model1"
    for name, src in ((odd, RUN_DIR), (simple1, FIXTURE / "runs/v1.0.0" / simple1)):
        shutil.copytree(src, tree / "runs" / suite / name)
    spec_path = tree / "runs" / suite / odd / "run_spec.json"
    spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), "name": odd}))
    (tree / "releases/r1").mkdir(parents=True)
    (tree / "releases/r1/runs_to_run_suites.json").write_text(
        json.dumps({odd: suite, "simple1:model=simple_model1": suite})
    )
    with BucketServer(max_page_size=1) as server:  # strict: raw ':', ',', '=', ' ' answer 400
        server.mount("lite/benchmark_output", tree)
        unquoted = f"{server.base_url}/lite/benchmark_output/runs/{suite}/{odd}/stats.json"
        assert requests.get(unquoted.replace("#", "%23"), timeout=5).status_code == 400
        for kw in ({"release": "r1"}, {"suite": suite}):
            source = HttpSource(server.base_url, project="lite", client=FAST, **kw)
            refs = source.discover()
            assert [r.run_name for r in refs] == sorted([odd, "simple1:model=simple_model1"])
            ref = next(r for r in refs if r.run_name == odd)
            assert source.url(f"{ref.location}/stats.json").endswith(
                "/runs/suite%20one/odd%3Aa%3D1%2Cb%3Dx%20y%2Cc%3D50%25%2B%23%3F%26%C3%A9/stats.json"
            )
            assert_same_files(source.fetch(ref, tmp_path / "scratch"), tree / "runs" / suite / odd)
        assert 400 not in [e.status for e in server.log[1:]]  # only the deliberate raw request
        # and through a whole job: the odd name is the run's identity in the runs table
        job_id, report = run_job(
            HttpSource(server.base_url, project="lite", client=FAST, release="r1"),
            tmp_path / "out",
            tmp_path / "work",
        )
    assert report["done"] and sum(report["runs"].values()) == 2
    runs = pq.read_table(sorted((tmp_path / "out").glob("runs/**/*.parquet"))).to_pylist()
    assert sorted(r["helm_run"] for r in runs) == sorted([odd, "simple1:model=simple_model1"])
    assert {r["helm_suite"] for r in runs} == {suite}


def test_quote_name_quotes_each_part() -> None:
    assert quote_name("a b/c:d,e=f/g%h") == "a%20b/c%3Ad%2Ce%3Df/g%25h"


# -- the bucket equals the folder, byte for byte ---------------------------------------------


@pytest.mark.parametrize(
    "selection, gzip_at_rest, encrypted",
    [
        ({"release": "v1.1.0"}, True, False),  # release mode, gzip at rest, sent compressed
        ({"suite": "v1.0.0"}, False, False),  # suite mode, plain objects
        ({"release": "v1.1.0"}, False, True),  # one run encrypted, keys beside it
    ],
)
def test_shards_from_http_equal_shards_from_dir(
    selection: dict, gzip_at_rest: bool, encrypted: bool, tmp_path: Path
) -> None:
    # Both jobs use project "lite" and the same release/suite, so every row (provenance
    # included) is the same. The job id hashes the source config, which differs (a folder vs
    # a URL), so shard paths differ by the job id alone: compare with it taken out. The
    # dataset card names the source, so it is compared without that line.
    tree = FIXTURE
    if encrypted:  # the HTTP source must fetch encryption_data.json for that run only
        tree = tmp_path / "tree"
        shutil.copytree(FIXTURE, tree)
        encrypt_run(tree / "runs" / "v1.1.0" / RUN)
    dir_id, dir_report = run_job(
        DirSource(tree, project="lite", **selection), tmp_path / "dir", tmp_path / "w1"
    )
    with BucketServer(max_page_size=2, gzip_at_rest=gzip_at_rest) as server:
        server.mount("lite/benchmark_output", tree)
        http_id, http_report = run_job(
            HttpSource(server.base_url, project="lite", client=FAST, **selection),
            tmp_path / "http",
            tmp_path / "w2",
        )
        if gzip_at_rest:
            assert server.gzip_at_rest and any("scenario_state" in e.path for e in server.log)
        keys_asked = [(e.path, e.status) for e in server.log if "encryption_data" in e.path]
    if encrypted:  # asked for once, for the encrypted run, and its texts decrypted
        assert len(keys_asked) == 1 and quote_name(RUN) in keys_asked[0][0]
        assert keys_asked[0][1] == 200
        inputs = pq.read_table(tmp_path / "http" / "instances", columns=["input"])
        raws = [row["raw"] or "" for row in inputs.column("input").to_pylist()]
        assert raws and not any("[encrypted_text_" in raw for raw in raws)
    else:
        assert keys_asked == []
    assert dir_id != http_id
    assert http_report["done"] and http_report["runs"] == dir_report["runs"]
    dir_shards = shard_digest(tmp_path / "dir", dir_id)
    assert len(dir_shards) >= 3
    assert shard_digest(tmp_path / "http", http_id) == dir_shards

    def card(root: Path) -> list[str]:
        text = (root / "README.md").read_text().replace(dir_id, "JOB").replace(http_id, "JOB")
        return [line for line in text.splitlines()
                if not line.startswith("HELM benchmark output from ")]

    assert card(tmp_path / "http") == card(tmp_path / "dir")
    # nothing downloaded is left behind once the chunks are published
    assert not [p for p in (tmp_path / "w2").rglob("scratch/**/*") if p.is_file()]


# -- fault knobs -----------------------------------------------------------------------------


def test_fail_nth_request_is_retried(bucket: BucketServer, tmp_path: Path) -> None:
    source = http(bucket, release="v1.1.0")
    ref = ref_of(source)
    before = len(bucket.log)
    bucket.faults.fail_nth(3, status=500)  # the run's third request (files download in parallel)
    assert_same_files(source.fetch(ref, tmp_path), RUN_DIR)
    failed = [e for e in bucket.log[before:] if e.status == 500]
    assert len(failed) == 1 and failed[0].fault == "nth"
    # that file was asked for again: found, or (encryption_data.json, optional) absent
    again = 404 if failed[0].path.endswith("/encryption_data.json") else 200
    assert statuses(bucket, failed[0].path) == [500, again]
    assert not bucket.faults.pending


def test_429_waits_for_retry_after(bucket: BucketServer, tmp_path: Path) -> None:
    source = http(bucket, release="v1.1.0")
    ref = ref_of(source)
    bucket.faults.rate_limit("scenario.json", retry_after="1")
    started = time.monotonic()
    assert_same_files(source.fetch(ref, tmp_path), RUN_DIR)
    assert time.monotonic() - started >= 1.0  # base delay is 1 ms: only Retry-After explains it
    assert statuses(bucket, "/scenario.json") == [429, 200]


def test_retry_after_longer_than_allowed_gives_up(bucket: BucketServer, tmp_path: Path) -> None:
    source = http(bucket, release="v1.1.0")
    ref = ref_of(source)
    bucket.faults.rate_limit("scenario.json", retry_after="3600")
    started = time.monotonic()
    with pytest.raises(HttpRetriesExhaustedError, match="Retry-After 3600s is longer than 5s"):
        source.fetch(ref, tmp_path)
    assert time.monotonic() - started < 2


def test_burst_of_503_is_ridden_out_and_a_longer_one_gives_up(
    bucket: BucketServer, tmp_path: Path
) -> None:
    source = http(bucket, release="v1.1.0")
    ref = ref_of(source)
    bucket.faults.burst_503("per_instance_stats.json", times=FAST.max_attempts - 1)
    assert_same_files(source.fetch(ref, tmp_path), RUN_DIR)
    assert statuses(bucket, "per_instance_stats.json") == [503] * 4 + [200]

    bucket.faults.burst_503("per_instance_stats.json", times=FAST.max_attempts)
    with pytest.raises(HttpRetriesExhaustedError) as caught:
        source.fetch(ref, tmp_path)
    assert isinstance(caught.value, TransientError)  # fails the chunk, resume retries it
    assert re.search(r"GET http://127\.0\.0\.1:\d+/.*per_instance_stats\.json failed 5 times; "
                     r"last: HTTP 503", str(caught.value))


def test_stalled_response_times_out_and_is_retried(bucket: BucketServer, tmp_path: Path) -> None:
    source = http(bucket, release="v1.1.0")
    ref = ref_of(source)
    bucket.faults.stall("run_spec.json", seconds=3.0)
    started = time.monotonic()
    assert_same_files(source.fetch(ref, tmp_path), RUN_DIR)
    assert time.monotonic() - started < 2.5  # gave up on the stall after the 0.3 s read timeout
    assert len(bucket.requests_for(f"{quote_name(RUN)}/run_spec.json")) == 2


@pytest.mark.parametrize(
    "gzip_at_rest, accept_gzip",
    [
        (False, True),  # plain object, Content-Length shorter than promised
        (True, True),  # gzip sent as stored: the compressed stream is cut
        (True, False),  # inflated on the fly, chunked without length: last chunk missing
    ],
)
def test_truncated_body_is_retried(
    gzip_at_rest: bool, accept_gzip: bool, tmp_path: Path
) -> None:
    with BucketServer(gzip_at_rest=gzip_at_rest) as server:
        server.mount("lite/benchmark_output", FIXTURE)
        settings = ClientSettings(**{**FAST.to_json(), "accept_gzip": accept_gzip})
        source = HttpSource(server.base_url, project="lite", client=settings, release="v1.1.0")
        ref = ref_of(source)
        server.faults.truncate("scenario_state.json")
        assert_same_files(source.fetch(ref, tmp_path), RUN_DIR)
        assert len(server.requests_for(f"{quote_name(RUN)}/scenario_state.json")) == 2
        assert not server.faults.pending


def test_truncation_is_caught_by_our_length_check_too(
    bucket: BucketServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without urllib3's own enforcement the byte count against Content-Length still catches it.
    real_get = requests.Session.get

    def lenient_get(self: requests.Session, url: str, **kw: object) -> requests.Response:
        response = real_get(self, url, **kw)  # type: ignore[arg-type]
        response.raw.enforce_content_length = False
        return response

    monkeypatch.setattr(requests.Session, "get", lenient_get)
    bucket.faults.truncate("stats.json", times=FAST.max_attempts)
    with pytest.raises(HttpRetriesExhaustedError, match="length mismatch: Content-Length"):
        HttpClient(FAST, session=requests.Session()).download(
            http(bucket).url(f"lite/benchmark_output/runs/v1.1.0/{RUN}/stats.json"),
            tmp_path / "stats.json",
        )
    assert not (tmp_path / "stats.json").exists() and not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("accept_gzip", [True, False])
def test_gzip_at_rest_is_read_compressed_or_inflated(accept_gzip: bool, tmp_path: Path) -> None:
    with BucketServer(gzip_at_rest=True) as server:
        server.mount("lite/benchmark_output", FIXTURE)
        settings = ClientSettings(**{**FAST.to_json(), "accept_gzip": accept_gzip})
        source = HttpSource(server.base_url, project="lite", client=settings, release="v1.1.0")
        assert_same_files(source.fetch(ref_of(source), tmp_path), RUN_DIR)
        name = f"lite/benchmark_output/runs/v1.1.0/{RUN}/scenario_state.json"
        raw = requests.get(
            server.base_url + "/" + quote_name(name),
            headers={"Accept-Encoding": "gzip" if accept_gzip else "identity"},
            stream=True,
            timeout=5,
        )
        with raw:
            assert (raw.headers.get("Content-Encoding") == "gzip") is accept_gzip
            assert ("Content-Length" in raw.headers) is accept_gzip
            if accept_gzip:  # the wire carries fewer bytes than the file
                size = (RUN_DIR / "scenario_state.json").stat().st_size
                assert int(raw.headers["Content-Length"]) < size


@pytest.mark.parametrize("hashes", [("crc32c", "md5"), ("md5",), ("crc32c",)])
def test_corrupt_body_fails_the_checksum_and_is_retried(
    bucket: BucketServer, tmp_path: Path, hashes: tuple[str, ...]
) -> None:
    bucket.hashes = hashes
    source = http(bucket, release="v1.1.0")
    bucket.faults.corrupt("scenario_state.json")
    assert_same_files(source.fetch(ref_of(source), tmp_path), RUN_DIR)
    assert len(bucket.requests_for(f"{quote_name(RUN)}/scenario_state.json")) == 2


def test_without_a_hash_header_a_corrupt_body_goes_unnoticed(
    bucket: BucketServer, tmp_path: Path
) -> None:
    """The control for the test above: it is the checksum, not the length, that catches it."""
    bucket.hashes = ()
    source = http(bucket, release="v1.1.0")
    bucket.faults.corrupt("scenario_state.json")
    run_dir = source.fetch(ref_of(source), tmp_path)
    assert (run_dir / "scenario_state.json").read_bytes() != (
        RUN_DIR / "scenario_state.json"
    ).read_bytes()
    assert len(bucket.requests_for(f"{quote_name(RUN)}/scenario_state.json")) == 1


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("crc32c=AAAAAA==,md5=1B2M2Y8AsgTpgAmY7PhCfg==", "crc32c"),
        ("md5=1B2M2Y8AsgTpgAmY7PhCfg==", "md5"),
        ("crc32c=AAAAAA==", "crc32c"),
        (" md5 = 1B2M2Y8AsgTpgAmY7PhCfg== , crc32c = AAAAAA== ", "crc32c"),
        ("", None),
        ("sha1=abc", None),
    ],
)
def test_body_check_prefers_crc32c(header: str, kind: str | None) -> None:
    check = BodyCheck.from_headers({"x-goog-hash": header})
    assert (check.kind if check else None) == kind
    if check is not None:  # both sample values are the checksums of the empty body
        assert check.mismatch() is None
        check.update(b"x")
        assert check.mismatch() is not None and kind in check.mismatch()  # type: ignore[operator]


def test_404_of_a_required_file_fails_the_run_and_stops_early(
    bucket: BucketServer, tmp_path: Path
) -> None:
    source = http(bucket, release="v1.1.0")
    ref = ref_of(source)
    bucket.faults.missing(f"{RUN}/stats.json")
    with pytest.raises(RunConversionError) as caught:
        source.fetch(ref, tmp_path)
    assert caught.value.file == "stats.json"
    assert re.fullmatch(
        r"not found \(HTTP 404\) at http://127\.0\.0\.1:\d+/crfm-helm-public/lite/"
        r"benchmark_output/runs/v1\.1\.0/simple_mcqa%3Amodel%3Dsimple_model1/stats\.json",
        caught.value.reason,
    )
    assert bucket.requests_for(f"{quote_name(RUN)}/scenario_state.json") == []  # not fetched
    assert statuses(bucket, "/stats.json") == [404]  # a 404 is not retried


def test_optional_files_may_be_missing_or_present(tmp_path: Path) -> None:
    tree = tmp_path / "bo"
    shutil.copytree(RUN_DIR, tree / "runs/s" / RUN)
    shutil.copytree(FIXTURE / "runs/v1.0.0/simple1:model=simple_model1", tree / "runs/s/other")
    (tree / "runs/s" / RUN / "encryption_data.json").write_text('{"[encrypted_text_0]": {}}')
    state_path = tree / "runs/s" / RUN / "scenario_state.json"
    state = json.loads(state_path.read_text())
    state["request_states"][0]["instance"]["input"]["text"] = "[encrypted_text_0]"
    state_path.write_text(json.dumps(state))
    # a run with placeholders but no key file: asked for, absent, fine
    shutil.copytree(tree / "runs/s" / RUN, tree / "runs/s/nokeys")
    (tree / "runs/s/nokeys/encryption_data.json").unlink()
    with BucketServer() as server:
        server.mount("lite/benchmark_output", tree)
        source = HttpSource(server.base_url, project="lite", client=FAST, suite="s")
        refs = {r.location.rsplit("/", 1)[-1]: r for r in source.discover()}
        got = source.fetch(refs[RUN], tmp_path / "scratch")
        assert (got / "encryption_data.json").read_text() == '{"[encrypted_text_0]": {}}'
        nokeys = source.fetch(refs["nokeys"], tmp_path / "scratch")
        assert not (nokeys / "encryption_data.json").exists()
        assert statuses(server, "nokeys/encryption_data.json") == [404]
        other = source.fetch(refs["other"], tmp_path / "scratch")
        assert not (other / "encryption_data.json").exists()
        # no placeholder in its scenario_state.json: the key file is not even asked for
        assert statuses(server, "other/encryption_data.json") == []
        assert not got.exists()  # the previous run's download was dropped: one run at a time
        assert not any("display_" in e.path or "instances.json" in e.path for e in server.log)


def test_other_client_errors_fail_the_run_without_retrying(
    bucket: BucketServer, tmp_path: Path
) -> None:
    source = http(bucket, release="v1.1.0")
    bucket.faults.status("scenario.json", 403)
    with pytest.raises(RunConversionError, match=r"scenario.json: GET .* answered HTTP 403"):
        source.fetch(ref_of(source), tmp_path)
    assert statuses(bucket, "/scenario.json") == [403]


def test_deadline_bounds_one_attempt(bucket: BucketServer, tmp_path: Path) -> None:
    settings = ClientSettings(
        **{**FAST.to_json(), "deadline_s": 0.0, "min_rate_bytes_s": 1e12, "max_attempts": 2}
    )
    url = http(bucket).url(f"lite/benchmark_output/runs/v1.1.0/{RUN}/per_instance_stats.json")
    with pytest.raises(HttpRetriesExhaustedError, match=r"deadline of 0\.0s passed after \d+"):
        HttpClient(settings).download(url, tmp_path / "x.json")
    # a declared length stretches the deadline to what the minimum rate needs (~1.5 s here)
    stretched = ClientSettings(**{**settings.to_json(), "min_rate_bytes_s": 256 * 1024})
    HttpClient(stretched).download(url, tmp_path / "x.json")
    assert (tmp_path / "x.json").read_bytes() == (RUN_DIR / "per_instance_stats.json").read_bytes()


def test_connection_refused_fails_at_once_without_retrying(tmp_path: Path) -> None:
    """Refused before any byte: offline is not a blip, so no retries and one clear line."""
    with BucketServer() as server:
        dead = server.base_url
    slept: list[float] = []
    said: list[str] = []
    client = HttpClient(FAST, sleep=slept.append, on_retry=said.append)
    with pytest.raises(UnreachableError) as caught:
        client.download(f"{dead}/x.json", tmp_path / "x.json")
    assert str(caught.value) == "cannot reach 127.0.0.1: offline? use --source DIR"
    assert slept == [] and said == []


def test_a_name_that_does_not_resolve_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resolver's answer is faked (no DNS query leaves the machine); the client is real."""

    def no_such_name(*args: object, **kwargs: object) -> NoReturn:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    slept: list[float] = []
    client = HttpClient(FAST, sleep=slept.append, on_retry=lambda line: None)
    with pytest.raises(UnreachableError, match="cannot reach bucket.example: offline"):
        client.download("http://bucket.example/x.json", tmp_path / "x.json")
    assert slept == []


def test_each_retry_says_a_line_and_a_stop_request_ends_the_wait(tmp_path: Path) -> None:
    """503s are retried with one line each; a stop request (the first Ctrl-C) ends the
    back-off at once instead of sleeping it out."""
    said: list[str] = []
    with BucketServer() as server:
        server.mount("lite/benchmark_output", FIXTURE)
        server.faults.burst_503("stats.json", times=2)
        name = f"lite/benchmark_output/runs/v1.1.0/{RUN}/stats.json"
        url = server.base_url + "/" + quote_name(name)
        HttpClient(FAST, sleep=lambda s: None, on_retry=said.append).download(
            url, tmp_path / "a.json"
        )
        assert len(said) == 2 and all("HTTP 503" in line for line in said)
        server.faults.burst_503("stats.json", times=1)
        slow = dataclasses.replace(FAST, base_delay_s=3600.0, max_delay_s=3600.0)
        stop_waits.request()
        try:
            with pytest.raises(WaitInterrupted):
                HttpClient(slow, on_retry=said.append).download(url, tmp_path / "b.json")
        finally:
            stop_waits.clear()


@pytest.mark.parametrize("kind", ["stall", "stall_body"])
def test_a_stop_request_ends_a_read_the_server_stalls(tmp_path: Path, kind: str) -> None:
    """The server holds the response (before its headers, or mid-body) far beyond the read
    timeout; a stop request once the stall began ends the download within a second or two,
    not at the read timeout, and nothing is left at the destination."""
    settings = dataclasses.replace(FAST, read_timeout_s=600.0, deadline_s=1200.0)
    with BucketServer() as server:
        server.mount("lite/benchmark_output", FIXTURE)
        getattr(server.faults, kind)("scenario_state.json", 600.0)
        name = f"lite/benchmark_output/runs/v1.1.0/{RUN}/scenario_state.json"
        url = server.base_url + "/" + quote_name(name)
        stopped_at: list[float] = []

        def stop_once_stalled() -> None:
            while not [e for e in server.requests_for("scenario_state") if e.fault == kind]:
                time.sleep(0.01)
            stopped_at.append(time.monotonic())
            stop_waits.request()

        threading.Thread(target=stop_once_stalled, daemon=True).start()
        try:
            with pytest.raises(WaitInterrupted):
                HttpClient(settings).download(url, tmp_path / "s.json")
            ended = time.monotonic()
        finally:
            stop_waits.clear()
        assert ended - stopped_at[0] < 2.0  # POLL_S is 0.1 s; the read timeout is 600 s
        assert not (tmp_path / "s.json").exists()


# -- faults through the whole pipeline (worker processes) ------------------------------------


def test_job_over_a_flaky_bucket_completes_and_records_404_runs(tmp_path: Path) -> None:
    with BucketServer(max_page_size=2, gzip_at_rest=True) as server:
        server.mount("lite/benchmark_output", FIXTURE)
        server.faults.burst_503("scenario_state.json", times=3)
        server.faults.rate_limit("stats.json", retry_after="0", times=2)
        server.faults.truncate("per_instance_stats.json", times=2)
        server.faults.missing(f"{RUN}/per_instance_stats.json")
        _, report = run_job(
            HttpSource(server.base_url, project="lite", client=FAST, release="v1.1.0"),
            tmp_path / "out",
            tmp_path / "work",
        )
        assert not server.faults.pending  # every injected fault was met and overcome
    assert report["done"] is True
    failure = next(f for f in report["failures"] if f["run"] == f"lite/v1.1.0/{RUN}")
    assert failure["reason"].startswith("per_instance_stats.json: not found (HTTP 404) at http://")


def test_outage_fails_chunks_then_resume_finishes_identically(tmp_path: Path) -> None:
    with BucketServer(max_page_size=2) as server:
        server.mount("lite/benchmark_output", FIXTURE)
        source = FilteredSource(  # 5 runs keep the three jobs short
            HttpSource(server.base_url, project="lite", client=FAST, release="v1.1.0"),
            RunFilters.build(limit=5),
        )
        clean_id, clean = run_job(source, tmp_path / "clean", tmp_path / "w0")
        server.faults.status("stats.json", 503, times=10_000)  # the bucket is down for files
        started = start_job(source, DirPublisher(tmp_path / "out"), chunk_size=3,
                            work_root=tmp_path / "w1")
        with started.journal as journal:
            down = execute_job(journal, ExecOptions(max_workers=2, max_attempts=1)).to_json()
            assert down["done"] is False and down["runs"] == {"ok": 0, "failed": 0}
            server.faults.clear()
            back = execute_job(journal, ExecOptions(max_workers=2)).to_json()  # = resume
    assert back["done"] and back["runs"] == clean["runs"]
    assert folder_digest(tmp_path / "out") == folder_digest(tmp_path / "clean")


# -- client pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, expected",
    [
        ("3", 3.0),  # delta-seconds
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
        ("soon", None),  # unparseable: fall back to backoff
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_as_a_future_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_backoff_is_exponential_with_full_jitter() -> None:
    settings = ClientSettings(base_delay_s=1.0, max_delay_s=8.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        samples = [settings.backoff_s(attempt) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling / 2 and len(set(samples)) > 100  # spread, not fixed


def test_one_session_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    first = process_session()
    assert process_session() is first
    child_pid = os.getpid() + 1
    monkeypatch.setattr(http_client.os, "getpid", lambda: child_pid)  # as if forked
    assert process_session() is not first


def test_http_source_round_trips_through_its_config() -> None:
    source = HttpSource("http://127.0.0.1:9/b", project="lite", suite="v1", client=FAST)
    rebuilt = source_from_config(json.loads(json.dumps(source.config)))
    assert isinstance(rebuilt, HttpSource)
    assert rebuilt.config == source.config and rebuilt.settings == FAST
    assert HttpSource("http://127.0.0.1:9/b", project="lite").config["release"] == "latest"


# -- the CLI against the loopback bucket (subprocesses) --------------------------------------


def helmproc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH)
    return subprocess.run(
        [*HELMPROC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_list_releases_suites_and_runs(bucket: BucketServer, tmp_path: Path) -> None:
    url = ["--source", bucket.base_url]
    proc = helmproc(tmp_path, "list", "releases", "--benchmark", "lite", *url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["v1.1.0"]
    proc = helmproc(tmp_path, "list", "suites", "--benchmark", "lite", *url, "--json")
    assert json.loads(proc.stdout) == ["v1.1.0", "v1.0.0", "v0.1.0"]
    proc = helmproc(tmp_path, "list", "runs", "--benchmark", "lite", "--release", "v1.1.0", *url)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    local = DirSource(FIXTURE, project="lite", release="v1.1.0").discover()
    assert lines == [[r.project, r.suite, r.run_name] for r in local]
    assert "12 runs (release v1.1.0)" in proc.stderr
    proc = helmproc(
        tmp_path, "list", "runs", "--benchmark", "lite", *url, "--suite", "v1.0.0",
        "--adapter-method", "generation", "--exclude", "dyck", "--json",
    )
    assert [r["run_name"] for r in json.loads(proc.stdout)] == [
        "simple1:model=simple_model1",
        "simple_classification:model=simple_model1",
        "synthetic_reasoning:mode=pattern_match,model=simple_model1",
    ]
    # a missing release is a handled error naming the URL, exit 1
    proc = helmproc(tmp_path, "list", "runs", "--benchmark", "lite", "--release", "v9", *url)
    assert proc.returncode == 1
    assert "cannot read the source" in proc.stderr and "v9/runs_to_run_suites.json" in proc.stderr
    # the bucket needs a project, unless the URL names one
    with pytest.raises(ConfigError, match="needs --benchmark"):
        make_source(bucket.base_url, None, None, None)
    named = make_source(f"{bucket.base_url}/lite/benchmark_output", None, "v1.1.0", None)
    assert isinstance(named, HttpSource) and named.project == "lite"


def test_cli_run_several_benchmarks_with_filters(bucket: BucketServer, tmp_path: Path) -> None:
    bucket.mount("mmlu/benchmark_output", FIXTURE)
    proc = helmproc(
        tmp_path, "run", "--source", bucket.base_url, "--benchmark", "lite",
        "--benchmark", "mmlu", "--include", "^simple_mcqa:", "--model", "simple/model1",
        "--limit", "3", "--to", "out", "--max-workers", "2", "--chunk-size", "2", "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["done"] is True
    runs = pq.read_table(sorted((tmp_path / "out").glob("runs/**/*.parquet"))).to_pylist()
    # sorted by (project, suite, run), then the first 3: both of lite's, the first of mmlu's
    assert [(r["helm_project"], r["helm_run"]) for r in runs] == [
        ("lite", "simple_mcqa:model=simple_model1"),
        ("lite", "simple_mcqa:model=simple_model1,data_augmentation=lower"),
        ("mmlu", "simple_mcqa:model=simple_model1"),
    ]
    status = json.loads(helmproc(tmp_path, "status", "--json").stdout)
    assert status["done"] is True


@pytest.mark.parametrize(
    "command, flags",
    [
        (["list", "releases"], ["--benchmark", "--source", "--json"]),
        (["list", "suites"], ["--benchmark", "--source", "--json"]),
        (["list", "runs"], ["--release", "--suite", "--adapter-method", "--model", "--limit"]),
        (["run"], ["--source", "--benchmark", "--include", "--exclude", "--limit"]),
    ],
)
def test_list_and_run_help_name_their_flags(command: list[str], flags: list[str]) -> None:
    from typer.testing import CliRunner

    from helmproc.cli.app import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert all(flag in result.output for flag in flags)


def test_a_worker_fetches_the_release_index_once_per_execution(
    bucket: BucketServer, tmp_path: Path
) -> None:
    """Chunks after the first reuse the worker's source; a resumed execution reads afresh."""
    source = http(bucket, release="v1.1.0")
    started = start_job(source, DirPublisher(tmp_path / "out"), chunk_size=1, work_root=tmp_path)
    index = f"releases/v1.1.0/{RUNS_INDEX}"
    with started.journal as journal:
        at_start = len(bucket.requests_for(index))  # discovery
        assert execute_job(journal, ExecOptions(max_workers=1)).to_json()["done"]
        assert len(journal.plan()) == 12
    assert len(bucket.requests_for(index)) - at_start == 1  # 12 chunks, one worker, one fetch
