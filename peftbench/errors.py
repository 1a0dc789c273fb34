"""The one exception type a user sees: a single line saying what was expected and where."""


class PeftbenchError(Exception):
    """An error in the user's input or data; the CLI prints it as one line and exits non-zero."""
