"""Where trl_causal keeps downloaded and computed files."""

import json
import os
from pathlib import Path

CACHE_ENV = "TRL_CAUSAL_CACHE"


def cache_root() -> Path:
    """``$TRL_CAUSAL_CACHE`` if set, else ``~/.cache/trl_causal``; each kind of file has a folder below it."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "trl_causal"


def read_checkpoint_file(checkpoint_dir: str | os.PathLike | None, name: str) -> dict | None:
    """The JSON object saved as ``name`` in ``checkpoint_dir`` (a run record, a trainer's prediction settings); None
    when there is no such file (or no directory)."""
    path = None if checkpoint_dir is None else os.path.join(checkpoint_dir, name)
    if path is None or not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_checkpoint_file(directory: str | os.PathLike, name: str, content: dict) -> None:
    """Save ``content`` as the JSON file ``name`` in ``directory`` (made if missing), whole or not at all: it is
    written beside the target and renamed over it, so a run killed mid-write leaves the previous file, never half
    of one."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(content, f, indent=2)
        os.replace(path + ".tmp", path)
    finally:
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
