"""The benchmark scripts' guard: a run smaller than the committed one writes NAME_smoke, never over the results."""

from __future__ import annotations

import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py, as the scripts import it)


def test_a_smaller_run_than_the_committed_one_is_a_smoke_run(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    (tmp_path / "bench.json").write_text(json.dumps({"kinds": ["a", "b"], "train_rows": 640, "steps": [40, 100]}))
    sizes = ("kinds", "train_rows", "steps")
    committed = {"kinds": ["a", "b"], "train_rows": 640, "steps": [40, 100]}
    assert not common.smaller_than_committed("bench", committed, sizes)  # the same run again may replace it
    for smaller in ({"kinds": ["a"]}, {"train_rows": 64}, {"steps": [20]}):
        assert common.smaller_than_committed("bench", {**committed, **smaller}, sizes), smaller
    assert not common.smaller_than_committed("bench", {**committed, "train_rows": 6400}, sizes)
    # no committed file: only the sizes (floor) count
    assert common.smaller_than_committed("new", {"seeds": [0]}, ("seeds",), floor={"seeds": 3})
    assert not common.smaller_than_committed("new", {"seeds": [0, 1, 2]}, ("seeds",), floor={"seeds": 3})


def test_the_reward_benchmark_trains_its_heads_with_the_trainer_loss_in_every_mode(tmp_path):
    """benchmarks/deconfounded_reward.py trains its frozen-feature heads with ``DeconfoundedRewardTrainer.compute_loss``
    on a stand-in trainer: every mode's loss must run there and move the head."""
    import numpy as np
    import torch

    import deconfounded_reward as bench

    generator = np.random.default_rng(0)
    phi = generator.normal(size=(64, 8)).astype(np.float32)
    confounders = generator.normal(size=(64, 1)).astype(np.float32)
    target = phi[:, 0] + confounders[:, 0]
    for mode in bench.MODES:
        args = bench.reward_config(mode, 0, str(tmp_path), per_device_train_batch_size=16)
        torch.manual_seed(0)
        untrained = bench.FrozenFeatureHead(phi.shape[1]).state_dict()
        head = bench.train_head(phi, target, confounders, args, epochs=2, lr=1e-2)
        assert not head.training
        assert any(not torch.equal(untrained[key], value) for key, value in head.state_dict().items()), mode
