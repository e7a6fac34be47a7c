"""The project's one exception type for input a person can fix, and its one-line rendering.

Raise :class:`UserError` (or a subclass: ``StoreError``, ``SourceError``, ``PackError``) wherever
bad input is detected: the ``megohand`` command line prints it as one line, ``megohand <verb>:
error: <message>``, and exits with status 1 (``--debug`` or ``MEGOHAND_DEBUG=1`` shows the
traceback). A good message names the file (or option), the field, what was expected and what to
do; the keyword arguments assemble it in that order::

    raise UserError("not valid JSON", path=p, field="fps", expected="a number > 0",
                    hint="rerun megohand convert with --overwrite")
    # -> "<p>: fps: not valid JSON; expected a number > 0 (rerun megohand convert with --overwrite)"

It subclasses ``ValueError`` so that code catching bad values keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path

DEBUG_ENV = "MEGOHAND_DEBUG"


class UserError(ValueError):
    """Bad input or a refused action; the message says where, what was expected and what to do."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, field: str | None = None,
                 expected: str | None = None, hint: str | None = None):
        self.path = None if path is None else Path(path)
        self.field = field
        self.expected = expected
        self.hint = hint
        head = ": ".join(str(x) for x in (path, field) if x is not None)
        text = f"{head}: {message}" if head else message
        if expected:
            text += f"; expected {expected}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


def debug_enabled() -> bool:
    """True when ``MEGOHAND_DEBUG`` is set to anything but '', '0', 'false' or 'no'."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(exc: BaseException, limit: int = 600) -> str:
    """A single line describing ``exc``: the message of a UserError; for anything else its type, the
    file it names (OSError) and its message, whitespace collapsed and cut at ``limit`` characters."""
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(x) for x in (exc.filename, exc.filename2) if x is not None]
        text = f"{' -> '.join(names)}: {exc.strerror}" if names else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    if not isinstance(exc, (UserError, OSError)):
        text = f"{type(exc).__name__}: {text}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
