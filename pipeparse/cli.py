"""The `pipeparse` command: one subcommand per tool, each in the package that owns it.

A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``; it is imported
only when its subcommand runs, so `pipeparse load` never pays for the server's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

__all__ = ["main"]

_COMMANDS = {
    "serve": ("pipeparse.servers.cli", "run an HTTP/1.1 server (engines: pipeparse, h11)"),
    "load": ("pipeparse.clients.load.cli", "drive a server with pipelined HTTP/1.1 load"),
    "bench": ("pipeparse.clients.bench.main", "run the concurrency benchmark"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="pipeparse", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pipeparse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in _COMMANDS else None
    modules = {}
    for name, (module_name, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == wanted:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
