"""The one exception type the CLI turns into a one-line message."""


class WorkbenchError(Exception):
    """A problem with the user's input or environment, stated in one line with what to do about it."""
