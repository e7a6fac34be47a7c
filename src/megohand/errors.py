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


def check(ok: bool, option: str, value, expected: str, hint: str | None = None) -> None:
    """Raise ``UserError("<option>: got <value>; expected <expected>")`` unless ``ok`` (argument validation)."""
    if not ok:
        raise UserError(f"got {value!r}", field=option, expected=expected, hint=hint)


def check_min(minimum: float, **options) -> None:
    """Each keyword (an option name, ``_`` for ``-``) must be None or >= ``minimum``."""
    for name, value in options.items():
        if value is not None:
            check(value >= minimum, "--" + name.replace("_", "-"), value,
                  f"{'an integer' if isinstance(value, int) else 'a number'} >= {minimum}")


def check_fraction(**options) -> None:
    """Each keyword must lie in [0, 1]."""
    for name, value in options.items():
        check(0 <= value <= 1, "--" + name.replace("_", "-"), value, "a number in [0, 1]")


def check_input(path, option: str, kind: str = "folder", what: str = "") -> None:
    """``path`` (given as ``option``) must exist as a folder (``kind="folder"``) or a file."""
    exists = os.path.isdir(path) if kind == "folder" else os.path.isfile(path)
    if not exists:
        there = "nothing there" if not os.path.exists(path) else f"not a {kind}"
        raise UserError(f"{what + ' ' if what else ''}{kind} not found: {there}", path=path, hint=f"check {option}")
