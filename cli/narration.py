"""What the command line says on stderr: narration lines and counted nouns ("1 worker").

Stateless; nothing here survives a crash or needs to.
"""

from __future__ import annotations

import sys


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 worker``, ``2 workers``; ``plural`` for nouns that do not just take an ``s``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def examples(*lines: str) -> str:
    """A help epilog listing example commands, kept as written (click's ``\\b`` marker)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)
