"""Errors that the CLI reports as one clear line, without a traceback."""


class TrlCausalError(ValueError):
    """Base class of user-facing errors: bad config, bad data, bad plugin."""


class ConfigError(TrlCausalError):
    """A YAML config or command-line value is wrong (the message names the key and the fix)."""


class DataError(TrlCausalError):
    """A dataset is missing, or lacks the columns or values a trainer needs."""


def first_rows(rows, shown: int = 10) -> str:
    """"3, 8, 11" or "3, 8, 11, ..." past ``shown`` rows: the row numbers an error or warning names."""
    return ", ".join(map(str, rows[:shown])) + (", ..." if len(rows) > shown else "")


class RegistryError(TrlCausalError):
    """A plugin registered something invalid, or a registered name cannot be resolved."""
