"""Entry point of the ``megohand`` console script.

Every verb is a dataclass (its fields are the command-line options, documented by their
docstrings) with a ``run()`` method, registered in ``VERBS`` as ``name -> "module:Class"``.
Verb modules import heavy dependencies inside ``run()`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import tyro

# name -> "module:Class"; keep sorted. Add one line per verb.
VERBS: dict[str, str] = {
    "convert": "megohand.cli.convert:Convert",
    "demo": "megohand.cli.demo:Demo",
    "eval": "megohand.cli.eval:Eval",
    "generate": "megohand.cli.generate:Generate",
    "hand-info": "megohand.cli.hand_info:HandInfo",
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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    verbs = {name: _load(spec) for name, spec in sorted(VERBS.items())}
    cfg = tyro.extras.subcommand_cli_from_dict(verbs, args=argv, prog="megohand")
    cfg.run()


if __name__ == "__main__":
    main()
