"""EEE's JSON Schemas, read from the ``every-eval-ever`` package (never from outside the repo).

``every-eval-ever`` needs Python >= 3.12, so the tests that use these schemas carry the
``eee_schemas`` marker: the README's ``pytest -q`` (Python 3.11) leaves them out, and
``tox -e conformance`` (Python 3.12, run by ``.ci/run``) runs exactly them with
``pytest -m eee_schemas``. Without the package they fail on the import: they never skip.
"""

from __future__ import annotations

from typing import Any


def eee_schema(name: str) -> dict[str, Any]:
    """The schema ``name`` (``eval.schema.json``, ``instance_level_eval.schema.json``)."""
    from every_eval_ever.schema import schema_json

    return dict(schema_json(name))
