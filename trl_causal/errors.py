"""Errors that the CLI reports as one clear line, without a traceback."""

import difflib


class TrlCausalError(ValueError):
    """Base class of user-facing errors: bad config, bad data, bad plugin."""


class ConfigError(TrlCausalError):
    """A YAML config or command-line value is wrong (the message names the key and the fix)."""


class DataError(TrlCausalError):
    """A dataset is missing, or lacks the columns or values a trainer needs."""


def describe_rows(rows, shown: int = 5) -> str:
    """'row 3', 'rows [3, 8, 11]' or 'rows [3, 8, 11, 14, 20] and 7 more': the row numbers an error or warning names."""
    rows = [int(row) for row in rows]
    if len(rows) == 1:
        return f"row {rows[0]}"
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    return f"rows {rows[:shown]}{more}"


def did_you_mean(word, choices, n: int = 3, cutoff: float = 0.6) -> str:
    """' Did you mean 'a' or 'b'?' naming the ``choices`` closest to ``word`` in any case (`Pairwise` is `pairwise`),
    or '' when none is close."""
    by_lower = {str(choice).lower(): choice for choice in choices}
    close = [by_lower[match] for match in difflib.get_close_matches(str(word).lower(), list(by_lower), n=n, cutoff=cutoff)]
    return f" Did you mean {' or '.join(map(repr, close))}?" if close else ""


def for_count(n: int, one: str, many: str) -> str:
    """The word that agrees with a count: ``one`` for 1 ("has", "is"), else ``many``."""
    return one if n == 1 else many


def count_rows(n: int) -> str:
    """'1 row', '8 rows'."""
    return f"{n} row" if n == 1 else f"{n} rows"


class RegistryError(TrlCausalError):
    """A plugin registered something invalid, or a registered name cannot be resolved."""
