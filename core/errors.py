"""The typed errors of edgecls: mistakes a user can fix, each with the exit code the CLI gives it.

The CLI maps them in one place (commands/cli.py, `cli_errors`) to one `Error:` line and the exit code;
library code raises them and never prints a traceback for them."""


class EdgeclsError(Exception):
    """A user-facing error: bad input, missing files or data. Its message says what to do."""

    exit_code = 1


class UsageError(EdgeclsError):
    """Nothing could be run: bad paths or options, a missing or unusable model."""

    exit_code = 2


class MissingExtra(UsageError):
    """The command needs an optional install (an extra) that is not there; the message names it."""
