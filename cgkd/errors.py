"""The base of cgkd's own errors: the ``cgkd`` command prints any of them as one line with exit code 2.

Errors about the user's input subclass ``ValueError`` as well (code that catches ``ValueError`` keeps
working); errors about the state of a folder or a process subclass ``RuntimeError``.
"""

from __future__ import annotations


class CgkdError(Exception):
    """An error the user can act on; its message says what was expected and what was found."""





class MissingExtraError(CgkdError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, what: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install "cgkd[extra]"``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{what} needs the Python package {module.split('.')[0]!r}, which is not installed "
                                f"({exc}); install it with: pip install \"cgkd[{extra}]\"") from None
__all__ = ["CgkdError", "MissingExtraError", "require"]
