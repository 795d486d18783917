"""Where an exported run goes in the EEE datastore: its file uuid and its three path parts.

Pure functions, no I/O. The layout is ``data/<collection>/<developer>/<model>/<uuid>.json``
plus ``<uuid>_samples.jsonl``, the layout of EEE's datastore.

- **File uuid.** EEE wants a version-4 uuid per file pair; it draws a random one per
  conversion, so its file names change on every run. helmproc derives it instead: the first
  16 bytes of ``sha256("helmproc.eee-export.v1\\0<project>\\0<suite>\\0<run>")`` with the
  version nibble set to 4 and the RFC 4122 variant bits set. It is uuid4-shaped (what EEE's
  ``require_uuid4`` and the schema's ``file_path`` pattern check), stable for the same run
  identity, and different for different runs, so re-exporting writes the same file names.
- **Model identity.** helmproc has no HELM model registry. The record's ``model_info.id`` is
  the run's own model id (the ``model_id`` column: run_spec ``adapter_spec.model``, see
  :mod:`eee_fields`). EEE files a record under the id's prefix before the first ``/`` (the
  developer) and the rest with ``/`` flattened to ``_`` (the model); ``model_info.developer``
  is read only when the id has no ``/``. For such a flat id helmproc takes the developer from
  the run's data: the ``model_developer`` column if set, else the part of
  ``model_deployment`` before its ``/`` (HELM deployments are ``<host>/<name>``), else the
  placeholder :data:`UNATTRIBUTED_DEVELOPER`.
- **Path components** must pass EEE's path rules: not empty, ``.``, ``..``, ``unknown`` (any
  case) or ``data``, no ``<>:"\\|?*`` or control characters, no trailing dot or space, no
  Windows-reserved base name (CON, PRN, AUX, NUL, COM1-9, LPT1-9). EEE itself turns ``:`` into
  ``_`` and strips surrounding whitespace; every other violation makes EEE refuse the id.
  helmproc sanitizes deterministically instead (:func:`safe_component`): each bad character
  becomes ``_``, trailing dots and spaces are dropped, an empty result becomes ``_``, and a
  reserved name gets a ``_`` prefix (``data`` -> ``_data``, ``CON.x`` -> ``_CON.x``). When any
  part of the model id needed more than EEE's own ``:``/whitespace handling, the record's
  ``model_info.id`` becomes the sanitized parts joined with ``/``, so the id and the folder
  agree (EEE's validator warns when they do not); the HELM id is kept in
  ``model_info.additional_details.helm_model_id``. The collection is the evaluation name
  (scenario.json ``name``) with each ``/``-separated part made safe and joined with ``_``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

DATA_DIR = "data"
UUID_NAMESPACE = "helmproc.eee-export.v1"
UNATTRIBUTED_DEVELOPER = "unattributed"

_BAD_CHARS = re.compile(r'[<>:"\\|?*\x00-\x1f]')
_RESERVED_LOWER = frozenset({"unknown", "data"})
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)


def file_uuid(project: str, suite: str, run_name: str) -> str:
    """The stable uuid4-shaped file uuid of one run (see the module docstring)."""
    text = "\0".join((UUID_NAMESPACE, project, suite, run_name))
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _is_reserved(component: str) -> bool:
    return (
        component.lower() in _RESERVED_LOWER
        or component.split(".", 1)[0].upper() in _WINDOWS_RESERVED
    )


def is_safe_component(component: str) -> bool:
    """True if EEE accepts ``component`` as one path part exactly as written."""
    return (
        bool(component)
        and component not in (".", "..")
        and component == component.strip()
        and not _BAD_CHARS.search(component)
        and not component.endswith((".", " "))
        and not _is_reserved(component)
    )


def safe_component(text: str) -> str:
    """``text`` made into one path part EEE accepts (deterministic; see the module docstring).

    Text EEE accepts after its own handling (surrounding whitespace stripped, ``:`` -> ``_``)
    comes out exactly as EEE would write it.
    """
    # strip first, as EEE does: some control characters are also whitespace
    component = _BAD_CHARS.sub("_", text.strip().replace("/", "_"))
    while (trimmed := component.strip().rstrip(". ")) != component:
        component = trimmed
    if not component:
        return "_"
    return "_" + component if _is_reserved(component) else component


def _eee_accepts_part(part: str) -> bool:
    """True if EEE files this model-id part without refusing it (``:`` is its own rewrite)."""
    return is_safe_component(part.strip().replace(":", "_"))


@dataclass(frozen=True)
class RecordLayout:
    """Where one run is written and the model identity its records carry.

    ``model_id`` is the id written to ``model_info.id`` and to every sample line;
    ``helm_model_id`` is set only when that differs from the dataset's id.
    """

    file_uuid: str
    collection: str
    developer: str
    model: str
    model_id: str
    model_developer: str | None
    helm_model_id: str | None

    @property
    def folder(self) -> str:
        """The repository-relative folder, ``data/<collection>/<developer>/<model>``."""
        return f"{DATA_DIR}/{self.collection}/{self.developer}/{self.model}"

    @property
    def aggregate_path(self) -> str:
        return f"{self.folder}/{self.file_uuid}.json"

    @property
    def samples_path(self) -> str:
        return f"{self.folder}/{self.file_uuid}_samples.jsonl"


def collection_name(evaluation_name: str) -> str:
    """The collection folder: each ``/`` part of the evaluation name made safe, joined by _."""
    return "_".join(safe_component(part) for part in evaluation_name.strip().split("/"))


def flat_id_developer(model_developer: str | None, model_deployment: str | None) -> str:
    """The developer of a model id without ``/``, from the run's own data."""
    if model_developer and model_developer.strip():
        return model_developer.strip()
    host, sep, _ = (model_deployment or "").partition("/")
    if sep and host.strip():
        return host.strip()
    return UNATTRIBUTED_DEVELOPER


def record_layout(
    project: str,
    suite: str,
    run_name: str,
    *,
    evaluation_name: str,
    model_id: str,
    model_developer: str | None,
    model_deployment: str | None,
) -> RecordLayout:
    """The layout and model identity of one run's records (rules in the module docstring)."""
    parts = model_id.strip().split("/")
    needs_rewrite = not all(_eee_accepts_part(p) for p in parts)
    if len(parts) >= 2:
        developer = safe_component(parts[0])
        rest = [safe_component(p) for p in parts[1:]]
        model = "_".join(rest)
        record_id = "/".join([developer, *rest]) if needs_rewrite else model_id
        record_developer = model_developer
    else:
        stated = flat_id_developer(model_developer, model_deployment)
        developer = safe_component(stated)
        model = safe_component(parts[0])
        record_id = model if needs_rewrite else model_id
        record_developer = developer
    return RecordLayout(
        file_uuid=file_uuid(project, suite, run_name),
        collection=collection_name(evaluation_name),
        developer=developer,
        model=model,
        model_id=record_id,
        model_developer=record_developer,
        helm_model_id=model_id if record_id != model_id else None,
    )
