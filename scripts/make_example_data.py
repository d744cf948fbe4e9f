"""Write the example datasets shipped under example_configs/data (deterministic: re-running gives the same files).

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
