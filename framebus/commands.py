"""The `framebus` command's subcommands, and how applications add their own.

The library's command line names no application. Each subcommand is a
`Command` that a package registers under the ``framebus.commands`` entry-point
group (in its ``pyproject.toml``)::

    [project.entry-points."framebus.commands"]
    record = "mypackage.recorder:COMMAND"

`framebus --help` lists every registered command; `framebus NAME` runs one. A
command module should be cheap to import: keep heavy imports inside `run`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

__all__ = ["Command", "GROUP", "load_commands"]

GROUP = "framebus.commands"

log = logging.getLogger("framebus.cli")


@dataclass(frozen=True)
class Command:
    """One subcommand of `framebus`.

    Args:
        name: the word after `framebus`.
        help: one line for `framebus --help`.
        run: does the work with the parsed arguments; returns the exit status.
        add_arguments: declares the command's options on its parser.
        description: the longer text of `framebus NAME --help`.
        main: for a command that parses its own arguments (it gets them
            untouched, `--help` included); `run` is then never called.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    description: str = ""
    main: Callable[[list[str]], int] | None = None


def load_commands() -> dict[str, Command]:
    """Every command registered under `GROUP`, by name.

    A broken plugin is logged and skipped, so one bad package cannot take the
    whole command line down.
    """
    commands: dict[str, Command] = {}
    for entry in entry_points(group=GROUP):
        try:
            command = entry.load()
        except Exception as exc:  # an optional app whose extra is missing, say
            log.debug("command %s (%s) unavailable: %s", entry.name, entry.value, exc)
            continue
        if not isinstance(command, Command) or command.name != entry.name:
            log.warning("entry point %s = %s is not a framebus Command named %r",
                        entry.name, entry.value, entry.name)
            continue
        commands.setdefault(command.name, command)
    return dict(sorted(commands.items()))
