"""The one exception type wspec raises for problems a user can fix."""


class WspecError(Exception):
    """An error the user can fix; the CLI prints it as one line that says what to do."""
