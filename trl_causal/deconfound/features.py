"""Text features phi for partialling out: TF-IDF, or mean-pooled hidden states of a frozen model (cached on disk).

torch is imported only by ``hidden_state_features``, so the package stays importable without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError, count_rows, describe_rows, for_count
from ..paths import cache_root, whole_file

# autocast precisions of the model feature pass: None runs the model in its own dtype
AUTOCAST_DTYPES = {None: None, "bf16": "bfloat16", "fp16": "float16"}


def tfidf_features(texts: Sequence[str]) -> sp.csr_matrix:
    """TF-IDF [n, vocabulary] of words, sublinear term frequency, rows L2-normalised. (Word pairs add many noisy
    columns: on the simulator they bias theta by +0.3 at 1000 rows; words alone by about 0.01.)"""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        return TfidfVectorizer(sublinear_tf=True).fit_transform(texts).tocsr()
    except ValueError as error:  # "empty vocabulary": no word of two or more letters or digits in any text
        raise DataError(
            f"TF-IDF found no words in the {len(texts)} texts ({error}); words of two or more letters or digits are "
            "needed. Use `feature_source: model` for texts such as single letters or numbers."
        ) from error


def runs_bf16_natively(device: Any) -> bool:
    """Whether ``device`` has bf16 matrix units, so that autocast to bf16 speeds a forward up instead of emulating it:
    a CUDA GPU with native bf16 (Ampere or newer), or a CPU with AVX512-BF16 or AMX."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence the getattr
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def default_feature_cache_dir() -> Path:
    """``<cache root>/features``: ``$TRL_CAUSAL_CACHE/features``, else ``~/.cache/trl_causal/features``."""
    return cache_root() / "features"


def model_fingerprint(model: Any) -> str:
    """Identifies a backbone whatever head or PEFT wrapper it has: its name or path, type, sizes, and a hash of every
    backbone weight with its name and dtype (LoRA adapters left out: the feature pass disables them). Two models
    that differ in any backbone weight or in precision never share cached features."""
    import torch

    config = model.config.get_text_config()
    digest = hashlib.blake2b(digest_size=32)
    for value in (
        config._name_or_path,
        config.model_type,
        config.hidden_size,
        config.num_hidden_layers,
        config.vocab_size,
    ):
        digest.update(f"{value}|".encode())
    backbone = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wrapper off
    backbone = getattr(backbone, "base_model", backbone)  # the transformer body: no LM or classification head
    for name, parameter in backbone.named_parameters():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer", "")  # as named before PEFT wrapped the layer
        digest.update(f"{name}|{parameter.dtype}|{tuple(parameter.shape)}|".encode())
        digest.update(parameter.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())  # its bytes, as stored
    return digest.hexdigest()


def _sequences_hash(sequences: Sequence[Sequence[int]]) -> str:
    digest = hashlib.sha256()
    for ids in sequences:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def hidden_state_features(
    model: Any,
    sequences: Sequence[Sequence[int]],
    pad_token_id: int,
    batch_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    autocast: str | None = None,
    layers: Sequence[int] = (-1,),
) -> np.ndarray:
    """phi_i = [sum_t m_it h^l_it / sum_t m_it for l in layers] [n, d * len(layers)]: the masked mean over the tokens
    of each hidden state h^l the model returns (0: the input embeddings, -1: the last layer), concatenated.

    ``model`` is any transformers model that returns ``hidden_states`` (a causal LM, a sequence classifier, a
    PEFT model inside ``disable_adapter()``); it runs in eval mode without gradients, in batches of rows of similar
    length; ``autocast`` ("bf16" / "fp16") runs the forward under ``torch.autocast`` in that precision, None as the
    model is. The result is cached in ``cache_dir`` (default ``default_feature_cache_dir()``) under a hash of the
    model (``model_fingerprint``), the token ids, the layers and the autocast precision, so the same texts under the
    same model are computed once.
    """
    import torch

    if autocast not in AUTOCAST_DTYPES:
        raise ConfigError(f"autocast={autocast!r} is not one of {', '.join(map(repr, AUTOCAST_DTYPES))}.")
    if not len(sequences):
        raise DataError("No token sequences to pool.")
    if empty := [row for row, ids in enumerate(sequences) if not len(ids)]:
        raise DataError(
            f"Text features need at least one token per row; {count_rows(len(empty))} ({describe_rows(empty)}) "
            f"{for_count(len(empty), 'has', 'have')} none."
        )
    cache = Path(cache_dir) if cache_dir is not None else default_feature_cache_dir()
    layers = [int(layer) for layer in layers]
    check_layers(layers, model.config)
    precision = "" if autocast is None else f"|autocast-{autocast}"
    pooled_layers = "mean-last" if layers == [-1] else "mean-layers-" + ",".join(map(str, layers))
    key = f"{pooled_layers}|{model_fingerprint(model)}|{_sequences_hash(sequences)}{precision}"
    key = hashlib.sha256(key.encode()).hexdigest()
    path = cache / f"{key}.npy"
    if (cached := _cached_features(path, len(sequences))) is not None:
        return cached

    device = next(model.parameters()).device
    order = np.argsort([len(ids) for ids in sequences], kind="stable")
    features: np.ndarray | None = None
    was_training = model.training
    model.eval()
    autocast_context = (
        torch.autocast(device.type, dtype=getattr(torch, AUTOCAST_DTYPES[autocast]))
        if autocast is not None
        else contextlib.nullcontext()
    )
    try:
        with torch.no_grad(), autocast_context:
            starts = range(0, len(order), batch_size)
            for start in tqdm(starts, desc="deconfound: text features", disable=not progress):
                rows = order[start : start + batch_size]
                width = max(len(sequences[row]) for row in rows)
                input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for position, row in enumerate(rows):
                    input_ids[position, : len(sequences[row])] = torch.as_tensor(sequences[row])
                    mask[position, : len(sequences[row])] = 1
                input_ids, mask = input_ids.to(device), mask.to(device)
                states = model(
                    input_ids=input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False
                ).hidden_states
                weights = mask.unsqueeze(-1).float()
                counts = weights.sum(dim=1).clamp(min=1)
                pooled = torch.cat([(states[layer].float() * weights).sum(dim=1) / counts for layer in layers], dim=1)
                pooled = pooled.cpu().numpy()
                if features is None:
                    features = np.empty((len(sequences), pooled.shape[1]), dtype=np.float32)
                features[rows] = pooled
    finally:
        model.train(was_training)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with whole_file(path, "wb") as file:  # under a fresh name: a fixed one could be a link planted in the cache
            np.save(file, features)
    except OSError as error:  # a read-only or full cache costs the cache, never the computed features
        warnings.warn(f"Could not cache the text features in {cache} ({error}); set feature_cache_dir to a writable "
                      "directory to reuse them.", stacklevel=2)
    return features


def _cached_features(path: Path, n_rows: int) -> np.ndarray | None:
    """The features cached at ``path``, or None when there are none; a file that cannot be read, or holds anything but
    finite float32 features of ``n_rows`` rows (cut short by a full disk, written by something else), is said so and
    left to be computed again."""
    if not path.is_file():
        return None
    try:
        features = np.load(path)
    except (OSError, ValueError, EOFError) as error:
        problem = f"cannot be read ({type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]})"
    else:
        if features.ndim != 2 or features.shape[0] != n_rows:
            problem = f"holds an array of shape {features.shape}, not {n_rows} rows of features"
        elif features.dtype != np.float32:
            problem = f"holds {features.dtype} values, not float32 features"
        elif not np.isfinite(features).all():
            problem = "holds values that are not finite (NaN or inf)"
        else:
            return features
    warnings.warn(f"The cached text features {path} {problem}; computing them again, and replacing the file.", stacklevel=3)
    return None


def check_layers(layers: Sequence[int], model_config: Any) -> None:
    """``layers`` index the ``n_states`` hidden states (embeddings + one per layer) of the model ``model_config``
    describes, and there is one."""
    n_states = model_config.get_text_config().num_hidden_layers + 1
    if not layers:
        raise ConfigError("No hidden-state layers to pool: give at least one index (0 embeddings, -1 last layer).")
    bad = [layer for layer in layers if not -n_states <= layer < n_states]
    if bad:
        raise ConfigError(
            f"Hidden-state layer(s) {bad} out of range: the model returns {n_states} hidden states (0 = embeddings, "
            f"{n_states - 1} or -1 = the last layer)."
        )
