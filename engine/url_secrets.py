"""Credentials in URLs: what the user typed keeps them (in memory, for requests); everything
else sees the URL without them.

A source or destination URL may carry credentials: a ``user:password@`` part, or query
parameters that are keys or tokens (``?token=...``, ``access_token``, ``api_key``, signed-URL
``X-Goog-Signature`` / ``X-Amz-Credential``, ...). :func:`strip_credentials` removes both;
:func:`strip_config` applies it to every string of a config. The journal strips a job's config
before storing it, the dataset card and every message use stripped URLs, and so nothing
written to disk, printed or published holds them. The live URL stays in the process that
makes the requests (and the workers it hands chunks to, through the pipe), never on disk: a
``resume`` therefore reads the source without them, and a source that needs them is resumed
by running the same ``helmproc run`` command again (it continues the job). Pure functions;
nothing persisted.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameter names that are credentials (matched anywhere in the name, any case).
SECRET_PARAM = re.compile(
    r"token|key|secret|passw|pwd|auth|credential|signature|(^|[-_])sig($|[-_])|session",
    re.IGNORECASE,
)
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def strip_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part and without query parameters that look like
    keys or tokens; other URLs (and non-URLs) unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not is_secret(k)]
        query = urlencode(kept)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def is_secret(param: str) -> bool:
    return SECRET_PARAM.search(param) is not None


def strip_text(text: str) -> str:
    """Every URL inside ``text`` stripped (for messages built from other text)."""
    return _URL.sub(lambda m: strip_credentials(m.group(0)), text)


def strip_config(value: Any) -> Any:
    """A copy of a JSON-like config with every string stripped of URL credentials."""
    if isinstance(value, str):
        return strip_text(value)
    if isinstance(value, dict):
        return {k: strip_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strip_config(v) for v in value]
    return value
