"""DeepSpeed ZeRO-3 partitions every parameter across the ranks as the model loads (``zero3_init_flag``), before the
trainer wraps it in its engine. Work on the model outside the engine (a feature pass before training, a frozen copy)
needs the helpers here; without ZeRO-3 they change nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn
from transformers.integrations import deepspeed as hf_deepspeed
from transformers.integrations import is_deepspeed_zero3_enabled
from trl.trainer.utils import create_model_from_path, get_config_model_id

from ..errors import ConfigError


@contextlib.contextmanager
def full_parameters(model: nn.Module) -> Iterator[None]:
    """Every parameter of ``model`` whole on every rank for the duration (read-only).

    Under ZeRO-3 this gathers the partitions, a collective: every rank must enter, even one that then does nothing.
    """
    if not is_deepspeed_zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


@contextlib.contextmanager
def whole_model_loading() -> Iterator[None]:
    """Models loaded inside come whole, not partitioned, even while ZeRO-3 is configured.

    For a helper model that only the main rank runs before training (the ``llm`` event estimator): under ZeRO-3
    ``from_pretrained`` partitions every model it loads, a collective that the waiting ranks never join.
    """
    if not is_deepspeed_zero3_enabled():
        yield
        return
    config = hf_deepspeed._hf_deepspeed_config_weak_ref()  # transformers holds the ZeRO config only by this weak reference
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def reload_pretrained(model: nn.Module, model_init_kwargs: dict[str, Any] | None, purpose: str) -> nn.Module:
    """``model`` loaded again from its path, frozen and in eval mode, the way ``trl.DPOTrainer`` builds its reference.

    Under ZeRO-3 a deep copy of ``model`` would copy empty partitions, so a model as it was before training is
    loaded anew (partitioned in turn while ZeRO-3 is on). ``purpose`` names what needs it, for the error message.
    """
    path = get_config_model_id(model.config)
    if not path:
        raise ConfigError(
            f"Under DeepSpeed ZeRO-3 the {purpose} is loaded again from the model's path, and this model has none "
            "(it was built from a config). Pass the model as a hub id or a directory of saved weights."
        )
    kwargs = {**(model_init_kwargs or {}), "device_map": None}
    kwargs.setdefault("dtype", model.dtype)
    kwargs.setdefault("attn_implementation", model.config._attn_implementation)
    return create_model_from_path(path, **kwargs).requires_grad_(False).eval()
