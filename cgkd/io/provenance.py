"""Provenance of finished stages: what went in, so that a rerun on other inputs is refused.

A stage (teachers, labels, student, CG MD) writes ``provenance.json`` into its output folder when it
starts::

    {"stage": "cgmd", "inputs": {"model": "sha256:...", "cg": "sha256:..."},
     "settings": {...}, "cgkd": "0.1.0"}

A rerun into the same folder compares its own inputs and settings with the stored ones. Equal: the
run resumes or returns the finished result. Different: :class:`ProvenanceError` lists what changed
and how to proceed (another output folder, or the stage's ``overwrite`` option).

Digests are SHA-256 of file contents (:func:`file_digest`), or of the arrays that matter for data
files whose other parts change (``cgkd.data.cg_h5.content_digest`` leaves out the labels group).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

from cgkd.errors import CgkdError
from cgkd.io.atomic import write_text

PROVENANCE_FILE = "provenance.json"


class ProvenanceError(CgkdError, ValueError):
    """A stage's output folder was made from other inputs or settings than those of the rerun."""


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """``"sha256:<hex>"`` of the bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return "sha256:" + h.hexdigest()


def settings_digest(obj: Any) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``obj``."""
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def record(stage: str, inputs: Dict[str, str], settings: Dict[str, Any]) -> dict:
    """The provenance record of one stage: input digests and settings (JSON-normalised)."""
    from cgkd import __version__

    return {"stage": stage, "inputs": dict(inputs), "settings": _jsonable(settings), "cgkd": __version__}


def _differences(old: dict, new: dict) -> list:
    out = []
    for part in ("inputs", "settings"):
        a, b = old.get(part, {}), new.get(part, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{part[:-1] if part == 'inputs' else 'setting'} {key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def check_or_stamp(folder: str | Path, rec: dict, *, how_to_redo: str = "") -> Optional[dict]:
    """Compare ``rec`` with the folder's stored provenance; write it when there is none.

    Returns the stored record when it matches (a resume), None when the folder was new.

    Raises
    ------
    ProvenanceError
        When the folder holds a result of the same stage made from other inputs or settings.
    """
    folder = Path(folder)
    path = folder / PROVENANCE_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ProvenanceError(f"{path} is unreadable ({exc}); move the folder away or redo the stage") from None
        diff = _differences(old, rec) if old.get("stage") == rec["stage"] else [f"stage: {old.get('stage')!r} -> {rec['stage']!r}"]
        if diff:
            shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
            raise ProvenanceError(
                f"{folder} holds a {old.get('stage')} result made from other inputs or settings ({shown}); "
                f"use another output folder{', or ' + how_to_redo if how_to_redo else ''}"
            )
        return old
    folder.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(rec, indent=1))
    return None


def read_provenance(folder: str | Path) -> Optional[dict]:
    """The stored record of ``folder``, or None."""
    path = Path(folder) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = ["ProvenanceError", "file_digest", "settings_digest", "record", "check_or_stamp", "read_provenance",
           "PROVENANCE_FILE"]
