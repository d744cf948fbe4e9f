"""Errors that the CLI reports as one clear line, without a traceback."""


class TrlCausalError(ValueError):
    """Base class of user-facing errors: bad config, bad data, bad plugin."""


class ConfigError(TrlCausalError):
    """A YAML config or command-line value is wrong (the message names the key and the fix)."""


class DataError(TrlCausalError):
    """A dataset is missing, or lacks the columns or values a trainer needs."""


class RegistryError(TrlCausalError):
    """A plugin registered something invalid, or a registered name cannot be resolved."""
