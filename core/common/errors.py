"""Errors that Secateur reports to a user, each mapped to a CLI exit code.

A mistake of the user's (a missing file, an unknown architecture, a bad
parameter) raises ``InputError``: the CLI prints its message and exits with 2,
never a traceback. Work that fails for other reasons raises ``WorkError``
(exit 1). Messages name the argument, what was wrong and what is accepted.
"""

from __future__ import annotations


class SecateurError(Exception):
    """Base of the errors Secateur reports to a user as a plain message."""

    exit_code = 1


class InputError(SecateurError):
    """Bad input from the user: a wrong argument, file, data folder or value."""

    exit_code = 2


class WorkError(SecateurError):
    """The requested work could not be done (out of memory, a failing model)."""

    exit_code = 1


class Cancelled(SecateurError):
    """The user cancelled a long job; nothing was changed."""

    exit_code = 130


def first_line(error: BaseException) -> str:
    """The first line of an error's message ("" when it has none): messages quote it, not the whole text."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
