"""Write example_configs/data/prontoqa_train.jsonl, the capt and sft example configs' training rows (deterministic:
re-running gives the same file). The other files under example_configs/data come from the commands in the headers of
the example configs that read them.

    .venv/bin/python scripts/make_example_data.py
"""

import json
from pathlib import Path

from trl_causal.capt.prontoqa import generate_prontoqa, to_chat_rows

OUT = Path(__file__).resolve().parents[1] / "example_configs" / "data"


def write(name: str, rows: list[dict]) -> None:
    path = OUT / name
    path.write_text("".join(json.dumps(row) + "\n" for row in to_chat_rows(rows)))
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write("prontoqa_train.jsonl", generate_prontoqa(100, "id", hops=[1, 2, 3], seed=0))
