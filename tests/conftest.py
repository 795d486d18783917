"""Fixtures shared by the test modules (helpers that are plain functions live in jobkit)."""

from __future__ import annotations

import pytest

from tests.fakes.jobkit import FIXED_EPOCH, folder_digest, reference_job


@pytest.fixture
def fixed_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs started in the test get one timestamp, so their bytes can be compared; modules
    that compare bytes use it for every test (``pytestmark = usefixtures("fixed_epoch")``)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Digest of an uninterrupted job over the fixture release (chunk size 3, 2 workers)
    written to a local folder: what every other way of running it must equal."""
    return folder_digest(reference_job(tmp_path_factory.mktemp("reference")) / "out")
