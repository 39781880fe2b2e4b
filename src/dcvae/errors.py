"""The one exception type for user mistakes: the CLI prints its message and exits non-zero, without a traceback."""


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
