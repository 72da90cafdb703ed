"""The two kinds of error a user can fix; the CLI prints them as one line, without a traceback."""


class ConfigError(ValueError):
    """A bad configuration value (exit status 2); the message names the key and what is allowed."""


class InputError(ValueError):
    """Bad input data or state on disk (exit status 1); the message names the file and what is wrong."""
