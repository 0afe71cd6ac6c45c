"""The one exception type for mistakes a user can fix; the CLI turns it into exit code 2."""


class LowprobError(ValueError):
    """Bad input or a missing/corrupt file: the message says what to fix."""
