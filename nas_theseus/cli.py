"""The ``nas-theseus`` command line. ``main(argv) -> int`` so tests call it in-process.

A :class:`~nas_theseus.errors.UserError` prints one line (``error: ...``) and exits with 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def _cmd_blocks(args: argparse.Namespace) -> int:
    from .targets import BLOCKS
    from .targets.registry import default_options

    for name in sorted(BLOCKS):
        opts = ", ".join(f"{k}={v!r}" for k, v in default_options(name).items())
        doc = (BLOCKS[name].__doc__ or "").strip().splitlines()[0]
        print(f"{name:10s} {doc}\n{'':10s} options: {opts or '(none)'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas-theseus",
        description="Convert a guide network into another architecture part by part (Network of Theseus).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("blocks", help="list the registered target blocks and their options")
    p.set_defaults(func=_cmd_blocks)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
