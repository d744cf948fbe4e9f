"""Fixtures: a tiny Llama and a tokenizer built locally (nothing is downloaded), and small datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|im_end|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Every cat is a mammal. Every mammal is an animal. Sally is a cat. True or false: Sally is an animal.",
    "The weather is nice on Monday. Happy Monday! Great deals today.",
    "positive negative review: the food was good, the service was bad. amazon.xxx yelp.yyy",
    "Let X = ability to speak english; V2 = wife; Y = alarm clock. yes no True False",
]


def build_tiny_model(directory: Path) -> Path:
    """Save a 2-layer Llama (hidden size 32) and a byte-level BPE tokenizer trained on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    import torch

    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture
def single_thread():
    """Tiny tensors run far faster on one thread than on several competing for shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sft_rows(n: int = 16) -> list[dict]:
    return [
        {"prompt": f"Every cat is a mammal. Sally is a cat. Question {i}: is Sally a mammal?", "completion": " True" if i % 2 else " False"}
        for i in range(n)
    ]


def reward_rows(n: int = 16) -> list[dict]:
    return [{"chosen": f"The food was good {i}.", "rejected": f"The food was bad {i}."} for i in range(n)]


@pytest.fixture
def sft_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "sft.jsonl", sft_rows())


@pytest.fixture
def reward_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "reward.jsonl", reward_rows())


def cpu_training_args(output_dir: Path, **overrides) -> dict:
    """TrainingArguments fields for a few fast, deterministic CPU steps."""
    from transformers import TrainingArguments

    # activation_checkpointing in recent transformers releases, gradient_checkpointing in the oldest this package admits
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"
    settings = {
        "output_dir": str(output_dir),
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "learning_rate": 1.0e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": False,
        "use_cpu": True,
        checkpointing: False,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    settings.update(overrides)
    return settings


def base_config(model: Path, data: Path, output_dir: Path, **overrides) -> dict:
    """A YAML config for a few fast CPU steps."""
    return {"model_name_or_path": str(model), "dataset_name": str(data), **cpu_training_args(output_dir, **overrides)}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``trl-causal`` as a user would, in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "trl_causal.cli", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def interrupt_after_first_step(*args: str, terminate: str | None = None) -> tuple[int, str]:
    """Run ``trl-causal`` as a user would, press Ctrl-C once a training step is logged (SIGINT to the whole process
    group, as a terminal does), and return its exit code and output (stdout and stderr). ``terminate``: send SIGTERM
    instead, to the "group" (as a scheduler stops a job) or to the "command" alone (`kill PID`)."""
    import signal

    process = subprocess.Popen(  # SIGINT as a terminal leaves it: a suite run in the background (`cmd &`) ignores it
        [sys.executable, "-m", "trl_causal.cli", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "'loss'" in line:
            break
    if terminate == "command":
        os.kill(process.pid, signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGTERM if terminate == "group" else signal.SIGINT)
    try:
        rest, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # still training (e.g. a training process the signal never reached): stop it all
        os.killpg(process.pid, signal.SIGKILL)
        rest, _ = process.communicate()
        rest += "\n[still running 120 s after the signal: killed]"
    return process.returncode, "".join(seen) + rest
