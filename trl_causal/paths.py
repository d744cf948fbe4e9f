"""Where trl_causal keeps downloaded and computed files, the checks that a place it is told to write to takes files,
and the lock that keeps two runs from writing one output_dir."""

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path

from .errors import ConfigError, TrlCausalError

CACHE_ENV = "TRL_CAUSAL_CACHE"


def cache_root() -> Path:
    """``$TRL_CAUSAL_CACHE`` if set, else ``~/.cache/trl_causal``; each kind of file has a folder below it."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "trl_causal"


def read_json_file(directory: str | os.PathLike | None, name: str) -> dict | None:
    """The JSON object saved as ``name`` in ``directory`` (a checkpoint's run record, a trainer's prediction settings);
    None when there is no such file (or no directory). A file that holds no JSON object (one cut short by a save that
    did not finish) is a one-line error naming it."""
    path = None if directory is None else os.path.join(directory, name)
    if path is None or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except ValueError as error:  # not JSON, or not text
        content, detail = None, str(error)
    else:
        detail = f"it holds a JSON {type(content).__name__}"
    if not isinstance(content, dict):
        raise TrlCausalError(
            f"{path} holds no JSON object ({detail}), as a save that did not finish leaves it: save it again, or give "
            "another checkpoint."
        )
    return content


@contextlib.contextmanager
def whole_file(path: str | os.PathLike, mode: str = "w"):
    """A file (``mode`` "w" text, "wb" binary) that writes ``path`` whole or not at all: a new file of its own beside
    it, renamed over ``path`` when the block ends, removed if the block fails. A writer killed midway leaves the
    previous file, never half of one, and writers of the same file at once each leave a whole one (the last wins).
    The new file is made here ("x": never an existing file, nor a link planted in a shared folder), with the
    permissions the umask gives."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        with open(partial, mode.replace("w", "x"), encoding=None if "b" in mode else "utf-8") as file:
            yield file
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_json_file(directory: str | os.PathLike, name: str, content: dict) -> None:
    """Save ``content`` as the JSON file ``name`` in ``directory`` (made if missing; a checkpoint's record, an eval
    report), whole or not at all (``whole_file``)."""
    os.makedirs(directory, exist_ok=True)
    with whole_file(os.path.join(directory, name)) as file:
        json.dump(content, file, indent=2)


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


def open_lock_file(path: Path) -> int:
    """A descriptor of the lock file ``path`` (made, with its folder, if missing), opened for reading and writing
    without truncating it or following a symbolic link someone put in a shared cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise TrlCausalError(
            f"Cannot open the lock file {path} ({error.strerror}): it must be a plain file in a folder you can write to "
            f"(${CACHE_ENV} sets where trl_causal keeps its files)."
        ) from None


def output_dir_lock_file(output_dir: str | os.PathLike) -> Path:
    """The lock file of ``output_dir``: ``cache_root()/locks/<sha256 of its real path>.lock``, outside it (everything
    in an output_dir is saved and uploaded with the model)."""
    digest = hashlib.sha256(os.path.realpath(output_dir).encode()).hexdigest()
    return cache_root() / "locks" / f"{digest}.lock"


@contextlib.contextmanager
def writing_output_dir(output_dir: str | os.PathLike):
    """While inside, this process is the one trl-causal run that writes ``output_dir``: it holds an exclusive
    ``flock`` on ``output_dir_lock_file(output_dir)``, which holds its pid, until the block ends or the process exits.
    Another process inside already is a one-line error naming its pid."""
    lock = open_lock_file(output_dir_lock_file(output_dir))
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock, 4096, 0).decode(errors="replace").split()
            pid = f" (pid {holder[0]})" if holder and holder[0].isdigit() else ""
            raise TrlCausalError(
                f"another trl-causal run{pid} is writing {output_dir}: give this run another output_dir, or wait for it."
            ) from None
        os.ftruncate(lock, 0)
        os.pwrite(lock, f"{os.getpid()} {os.path.realpath(output_dir)}\n".encode(), 0)
        yield
    finally:
        os.close(lock)
