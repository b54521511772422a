"""The one exception type for mistakes a user can fix; the CLI turns it into a one-line message."""


class EdgeclsError(Exception):
    """A user-facing error: bad input, missing files or data. Its message says what to do."""
