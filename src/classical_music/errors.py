"""One exception type for mistakes a user can fix: the CLI prints it on one line and exits 2."""


class UserError(Exception):
    """Bad input from the user (a path, a flag value, a checkpoint): no traceback, exit code 2."""
