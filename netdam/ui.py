"""The rich pieces the commands share: the console their reports go to, and the progress
bar shown while cases run.

Owns how ``netdam demo``, ``bench``, ``sim`` and friends show their output, so they look
alike: tables as wide as the terminal, or whole when written to a file or a pipe; a
progress bar with a description, a bar, done/total and the time elapsed, removed when
done; and the check that an output file can be written where it is asked for.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from netdam.errors import UsageError


#: columns of a report written to a file or a pipe: wide enough for every table netdam
#: prints (a table takes only the width it needs)
REPORT_WIDTH = 240


def report_console() -> Console:
    """The console a command prints its report on. In a terminal, rich fits tables to its
    width. Written to a file or a pipe, rich would assume 80 columns and cut numbers
    short ("9,…"), so this one is ``REPORT_WIDTH`` wide, unless ``COLUMNS`` says."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=REPORT_WIDTH)
    return console


def check_outputs(args, *names: str) -> None:
    """Refuse, before any work, an output file option (``--json FILE`` ...) that cannot
    be written: its directory does not exist, it is a directory, or nothing may be
    created there (a read-only place, /proc). Found only at the end, it would cost the
    whole run."""
    for name in names:
        path = getattr(args, name, None)
        if not path or path == "-":
            continue
        where = Path(path).resolve()
        if where.is_dir():
            raise UsageError(f"--{name} {path}: is a directory")
        if not where.parent.is_dir():
            raise UsageError(f"--{name} {path}: no such directory")
        try:       # a file of our own there, gone once closed: the file itself is not
            with tempfile.TemporaryFile(dir=where.parent):   # touched before the end
                pass
        except OSError as exc:
            raise UsageError(f"--{name} {path}: cannot write there "
                             f"({exc.strerror or exc})") from None
        if where.exists() and not os.access(where, os.W_OK):
            raise UsageError(f"--{name} {path}: not writable")


def write_output(name: str, path: str, text: str) -> None:
    """Write an output file a command was asked for; a failure there (the disk filled
    while the command ran) is one line, after the report it would have held."""
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise UsageError(f"--{name} {path}: {exc.strerror or exc}") from None


def progress_bar(console: Console | None = None) -> Progress:
    """A transient bar; use as a context manager, ``add_task(description, total=n)``."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)
