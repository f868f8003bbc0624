"""The error classes netdam raises to its users, and whose fault each is.

``NetdamError`` is the base of every error netdam reports on purpose; the command line
prints such an error as one line and exits non-zero. Anything else escaping is a bug.
"""


class NetdamError(Exception):
    """An error netdam reports to its user (bad input, dead peer, failed check)."""


class UsageError(NetdamError):
    """The caller asked for something that cannot be done (bad argument, bad config)."""
