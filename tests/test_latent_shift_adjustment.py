"""The latent_shift math: pooling, patches, L_C, derangement, adjusted head and prediction, memory bank."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trl_causal.errors import ConfigError, DataError
from trl_causal.latent_shift import (
    AdjustedHead,
    LatentShiftHeads,
    MemoryBank,
    adjusted_loss,
    adjusted_predict,
    causal_alignment_loss,
    derangement,
    masked_mean_pool,
    patch_features,
)


pytestmark = pytest.mark.usefixtures("single_thread")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mask_from_lengths(lengths: list[int], n_tokens: int, left_pad: bool = False) -> torch.Tensor:
    mask = torch.zeros(len(lengths), n_tokens, dtype=torch.bool)
    for row, length in enumerate(lengths):
        if left_pad:
            mask[row, n_tokens - length :] = True
        else:
            mask[row, :length] = True
    return mask


# ---------------------------------------------------------------- pooling and patches


def test_masked_mean_pool_ignores_masked_tokens():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 5)
    mask = mask_from_lengths([7, 3, 1], 7)
    poisoned = hidden.masked_fill(~mask.unsqueeze(-1), 1e6)
    pooled = masked_mean_pool(poisoned, mask)
    expected = torch.stack([hidden[0].mean(0), hidden[1, :3].mean(0), hidden[2, 0]])
    torch.testing.assert_close(pooled, expected)
    assert pooled.shape == (3, 5)


def test_masked_mean_pool_accepts_int_masks_and_rejects_empty_rows_and_bad_shapes():
    hidden = torch.randn(2, 4, 3)
    int_mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    torch.testing.assert_close(masked_mean_pool(hidden, int_mask), masked_mean_pool(hidden, int_mask.bool()))
    with pytest.raises(DataError, match=r"No masked tokens to pool in row 1 of the batch.*at least one"):
        masked_mean_pool(hidden, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(DataError, match="one mask entry per token"):
        masked_mean_pool(hidden, torch.ones(2, 5))


def reference_patch_features(hidden: torch.Tensor, mask: torch.Tensor, n_patches: int) -> torch.Tensor:
    rows = []
    for row_hidden, row_mask in zip(hidden, mask.bool()):
        tokens = row_hidden[row_mask]
        patches = torch.tensor_split(tokens, min(n_patches, tokens.shape[0]))
        rows.append(torch.stack([patch.mean(0) for patch in patches]).mean(0))
    return torch.stack(rows)


@pytest.mark.parametrize("left_pad", [False, True])
def test_patch_features_match_tensor_split_reference_and_count_fallbacks(left_pad):
    torch.manual_seed(1)
    lengths = [23, 12, 10, 3, 1, 17]
    hidden = torch.randn(len(lengths), 25, 4, dtype=torch.float64)
    mask = mask_from_lengths(lengths, 25, left_pad=left_pad)
    features, n_fallback = patch_features(hidden, mask, n_patches=10)
    torch.testing.assert_close(features, reference_patch_features(hidden, mask, 10))
    assert features.shape == (len(lengths), 4)
    assert n_fallback == 2  # the rows with 3 and 1 tokens; 10 tokens is exactly enough
    # unequal patches weigh tokens unequally, so the 23-token row is not its plain mean ...
    assert not torch.allclose(features[0], hidden[0][mask[0]].mean(0))
    # ... while a row with fewer tokens than patches falls back to one-token patches: its plain mean
    torch.testing.assert_close(features[3], hidden[3][mask[3]].mean(0))


def test_patch_features_reject_bad_patch_count():
    for n_patches in (0, 2.5):  # 2.5 was taken, with weights of neither 2 nor 3 patches
        with pytest.raises(ConfigError, match=rf"n_patches={n_patches} must be a whole number"):
            patch_features(torch.randn(1, 3, 2), torch.ones(1, 3), n_patches=n_patches)


def test_pooling_in_bf16_is_the_bf16_of_the_exact_mean():
    # weights 1/L rounded to bf16, or a sum rounded to bf16, put the mean of 257 ones at 0.996
    lengths = list(range(1, 1025))
    for dtype in (torch.bfloat16, torch.float16):
        ones = torch.ones(len(lengths), 1024, 2, dtype=dtype)
        mask = mask_from_lengths(lengths, 1024)
        assert (masked_mean_pool(ones, mask) == 1).all() and (patch_features(ones, mask, n_patches=10)[0] == 1).all()
    with_nan = torch.ones(1, 4, 2).index_fill(1, torch.tensor([3]), float("nan"))  # a masked-out position holds NaN
    assert masked_mean_pool(with_nan, mask_from_lengths([3], 4)).tolist() == [[1.0, 1.0]]
    ones = torch.ones(2, 300, 3, dtype=torch.bfloat16)
    mask = mask_from_lengths([300, 299], 300)
    assert masked_mean_pool(ones, mask.tolist()).tolist() == [[1.0] * 3] * 2  # nested lists work as the mask too
    features, _ = patch_features(ones, mask, n_patches=7)  # patches of 43 and 42 tokens
    assert features.dtype == torch.bfloat16 and features.tolist() == [[1.0] * 3] * 2
    hidden = torch.randn(2, 300, 3, generator=seeded(1))
    exact = patch_features(hidden.double(), mask, n_patches=7)[0]
    torch.testing.assert_close(patch_features(hidden.bfloat16(), mask, n_patches=7)[0], exact.bfloat16(), atol=0.01, rtol=0.01)
    manual = torch.stack([torch.stack([part.mean(0) for part in row[m].tensor_split(7)]).mean(0) for row, m in zip(hidden.double(), mask)])
    torch.testing.assert_close(exact, manual, atol=1e-12, rtol=1e-12)  # float64 stays float64
    large = torch.randn(2, 512, 3, generator=seeded(2)) * 30 + 200  # 512 tokens near 200 sum past fp16's 65504
    mask = mask_from_lengths([512, 300], 512)
    for pooled in (masked_mean_pool(large.half(), mask), patch_features(large.half(), mask, n_patches=10)[0]):
        assert pooled.dtype == torch.float16 and torch.isfinite(pooled).all()
    torch.testing.assert_close(masked_mean_pool(large.half(), mask).float(), masked_mean_pool(large, mask), atol=0.2, rtol=0.002)
    assert patch_features(large, mask, n_patches=np.int64(4))[1] == 0  # a numpy count of patches


# ---------------------------------------------------------------- L_C


def test_causal_alignment_loss_matches_formula():
    torch.manual_seed(2)
    q0, q1 = torch.randn(5, 3).softmax(-1), torch.randn(5, 3).softmax(-1)

    def entropy(p):
        return -(p * p.log()).sum(-1)

    alignment = ((q0 - q1) ** 2).sum(-1).mean()
    torch.testing.assert_close(
        causal_alignment_loss(q0, q1, "per_example"), alignment - entropy(q0).mean() - entropy(q1).mean()
    )
    marginal = alignment - entropy(q0.mean(0)) - entropy(q1.mean(0))
    torch.testing.assert_close(causal_alignment_loss(q0, q1, "marginal"), marginal)
    torch.testing.assert_close(causal_alignment_loss(q0, q1), marginal + entropy(q0).mean() + entropy(q1).mean())


def test_causal_alignment_loss_is_lowest_for_aligned_confident_balanced_views():
    n_causal = 4
    uniform = torch.full((8, n_causal), 1 / n_causal)
    collapsed = torch.nn.functional.one_hot(torch.zeros(8, dtype=torch.long), n_causal).float()
    balanced = torch.nn.functional.one_hot(torch.arange(8) % n_causal, n_causal).float()
    shifted = balanced.roll(1, dims=1)

    per_example = lambda a, b: float(causal_alignment_loss(a, b, "per_example"))  # noqa: E731
    assert per_example(uniform, uniform) == pytest.approx(-2 * math.log(n_causal))
    assert per_example(uniform, uniform) < per_example(collapsed, collapsed)
    assert per_example(uniform, uniform) < per_example(collapsed, uniform)

    marginal = lambda a, b: float(causal_alignment_loss(a, b, "marginal"))  # noqa: E731
    assert marginal(balanced, balanced) == pytest.approx(-2 * math.log(n_causal))
    assert marginal(balanced, balanced) < marginal(balanced, shifted)  # same marginal, views disagree
    assert marginal(balanced, balanced) < marginal(collapsed, collapsed) == pytest.approx(0.0)
    assert marginal(uniform, uniform) == pytest.approx(marginal(balanced, balanced))  # blind to the uniform collapse

    information = lambda a, b: float(causal_alignment_loss(a, b))  # noqa: E731
    assert information(balanced, balanced) == pytest.approx(-2 * math.log(n_causal))
    assert information(balanced, balanced) < information(uniform, uniform) == pytest.approx(0.0)
    assert information(balanced, balanced) < information(collapsed, collapsed) == pytest.approx(0.0)
    assert information(balanced, balanced) < information(balanced, shifted)


def test_causal_alignment_loss_rejects_bad_inputs():
    with pytest.raises(DataError, match="both be"):
        causal_alignment_loss(torch.rand(4, 3), torch.rand(4, 2))
    with pytest.raises(ConfigError, match="entropy_mode='joint'"):
        causal_alignment_loss(torch.rand(4, 3), torch.rand(4, 3), "joint")


# ---------------------------------------------------------------- derangement


def test_derangement_has_no_fixed_points_and_is_a_permutation():
    generator = seeded(3)
    for n in range(2, 10):
        for _ in range(200):
            perm = derangement(n, generator)
            assert sorted(perm.tolist()) == list(range(n))
            assert not (perm == torch.arange(n)).any()


def test_derangement_is_seeded_and_covers_all_derangements_of_three():
    assert torch.equal(derangement(9, seeded(4)), derangement(9, seeded(4)))
    generator = seeded(5)
    seen = {tuple(derangement(3, generator).tolist()) for _ in range(100)}
    assert seen == {(1, 2, 0), (2, 0, 1)}


@pytest.mark.parametrize("n", [0, 1])
def test_derangement_needs_two_rows(n):
    with pytest.raises(DataError, match="at least 2 rows per device batch"):
        derangement(n)


# ---------------------------------------------------------------- adjusted head and loss


def test_adjusted_loss_shuffles_only_in_shuffle_train():
    torch.manual_seed(6)
    head = AdjustedHead(n_causal=3, d_phi=4, n_labels=2)
    q1, phi, labels = torch.randn(2, 3).softmax(-1), torch.randn(2, 4), torch.tensor([0, 1])
    true_pairs = nn.functional.cross_entropy(head(q1, phi), labels)
    swapped = nn.functional.cross_entropy(head(q1, phi.flip(0)), labels)  # the only derangement of 2 rows
    torch.testing.assert_close(adjusted_loss(head, q1, phi, labels, adjustment="shuffle_test"), true_pairs)
    torch.testing.assert_close(adjusted_loss(head, q1, phi, labels, seeded(0), "shuffle_train"), swapped)
    with pytest.raises(DataError, match="at least 2 rows"):
        adjusted_loss(head, q1[:1], phi[:1], labels[:1])
    with pytest.raises(ConfigError, match="adjustment='shuffle'"):
        adjusted_loss(head, q1, phi, labels, adjustment="shuffle")


def train_adjusted_head(q: torch.Tensor, phi: torch.Tensor, labels: torch.Tensor, adjustment: str) -> AdjustedHead:
    torch.manual_seed(0)
    head = AdjustedHead(n_causal=q.shape[1], d_phi=phi.shape[1], n_labels=2, hidden_sizes=(16,))
    optimizer = torch.optim.Adam(head.parameters(), lr=2e-2)
    generator = seeded(0)
    for _ in range(200):
        optimizer.zero_grad()
        adjusted_loss(head, q, phi, labels, generator, adjustment).backward()
        optimizer.step()
    return head


def toy_confounded_data(n: int, agreement: float, generator: torch.Generator):
    """q: a noisy causal signal of y (about 84% accurate); phi[:, 0]: a clean spurious sign agreeing with y in `agreement` of rows."""
    labels = torch.arange(n) % 2
    sign = 2.0 * labels - 1
    causal = sign + torch.randn(n, generator=generator)
    q = torch.stack([-causal, causal], dim=1).softmax(-1)
    agrees = torch.rand(n, generator=generator) < agreement
    spurious = torch.where(agrees, sign, -sign)
    phi = torch.cat([spurious.unsqueeze(1), torch.randn(n, 3, generator=generator)], dim=1)
    phi[:, 0] += 0.3 * torch.randn(n, generator=generator)
    return q, phi, labels


def test_shuffle_train_makes_the_prediction_depend_less_on_spurious_phi():
    generator = seeded(7)
    q, phi, labels = toy_confounded_data(1000, 0.9, generator)
    heads = {adjustment: train_adjusted_head(q, phi, labels, adjustment) for adjustment in ("shuffle_train", "shuffle_test")}

    q_test, phi_test, labels_test = toy_confounded_data(2000, 0.1, generator)  # the spurious link reversed
    phi_plus, phi_minus = phi_test.clone(), phi_test.clone()
    phi_plus[:, 0], phi_minus[:, 0] = 1.0, -1.0
    with torch.no_grad():
        dependence = {
            name: (head(q_test, phi_plus).softmax(-1) - head(q_test, phi_minus).softmax(-1))[:, 1].abs().mean().item()
            for name, head in heads.items()
        }
        accuracy = {
            name: (head(q_test, phi_test).argmax(-1) == labels_test).float().mean().item() for name, head in heads.items()
        }
    # h trained on true pairs leans on phi (a 90%-accurate feature in training) and fails when the link reverses
    assert dependence["shuffle_test"] > 0.3
    assert dependence["shuffle_train"] < 0.1
    assert dependence["shuffle_train"] < dependence["shuffle_test"] / 3
    assert accuracy["shuffle_train"] > accuracy["shuffle_test"] + 0.2
    assert accuracy["shuffle_train"] > 0.75
    # the test-time adjustment repairs the true-pairs head: average over Phi' drawn from the training rows
    with torch.no_grad():
        adjusted = adjusted_predict(heads["shuffle_test"], q_test, phi, k=20, generator=seeded(1))
    assert (adjusted.argmax(-1) == labels_test).float().mean().item() > accuracy["shuffle_test"] + 0.2


# ---------------------------------------------------------------- adjusted prediction


class RecordingHead(nn.Module):
    """Wraps an adjusted head and keeps the Phi' it was called with."""

    def __init__(self, head: AdjustedHead) -> None:
        super().__init__()
        self.head = head
        self.seen_phi: torch.Tensor | None = None

    def forward(self, q: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        self.seen_phi = phi.detach().clone()
        return self.head(q, phi)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_adjusted_predict_averages_k_draws_of_the_candidates(exclude_self):
    torch.manual_seed(8)
    head = RecordingHead(AdjustedHead(n_causal=3, d_phi=2, n_labels=2))
    q1, candidates = torch.randn(4, 3).softmax(-1), torch.randn(4, 2)
    probs = adjusted_predict(head, q1, candidates, k=6, generator=seeded(1), exclude_self=exclude_self)
    assert probs.shape == (4, 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    assert head.seen_phi is not None and head.seen_phi.shape == (4, 6, 2)
    for row in range(4):
        drawn = [int((candidates == phi).all(-1).nonzero()) for phi in head.seen_phi[row]]
        if exclude_self:
            assert row not in drawn
        manual = torch.stack([head.head(q1[row], candidates[j]).softmax(-1) for j in drawn]).mean(0)
        torch.testing.assert_close(probs[row], manual)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_adjusted_predict_converges_to_the_mean_over_candidates(exclude_self):
    torch.manual_seed(9)
    head = AdjustedHead(n_causal=3, d_phi=2, n_labels=3)
    q1, candidates = torch.randn(4, 3).softmax(-1), 3 * torch.randn(4, 2)
    with torch.no_grad():
        probs = adjusted_predict(head, q1, candidates, k=20000, generator=seeded(2), exclude_self=exclude_self)
        every_pair = head(q1.unsqueeze(1).expand(-1, 4, -1), candidates.expand(4, -1, -1)).softmax(-1)  # [B, M, L]
    keep = ~torch.eye(4, dtype=torch.bool) if exclude_self else torch.ones(4, 4, dtype=torch.bool)
    expected = (every_pair * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True)
    torch.testing.assert_close(probs, expected, atol=0.01, rtol=0)


def test_adjusted_predict_is_deterministic_with_a_seed():
    torch.manual_seed(10)
    head = AdjustedHead(n_causal=2, d_phi=3, n_labels=2)
    q1, candidates = torch.randn(5, 2).softmax(-1), 3 * torch.randn(50, 3)
    first = adjusted_predict(head, q1, candidates, k=4, generator=seeded(3))
    torch.testing.assert_close(first, adjusted_predict(head, q1, candidates, k=4, generator=seeded(3)), rtol=0, atol=0)
    assert not torch.equal(first, adjusted_predict(head, q1, candidates, k=4, generator=seeded(4)))


def test_adjusted_predict_rejects_bad_requests():
    head = AdjustedHead(n_causal=2, d_phi=3, n_labels=2)
    q1 = torch.rand(1, 2)
    with pytest.raises(DataError, match="memory bank"):
        adjusted_predict(head, q1, torch.randn(1, 3), exclude_self=True)
    with pytest.raises(DataError, match="3 candidates for 1 rows"):
        adjusted_predict(head, q1, torch.randn(3, 3), exclude_self=True)
    with pytest.raises(ConfigError, match="k"):
        adjusted_predict(head, q1, torch.randn(3, 3), k=0)
    with pytest.raises(DataError, match=r"takes q1 \[rows, n_causal\] and phi_candidates \[M, d_phi\]; got \(2,\) .*q1\[None\]"):
        adjusted_predict(head, q1[0], torch.randn(3, 3))  # one row without its batch dimension
    with pytest.raises(DataError, match=r"The adjusted head takes q \[\.\.\., 2\] and Phi \[\.\.\., 3\] .* got q \(1, 20, 2\) and Phi \(1, 20, 5\)"):
        adjusted_predict(head, q1, torch.randn(3, 5))  # candidates of another width
    torch.testing.assert_close(  # q1 in float64 is taken in the head's dtype
        adjusted_predict(head, q1.double(), torch.randn(3, 3, generator=seeded(2)), generator=seeded(3)),
        adjusted_predict(head, q1, torch.randn(3, 3, generator=seeded(2)), generator=seeded(3)),
    )


# ---------------------------------------------------------------- memory bank


def test_memory_bank_keeps_the_most_recent_vectors():
    bank = MemoryBank(capacity=5, dim=2)
    rows = torch.arange(14, dtype=torch.float32).reshape(7, 2)
    bank.add(rows[:3])
    assert len(bank) == 3
    torch.testing.assert_close(bank.stored(), rows[:3])
    bank.add(rows[3:])
    assert len(bank) == 5
    assert sorted(bank.stored()[:, 0].tolist()) == rows[2:, 0].tolist()
    bank.add(torch.arange(20, dtype=torch.float32).reshape(10, 2))  # more than the capacity at once
    assert sorted(bank.stored()[:, 0].tolist()) == [10.0, 12.0, 14.0, 16.0, 18.0]
    assert int(bank.num_seen) == 17


def test_memory_bank_state_round_trips_and_samples_deterministically():
    bank = MemoryBank(capacity=8, dim=3)
    bank.add(torch.randn(11, 3, requires_grad=True))
    assert not bank.vectors.requires_grad
    restored = MemoryBank(capacity=8, dim=3)
    restored.load_state_dict(bank.state_dict())
    assert len(restored) == len(bank) == 8
    torch.testing.assert_close(restored.sample(6, seeded(0)), bank.sample(6, seeded(0)))
    rows = bank.stored().tolist()
    assert all(row in rows for row in restored.sample(20, seeded(1)).tolist())
    restored.add(torch.zeros(1, 3))
    bank.add(torch.zeros(1, 3))
    torch.testing.assert_close(restored.stored(), bank.stored())


def test_memory_bank_errors_name_the_fix():
    bank = MemoryBank(capacity=4, dim=3)
    with pytest.raises(DataError, match="empty: train first"):
        bank.sample(2)
    with pytest.raises(DataError, match=r"\[N, 3\]"):
        bank.add(torch.randn(2, 5))


# ---------------------------------------------------------------- the bundled heads


def make_batch(batch_size: int = 4, n_tokens: int = 12, hidden_size: int = 16, seed: int = 11):
    generator = seeded(seed)
    last = torch.randn(batch_size, n_tokens, hidden_size, generator=generator, requires_grad=True)
    frozen = torch.randn(batch_size, n_tokens, hidden_size, generator=generator)
    low = torch.randn(batch_size, n_tokens, hidden_size, generator=generator)
    prompt_mask = mask_from_lengths([12, 9, 4, 11][:batch_size], n_tokens)
    labels = torch.arange(batch_size) % 2
    return last, frozen, low, prompt_mask, labels


def make_heads() -> LatentShiftHeads:
    torch.manual_seed(12)
    return LatentShiftHeads(hidden_size=16, n_causal=3, d_phi=4, n_labels=2, n_patches=5, bank_size=6)


@pytest.mark.parametrize("adjustment", ["shuffle_train", "shuffle_test"])
def test_heads_losses_backpropagate_to_the_fine_tuned_view_and_fill_the_bank(adjustment):
    heads = make_heads()
    last, frozen, low, prompt_mask, labels = make_batch()
    losses = heads.losses(last, frozen, low, prompt_mask, labels, adjustment=adjustment, generator=seeded(0))
    assert losses.causal.dim() == 0 and losses.adjusted.dim() == 0
    assert losses.n_patch_fallback == 1  # the row with 4 prompt tokens < 5 patches
    assert len(heads.memory_bank) == 4
    (losses.causal + losses.adjusted).backward()
    assert last.grad is not None and last.grad.abs().sum() > 0
    assert all(p.grad is not None for p in heads.parameters())

    heads.eval()
    heads.losses(last, frozen, low, prompt_mask, labels, adjustment=adjustment, generator=seeded(0))
    assert len(heads.memory_bank) == 4  # evaluation batches stay out of the bank
    heads.train()
    with pytest.raises(ValueError, match="batch_size"):
        heads.losses(last, frozen, low, prompt_mask, labels[:3], adjustment=adjustment)  # one label short
    assert len(heads.memory_bank) == 4  # a refused batch leaves the bank as it was


def test_heads_accept_low_precision_hidden_states():
    heads = make_heads()
    last, frozen, low, prompt_mask, labels = make_batch()
    losses = heads.losses(last.detach().bfloat16(), frozen.bfloat16(), low.bfloat16(), prompt_mask, labels)
    assert losses.adjusted.dtype == torch.float32


def test_heads_predict_from_the_bank_with_batch_size_one():
    heads = make_heads()
    last, frozen, low, prompt_mask, labels = make_batch()
    heads.losses(last, frozen, low, prompt_mask, labels)
    heads.eval()
    with torch.no_grad():
        one = heads.predict(last[:1], prompt_mask[:1], k=8, generator=seeded(5))
        again = heads.predict(last[:1], prompt_mask[:1], k=8, generator=seeded(5))
        batch = heads.predict(last, prompt_mask, low_hidden=low, k=8, source="batch", generator=seeded(5))
    assert one.shape == (1, 2) and batch.shape == (4, 2)
    torch.testing.assert_close(one, again, rtol=0, atol=0)
    torch.testing.assert_close(one.sum(-1), torch.ones(1))
    with pytest.raises(DataError, match="memory bank"):
        heads.predict(last[:1], prompt_mask[:1], low_hidden=low[:1], source="batch")
    with pytest.raises(ConfigError, match="pass low_hidden"):
        heads.predict(last, prompt_mask, source="batch")


def test_own_source_is_the_unadjusted_head_on_each_rows_own_phi():
    """The no-shuffle ablation: h([q1(x), Phi(x)]) with no draws, so any k or seed gives the same answer."""
    heads = make_heads()
    last, frozen, low, prompt_mask, labels = make_batch()
    heads.losses(last, frozen, low, prompt_mask, labels, adjustment="shuffle_test")
    heads.eval()
    with torch.no_grad():
        own = heads.predict(last, prompt_mask, low_hidden=low, source="own", k=3, generator=seeded(1))
        q1 = heads.causal_probs(last, prompt_mask)
        phi = heads.low_level_encoder(heads.low_level_features(low, prompt_mask)[0])
        expected = heads.adjusted_head(q1, phi).softmax(-1)
        one_row = heads.predict(last[:1], prompt_mask[:1], low_hidden=low[:1], source="own")
    torch.testing.assert_close(own, expected)
    torch.testing.assert_close(one_row, expected[:1])
    with pytest.raises(ConfigError, match="pass low_hidden"):
        heads.predict(last, prompt_mask, source="own")
    with pytest.raises(DataError, match="empty"):
        make_heads().predict(last, prompt_mask)


def test_heads_save_and_load_with_their_memory_bank(tmp_path):
    from safetensors.torch import load_file, save_file

    heads = make_heads()
    last, frozen, low, prompt_mask, labels = make_batch()
    heads.losses(last, frozen, low, prompt_mask, labels)
    save_file(heads.state_dict(), tmp_path / "heads.safetensors")

    restored = LatentShiftHeads.from_config(heads.config)
    restored.load_state_dict(load_file(tmp_path / "heads.safetensors"))
    assert len(restored.memory_bank) == 4
    heads.eval(), restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            restored.predict(last, prompt_mask, k=5, generator=seeded(6)),
            heads.predict(last, prompt_mask, k=5, generator=seeded(6)),
        )
