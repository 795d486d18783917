"""Decrypt the ``[encrypted_text_N]`` placeholders of encrypted HELM runs (GPQA, EWoK).

Since v0.5.5 HELM publishes some scenarios with every prompt, instance input, reference text,
output-mapping value and completion text of ``scenario_state.json`` replaced by a placeholder
``[encrypted_text_N]`` (the whole field is the placeholder). The run's ``encryption_data.json``
maps each placeholder to ``{ciphertext, key, iv, tag}`` (base64; AES-GCM, one key per text).

:class:`Decryptor` turns a field back into its text when it is a placeholder listed in that
file; it is loaded once per run and decrypts lazily, only the fields that rows use. Rules:

- no ``encryption_data.json``: placeholders are kept as they are (``text`` returns them);
  the converter marks such rows (metadata ``encrypted: "true"``, see ``instance_rows``);
- a placeholder the file does not list is kept the same way;
- a listed placeholder that does not decrypt (bad base64, wrong key size, failed GCM
  authentication, not UTF-8) raises :class:`RunConversionError` for
  ``encryption_data.json``: the file claims to hold the text and does not.

Decryption uses the ``cryptography`` package (a required dependency: AES-GCM is not in the
standard library), imported on the first decryption so that runs without encryption do not
pay for the import. Pure: nothing is written, nothing survives a crash.
"""

from __future__ import annotations

import base64
import binascii
import operator
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from helmproc.engine.errors import RunConversionError
from helmproc.engine.helm.file_names import ENCRYPTION_DATA_FILE
from helmproc.engine.helm.run_files import load_json
from helmproc.engine.input_files import open_input

__all__ = [
    "ENCRYPTION_DATA_FILE",
    "Decryptor",
    "any_placeholder",
    "holds_placeholder",
    "is_placeholder",
]

SCAN_BLOCK_BYTES = 1 << 20

_PLACEHOLDER_PREFIX = "[encrypted_text_"
_PLACEHOLDER = re.compile(r"\[encrypted_text_\d+\]")


def holds_placeholder(path: Path) -> bool:
    """True when the file's bytes contain a placeholder's prefix, i.e. the run may need
    ``encryption_data.json``. Read in 1 MiB blocks (a C-speed search, a fraction of a second
    per GB) rather than memory-mapped: mapped pages would count in the worker's memory that
    the budget watches. A missing file holds none."""
    needle = _PLACEHOLDER_PREFIX.encode()
    tail = b""
    if not path.exists():
        return False
    with open_input(path) as fh:
        while block := fh.read(SCAN_BLOCK_BYTES):
            window = tail + block  # a match may straddle two reads
            if needle in window:
                return True
            tail = window[-(len(needle) - 1) :]
    return False


class EncryptedText(msgspec.Struct, gc=False):
    """One entry of ``encryption_data.json`` (all fields base64)."""

    ciphertext: str
    key: str
    iv: str
    tag: str


def is_placeholder(text: str) -> bool:
    """True when ``text`` is a whole ``[encrypted_text_N]`` placeholder."""
    return text.startswith(_PLACEHOLDER_PREFIX) and _PLACEHOLDER.fullmatch(text) is not None


_STARTS_LIKE_PLACEHOLDER = operator.methodcaller("startswith", _PLACEHOLDER_PREFIX)


def any_placeholder(texts: Sequence[str]) -> bool:
    """True when one of ``texts`` is a whole placeholder. Asked for every row's ten-odd texts,
    so the prefix is tested first at C speed and the pattern only on a prefix hit."""
    return any(map(_STARTS_LIKE_PLACEHOLDER, texts)) and any(map(is_placeholder, texts))


class Decryptor:
    """Placeholder -> plain text for one run (see the module docstring)."""

    def __init__(self, entries: dict[str, EncryptedText] | None = None) -> None:
        self._entries = entries or {}

    @classmethod
    def for_run(cls, run_dir: Path) -> Decryptor:
        """The run's decryptor: from its ``encryption_data.json``, or one that decrypts
        nothing when the file is absent."""
        path = run_dir / ENCRYPTION_DATA_FILE
        if not path.exists():
            return cls()
        return cls(load_json(path, dict[str, EncryptedText]))

    @property
    def has_keys(self) -> bool:
        return bool(self._entries)

    def text(self, value: str) -> str:
        """``value`` decrypted when it is a listed placeholder, else ``value`` unchanged."""
        if not value.startswith(_PLACEHOLDER_PREFIX):
            return value
        entry = self._entries.get(value)
        if entry is None:
            return value
        return _decrypt(value, entry)


def _decrypt(placeholder: str, entry: EncryptedText) -> str:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    try:
        parts: dict[str, Any] = {
            name: base64.b64decode(getattr(entry, name), validate=True)
            for name in ("ciphertext", "key", "iv", "tag")
        }
        decryptor = Cipher(
            algorithms.AES(parts["key"]), modes.GCM(parts["iv"], parts["tag"])
        ).decryptor()
        plain = decryptor.update(parts["ciphertext"]) + decryptor.finalize()
        return plain.decode("utf-8")
    except InvalidTag:
        reason = "authentication failed (wrong key, iv, tag or ciphertext)"
    except (binascii.Error, ValueError) as exc:  # base64, key/iv/tag size, UTF-8
        reason = str(exc) or type(exc).__name__
    raise RunConversionError(ENCRYPTION_DATA_FILE, f"cannot decrypt {placeholder}: {reason}")
