"""Exception types of helmproc, classified where they are raised.

Every error carries what a user needs to act: the operation, the run or chunk, the file, and
a hint. ``TransientError`` subclasses are retried by the stage that sees them; everything else
is terminal for the thing it names. All of them pickle across process boundaries (plain
``args``), so a worker can raise and the coordinator can record. The single table that turns
them into user-facing messages lives in ``helmproc.cli.errors``.
"""

from __future__ import annotations

import socket


class HelmprocError(Exception):
    """Base of every error helmproc raises on purpose."""


class TransientError(HelmprocError):
    """A failure that may succeed when retried (network, rate limit, busy resource)."""


class UnreachableError(TransientError):
    """A host could not be reached at all: its name did not resolve, or it refused the
    connection before sending a byte. Raised at once, never retried (offline is not a blip)."""

    def __init__(self, host: str, advice: str) -> None:
        super().__init__(host, advice)
        self.host = host
        self.advice = advice

    def __str__(self) -> str:
        return f"cannot reach {self.host}: offline? {self.advice}"


def never_connected(exc: BaseException) -> bool:
    """Whether ``exc`` (from any HTTP client) means the host was never reached: its name did
    not resolve (``socket.gaierror``) or it refused the connection. Looks through the clients'
    wrapping exceptions (``__cause__``, ``__context__``, ``reason``, exceptions in ``args``)."""
    stack: list[object] = [exc]
    seen: set[int] = set()
    while stack:
        cur = stack.pop()
        if not isinstance(cur, BaseException) or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, socket.gaierror | ConnectionRefusedError):
            return True
        stack += [cur.__cause__, cur.__context__, getattr(cur, "reason", None), *cur.args]
    return False


class WaitInterrupted(TransientError):
    """A wait on the network (a retry's back-off, a rate limit) was cut short by a stop request
    (the first Ctrl-C); what it was for is left to ``resume``."""


class ConfigError(HelmprocError):
    """The job was asked for something impossible (bad source path, bad flag value)."""


class SourceError(HelmprocError):
    """A source could not list or read what the job needs (not specific to one run)."""


class RunConversionError(HelmprocError):
    """One run could not be converted. Recorded as that run's outcome; never fails a chunk.

    ``file`` is the HELM file at fault (e.g. ``stats.json``) and ``reason`` says what was
    wrong with it.
    """

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(file, reason)
        self.file = file
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class JournalError(HelmprocError):
    """The journal refused an operation (illegal transition, wrong schema, missing job)."""


class IllegalTransitionError(JournalError):
    """A chunk was asked to move to a state not reachable from its current one."""


class JournalLockedError(JournalError):
    """Another coordinator holds this journal."""


class NoJobError(JournalError):
    """No journal / job was found where one was expected."""


class BadJournalFileError(JournalError):
    """The journal file is damaged (not SQLite, truncated, garbled) or not a helmproc journal."""


class PublishError(HelmprocError):
    """The destination refused or lost a shard."""


class DestinationBusyError(HelmprocError):
    """Another job writes into the same destination (one writer at a time)."""


class DestinationConflictError(HelmprocError):
    """Another job published some of this job's runs into the destination meanwhile."""


class DiskFullError(HelmprocError):
    """No space left where helmproc was writing. Terminal for the job until space is freed."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        return f"disk full at {self.path}"


class UnwritableError(HelmprocError):
    """A folder helmproc must write (staging, scratch) refuses writes: read-only or no
    permission. Terminal for the job until it is fixed, like a full disk."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"
