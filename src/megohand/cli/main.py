"""Entry point of the ``megohand`` console script, and its error boundary.

Every verb is a dataclass (its fields are the command-line options, documented by their
docstrings) with a ``run()`` method, registered in ``VERBS`` as ``name -> "module:Class"``.
Verb modules import heavy dependencies inside ``run()`` so that ``--help`` stays fast.

Whatever goes wrong, a verb ends with one line on stderr, ``megohand <verb>: error: <message>``
(the message of a :class:`megohand.errors.UserError` names the file, the field, what was expected
and what to do), and a non-zero exit status: 1 for errors, 2 for a command line that does not
parse, 130 for Ctrl-C. ``--debug`` (anywhere on the line) or ``MEGOHAND_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import re
import sys

from megohand.errors import debug_enabled, one_line

# name -> "module:Class"; keep sorted. Add one line per verb.
VERBS: dict[str, str] = {
    "add-copies": "megohand.cli.add_copies:AddCopies",
    "benchmark": "megohand.cli.benchmark:Benchmark",
    "convert": "megohand.cli.convert:Convert",
    "curve": "megohand.cli.curve:Curve",
    "demo": "megohand.cli.demo:Demo",
    "eval": "megohand.cli.eval:Eval",
    "generate": "megohand.cli.generate:Generate",
    "hand-info": "megohand.cli.hand_info:HandInfo",
    "horizon-errors": "megohand.cli.horizon_errors:HorizonErrors",
    "label": "megohand.cli.label:Label",
    "retarget": "megohand.cli.retarget:Retarget",
    "show": "megohand.cli.show:Show",
    "stats": "megohand.cli.stats:Stats",
    "synth": "megohand.cli.synth:Synth",
    "train": "megohand.cli.train:Train",
    "validate": "megohand.cli.validate:Validate",
}


def _load(spec: str):
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


def _summary(spec: str) -> str:
    """First sentence of a verb's docstring, read from its source without importing it (fast; the
    long text stays in ``megohand VERB --help``)."""
    import ast
    from importlib.util import find_spec

    module, cls = spec.split(":")
    tree = ast.parse(open(find_spec(module).origin).read())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    doc = " ".join((ast.get_docstring(node) or "").split())
    m = re.match(r"(.+?\.)(\s|$)", doc)
    first = (m.group(1) if m else doc).rstrip(".")
    return first if len(first) <= 100 else first.split(":")[0]


def usage() -> str:
    """The short top-level help: one line per verb."""
    lines = ["usage: megohand VERB [options]   (megohand VERB --help for a verb's options)", "", "verbs:"]
    for name, spec in VERBS.items():
        lines.append(f"  {name:<14} {_summary(spec)}")
    lines += ["", "options: --debug (or MEGOHAND_DEBUG=1) shows the traceback of an error"]
    return "\n".join(lines)


def _fail(verb: str, message: str, code: int = 1) -> None:
    print(f"megohand {verb}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _condense_tyro(text: str) -> str:
    """tyro's parse error (a box on a terminal, dashed sections otherwise) -> one line: title: first paragraph."""
    title, paragraphs, current = "", [], []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("╭"):
            title = line.strip("╭╮─ ")
            line = ""
        line = line.strip("│").strip()
        if not line or set(line) <= set("─-╰╯ "):
            if current:
                paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(line)
    if current:
        paragraphs.append(" ".join(current))
    paragraphs = [p for p in paragraphs if not p.startswith("For full helptext")]
    if not title and len(paragraphs) > 1:
        title = paragraphs.pop(0)
    msg = " ".join((paragraphs[0] if paragraphs else text).split())
    ours = re.match(r"Error parsing [\w.]+: (.*)", msg)  # a config's own check (UserError in __post_init__)
    if ours and title.lower() == "value error":
        return ours.group(1)
    return f"{title.lower()}: {msg}" if title else msg


def _parse(verb: str, cls, args: list[str], debug: bool, default=None):
    """Parse a verb's options with tyro (``default``: an instance whose fields are the defaults); a bad command line
    ends with one line and status 2."""
    import tyro

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cfg = tyro.cli(cls, args=args, prog=f"megohand {verb}", default=default)
        sys.stderr.write(err.getvalue())  # warnings tyro printed without failing
        return cfg
    except SystemExit as e:
        if e.code in (0, None) or debug:
            sys.stderr.write(err.getvalue())
            raise
        _fail(verb, f"{_condense_tyro(err.getvalue())} (see megohand {verb} --help)", 2)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled() or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        close = difflib.get_close_matches(verb, VERBS, n=1)
        _fail(verb, "unknown verb" + (f"; did you mean {close[0]}?" if close else "") + " (megohand --help lists them)", 2)
    try:
        cls, default = _load(VERBS[verb]), None
        if hasattr(cls, "named_default"):  # `--config NAME`: a named recipe gives the defaults (megohand train)
            cls, default, rest = cls.named_default(rest)
        cfg = _parse(verb, cls, rest, debug, default)
        cfg.run()
    except KeyboardInterrupt:
        if debug:
            raise
        _fail(verb, "interrupted", 130)
    except SystemExit as e:
        if debug or e.code is None or isinstance(e.code, int):
            raise
        _fail(verb, " ".join(str(e.code).split()))  # a verb's own `raise SystemExit("message")`
    except Exception as e:  # the boundary: every error leaves as one line
        if debug:
            raise
        from megohand.errors import UserError

        expected = isinstance(e, (UserError, OSError, ValueError))  # ValueError: libraries' word for bad input
        hint = "" if expected else " (unexpected: rerun with --debug and report the traceback)"
        _fail(verb, one_line(e) + hint)


if __name__ == "__main__":
    main()
