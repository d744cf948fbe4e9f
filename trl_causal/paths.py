"""Where trl_causal keeps downloaded and computed files."""

import os
from pathlib import Path

CACHE_ENV = "TRL_CAUSAL_CACHE"


def cache_root() -> Path:
    """``$TRL_CAUSAL_CACHE`` if set, else ``~/.cache/trl_causal``; each kind of file has a folder below it."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "trl_causal"
