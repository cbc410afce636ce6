"""The `framebus` command line: the subcommands registered in `framebus.commands`."""

from __future__ import annotations

import argparse
import logging
import sys

from .commands import Command, load_commands
from .errors import FramebusError


def _parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framebus",
        description="Zero-copy shared-memory frame bus: one producer, many consumer processes.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands.values():
        sub = subparsers.add_parser(command.name, help=command.help,
                                    description=command.description or command.help)
        if command.main is None:
            command.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `framebus ARGS...`; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    commands = load_commands()
    # A command with its own parser gets its arguments untouched.
    raw = commands.get(argv[0]) if argv else None
    if raw is not None and raw.main is not None:
        return raw.main(argv[1:])
    args = _parser(commands).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        return commands[args.command].run(args)
    except FramebusError as exc:
        print(f"framebus {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
