"""The rich pieces the commands share: the console their reports go to, and the progress
bar shown while cases run.

Owns how ``netdam demo``, ``bench``, ``sim`` and friends show their output, so they look
alike: tables as wide as the terminal, or whole when written to a file or a pipe; a
progress bar with a description, a bar, done/total and the time elapsed, removed when
done; and the check that an output file can be written where it is asked for.
"""

from __future__ import annotations

import os
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
    """Refuse, before any work, an output file option (``--json FILE`` ...) whose
    directory does not exist: found only at the end, it would cost the whole run."""
    for name in names:
        path = getattr(args, name, None)
        if path and path != "-" and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"--{name} {path}: no such directory")


def progress_bar(console: Console | None = None) -> Progress:
    """A transient bar; use as a context manager, ``add_task(description, total=n)``."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)
