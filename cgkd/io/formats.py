"""The one format/version check every cgkd file reader calls, so every format error reads the same.

Each cgkd file carries a ``format`` name and an integer ``format_version``. A reader accepts its own
format at any version from 1 up to the newest it knows (older files keep loading); a newer version
asks for a newer cgkd.
"""

from __future__ import annotations

from cgkd.errors import CgkdError


class FormatError(CgkdError, ValueError):
    """A file is not of the expected cgkd format, or of a version this cgkd cannot read."""


def check_format(found_format, found_version, expected: str, newest: int, where: str) -> int:
    """Check a file's format tag and version; return the version as an int.

    Parameters
    ----------
    found_format : object
        The file's ``format`` value (None when it has none).
    found_version : object
        The file's ``format_version`` value.
    expected : str
        The format name the reader reads (``"cgkd-cg"``, ...).
    newest : int
        The newest version this cgkd writes.
    where : str
        The file (or object) named in the error.
    """
    if isinstance(found_format, bytes):
        found_format = found_format.decode()
    if found_format != expected:
        raise FormatError(f"{where} is not a {expected} file (its format is {found_format!r}, expected {expected!r})")
    try:
        version = int(found_version)
        if version != found_version and not isinstance(found_version, str):
            raise ValueError
    except (TypeError, ValueError):
        raise FormatError(f"{where}: {expected} format_version must be an integer, got {found_version!r}") from None
    if not 1 <= version <= newest:
        hint = " (written by a newer cgkd: upgrade cgkd)" if version > newest else ""
        raise FormatError(f"{where}: {expected} format_version {version} is not readable; "
                          f"this cgkd reads versions 1..{newest}{hint}")
    return version


__all__ = ["FormatError", "check_format"]


def read_json(path, what: str = "JSON file"):
    """The JSON document in ``path``; a missing, unreadable or malformed file raises an error naming it."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        raise FormatError(f"{path} is not a {what} (not text)") from None
    except ValueError as exc:
        raise FormatError(f"{path} is not a valid {what} ({exc}); it may be truncated or of another kind") from None


def parse_json(text: str, where: str):
    """``json.loads(text)`` with an error that names ``where``."""
    import json

    try:
        return json.loads(text)
    except ValueError as exc:
        raise FormatError(f"{where} is not valid JSON ({exc})") from None
