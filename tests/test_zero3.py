"""The ZeRO-3 helpers in one process: reloading the pretrained model and suspending ZeRO-3 for a helper model.
The two-process ZeRO-3 runs of the trainers are in test_distributed.py."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled

from trl_causal.errors import ConfigError
from trl_causal.trainer.zero3 import reload_pretrained, whole_model_loading


def test_reload_pretrained_gives_the_saved_weights_frozen(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)  # trained since: the reload must not see it
    reference = reload_pretrained(model, None, "frozen reference view")
    saved = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    assert reference.dtype == model.dtype
    for name, weight in reference.state_dict().items():
        torch.testing.assert_close(weight, saved[name], msg=name)


def test_reload_pretrained_needs_a_path():
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(ConfigError, match=r"frozen reference view is loaded again from the model's path.*hub id"):
        reload_pretrained(LlamaForCausalLM(config), None, "frozen reference view")


def test_whole_model_loading_suspends_zero3_and_restores_it():
    with whole_model_loading():  # no DeepSpeed config: nothing to do
        assert not is_deepspeed_zero3_enabled()
    pytest.importorskip("deepspeed")
    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        assert is_deepspeed_zero3_enabled()
        with whole_model_loading():
            assert not is_deepspeed_zero3_enabled()
        assert is_deepspeed_zero3_enabled()
    finally:
        del config  # transformers holds it by a weak reference only: ZeRO-3 is off again for the other tests
    assert not is_deepspeed_zero3_enabled()
