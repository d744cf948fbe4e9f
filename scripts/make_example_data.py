"""Write the example datasets shipped under example_configs/data (deterministic: re-running gives the same files).

    .venv/bin/python scripts/make_example_data.py
"""

import json
from pathlib import Path

from trl_causal.capt.prontoqa import generate_prontoqa

OUT = Path(__file__).resolve().parents[1] / "example_configs" / "data"
INSTRUCTION = "\nAnswer with True or False."


def conversational(row: dict) -> dict:
    """Prompt/completion as chat messages, so the instruct model's chat template applies."""
    return {
        "prompt": [{"role": "user", "content": row["prompt"] + INSTRUCTION}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
        "answer": row["answer"],
        "split": row["split"],
        "hops": row["hops"],
        "events": row["events"],
    }


def write(name: str, rows: list[dict]) -> None:
    path = OUT / name
    path.write_text("".join(json.dumps(conversational(row)) + "\n" for row in rows))
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write("prontoqa_train.jsonl", generate_prontoqa(100, "id", hops=[1, 2, 3], seed=0))
