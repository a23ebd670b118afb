"""Exceptions that carry a message meant for the user.

The CLI turns every :class:`ByolError` into a one-line message on stderr and exit code 2,
so raise one of these (naming the file, flag or value at fault) for anything the user can fix.
"""


class ByolError(Exception):
    """Base class of the errors a user can act on."""


class ConfigError(ByolError, ValueError):
    """A configuration key or value is unknown, of the wrong type or out of range."""


class DataError(ByolError, ValueError):
    """A dataset is missing, empty or unreadable."""


class CheckpointError(ByolError):
    """A checkpoint is missing, corrupt, untrusted or incompatible."""
