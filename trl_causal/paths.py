"""Where trl_causal keeps downloaded and computed files, and the checks that a place it is told to write to takes files."""

import json
import os
import tempfile
from pathlib import Path

from .errors import ConfigError

CACHE_ENV = "TRL_CAUSAL_CACHE"


def cache_root() -> Path:
    """``$TRL_CAUSAL_CACHE`` if set, else ``~/.cache/trl_causal``; each kind of file has a folder below it."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "trl_causal"


def read_json_file(directory: str | os.PathLike | None, name: str) -> dict | None:
    """The JSON object saved as ``name`` in ``directory`` (a checkpoint's run record, a trainer's prediction settings);
    None when there is no such file (or no directory)."""
    path = None if directory is None else os.path.join(directory, name)
    if path is None or not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json_file(directory: str | os.PathLike, name: str, content: dict) -> None:
    """Save ``content`` as the JSON file ``name`` in ``directory`` (made if missing; a checkpoint's record, an eval
    report), whole or not at all: it is
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


def check_writable_dir(directory: str | os.PathLike, key: str) -> None:
    """``directory`` (the setting ``key``) exists or can be made, and takes files: checked before the work whose files
    go there, which would otherwise fail at its end."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise ConfigError(f"{key} {directory} cannot be written ({error.strerror or error}): give a directory you can write to.") from None


def writable_output_file(output: Path, what: str) -> Path:
    """``--output``, its folder made, once it is a file that can be written (``what`` names it in the errors, e.g. "the
    results file"): checked before the work whose result it holds, not after."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"Cannot make the folder of {what} {output}: {error}. Pass --output FILE in a folder you can write to.") from None
    if not os.access(output.parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise ConfigError(f"Cannot write {what} {output} (read-only). Pass --output FILE in a folder you can write to.")
    return output
