"""Errors a user can act on. Each message names the file or config field at fault and says how to fix it."""


class InvbenchError(Exception):
    """Base class: an error caused by input or configuration, not by a bug in invbench."""


class ConfigError(InvbenchError):
    """A configuration value is missing, unknown or inconsistent."""


class ModelNotAvailableError(InvbenchError):
    """Model weights were asked for but are not on this machine (invbench never downloads during a run)."""


class BenchmarkFormatError(InvbenchError):
    """A PIE-Bench mapping file or sample does not follow the format."""
