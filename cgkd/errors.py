"""The base of cgkd's own errors: the ``cgkd`` command prints any of them as one line with exit code 2.

Errors about the user's input subclass ``ValueError`` as well (code that catches ``ValueError`` keeps
working); errors about the state of a folder or a process subclass ``RuntimeError``.
"""

from __future__ import annotations


class CgkdError(Exception):
    """An error the user can act on; its message says what was expected and what was found."""


__all__ = ["CgkdError"]
