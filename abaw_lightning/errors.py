"""The one exception type for mistakes a user can fix: shown as a message, never a traceback."""


class UserError(Exception):
    """A problem with the user's data, paths or configuration; the message says what to do."""
