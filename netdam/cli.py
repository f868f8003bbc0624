"""The ``netdam`` command: argument parsing, rich help and dispatch to subcommands.

Owns the command-line surface of DESIGN.md's contract. Each subcommand lives in its own
module exposing ``add_arguments(parser)`` and ``run(args) -> int``; this module imports
only the one being run, so ``netdam --help`` stays fast. Errors the user can fix are
one readable line (exit 2 for usage, 1 for a failed run), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console
from rich.markup import escape
from rich_argparse import RichHelpFormatter

from netdam import __version__
from netdam.errors import NetdamError, UsageError

#: name -> (module, help). Order is the order of `netdam --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("netdam.demo", "run the main job: a local cluster, every collective, checked"),
    "launch": ("netdam.launch", "start a local cluster and run SCRIPT as N host ranks"),
    "run": ("netdam.collectives.run_cmd", "run one collective on a local cluster, checked"),
    "bench": ("netdam.collectives.bench", "nccl-tests style sweep: time, algbw, busbw, #wrong"),
    "device": ("netdam.device", "run one emulated device (UDP, optional shared memory)"),
    "coordinator": ("netdam.control.coordinator", "run the control-plane coordinator"),
    "status": ("netdam.control.status", "live counters and health of a running cluster"),
    "dissect": ("netdam.capture.dissect", "read a pcap of netdam traffic: table, flows, ladder"),
    "dissector": ("netdam.capture.dissect:dissector", "install or locate the Wireshark plugin"),
    "sim": ("netdam.sim.command", "simulate a collective on a modeled fabric at scale"),
    "soak": ("netdam.soak", "mixed collectives and primitives under faults, checked"),
}


# group titles as written, first letter capitalised ("Fault injection (on this side's
# sends)", not rich-argparse's default title case "... Side'S Sends")
RichHelpFormatter.group_name_formatter = staticmethod(lambda s: s[:1].upper() + s[1:])


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr."""

    def error(self, message: str):  # noqa: D401 - argparse API
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]{self.prog}: error:[/] {escape(message)} (see `{self.prog} --help`)",
            highlight=False)
        raise SystemExit(2)


def _load(spec: str):
    module, _, prefix = spec.partition(":")
    mod = importlib.import_module(module)
    add = getattr(mod, f"{prefix}_add_arguments" if prefix else "add_arguments")
    run = getattr(mod, f"{prefix}_run" if prefix else "run")
    return add, run


def build_parser(only: str | None = None) -> Parser:
    """The full parser; subcommand arguments are attached for ``only`` (or all if None)."""
    parser = Parser(prog="netdam", formatter_class=RichHelpFormatter,
                    description="netdam: emulated NetDAM devices, host agents and collectives.")
    parser.add_argument("--version", action="version", version=f"netdam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (spec, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=RichHelpFormatter)
        if only is None or only == name:
            add, run = _load(spec)
            add(p)
            p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else "")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except NetdamError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]netdam {args.command}:[/] "
                                                   f"{escape(str(exc))}",
                                                   highlight=False)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
