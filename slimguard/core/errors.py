"""User-facing errors.

Anything raised as :class:`SlimguardError` is printed by the CLI as one line
(``error: ...``) with a non-zero exit code and no traceback. Library users get an
ordinary exception they can catch.
"""


class SlimguardError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


class AssetError(SlimguardError):
    """An asset is unknown, missing, corrupt or could not be downloaded."""


class ConfigError(SlimguardError):
    """A config file or override is invalid."""


class DataError(SlimguardError):
    """A dataset file or argument is invalid."""
