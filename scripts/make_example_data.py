"""Write the data files under example_configs/data, deterministically (re-running gives the same bytes), all but
the dpo-pairs output:

- ``prontoqa_train.jsonl`` (100 rows) and ``prontoqa_{id,anti,nonsense}.jsonl`` (60 each): PrOntoQA-style chat rows
  for the sft and capt configs; ``prontoqa_train_messages.jsonl``: the training rows as ``messages`` (Axolotl);
- ``shift_train.jsonl`` (200 rows) and ``shift_test_{90,70,50,30,10}.jsonl`` (40 each) for latent_shift;
  ``shift_train_messages.jsonl``: the training rows as ``messages`` (Axolotl);
- ``observational.jsonl``: 480 simulated observational rows for deconfounded_reward (floats to 4 decimals);
  ``observational_pairs_naive.jsonl``, its raw-outcome pairs for `trainer: reward`, comes from
  ``trl-causal dpo-pairs`` (the command is in example_configs/deconfounded_reward.yaml).

    .venv/bin/python scripts/make_example_data.py [OUT_DIR]    # default: example_configs/data
"""

import sys
from pathlib import Path

from trl_causal.capt.prontoqa import generate_prontoqa, to_chat_rows
from trl_causal.deconfound import simulate_observational_texts
from trl_causal.latent_shift.data import make_splits, to_prompt_completion, write_jsonl


def as_messages(rows: list[dict]) -> list[dict]:
    """Prompt + completion rows (chat or text) as one ``messages`` list each, the answer stripped of its space."""

    def turns(part, role):
        return part if isinstance(part, list) else [{"role": role, "content": part.strip() if role == "assistant" else part}]

    return [{"messages": turns(row["prompt"], "user") + turns(row["completion"], "assistant")} for row in rows]


def main(out: Path) -> None:
    prontoqa_train = to_chat_rows(generate_prontoqa(100, "id", hops=[1, 2, 3], seed=0))
    files = {
        "prontoqa_train.jsonl": prontoqa_train,
        "prontoqa_train_messages.jsonl": as_messages(prontoqa_train),
        **{
            f"prontoqa_{split}.jsonl": to_chat_rows(generate_prontoqa(60, split, hops=[1, 2, 3], seed=10_000))
            for split in ("id", "anti", "nonsense")
        },
    }
    shift = {name: to_prompt_completion(rows) for name, rows in make_splits(200, 40).items()}
    files |= {f"shift_{name}.jsonl": rows for name, rows in shift.items()}
    files["shift_train_messages.jsonl"] = as_messages(shift["train"])
    simulated = simulate_observational_texts(n=480, group_size=4, seed=0)
    files["observational.jsonl"] = [
        {
            "prompt": row["prompt"],
            "completion": " " + row["text"],
            **{key: round(row[key], 4) if isinstance(row[key], float) else row[key] for key in ("outcome", "confounder", "group", "f", "marker")},
        }
        for row in (dict(zip(simulated, values)) for values in zip(*simulated.values()))
    ]
    for name, rows in files.items():
        print(f"wrote {len(rows)} rows to {write_jsonl(rows, out / name)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "example_configs" / "data")
