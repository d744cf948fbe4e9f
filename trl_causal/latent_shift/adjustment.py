"""The math of the ``latent_shift`` trainer (METHODS.md section 3) in plain torch.

Per batch of B rows the trainer hands over hidden states it already has: from one forward of the
model being fine-tuned with ``output_hidden_states=True`` and one no-grad forward of the frozen view,

- ``hidden_states[-1]`` of the model being fine-tuned  -> R1 = masked mean over prompt tokens,
- ``hidden_states[-1]`` of the frozen view             -> R0 (same pooling),
- ``hidden_states[low_layer]`` (default 0: embeddings)  -> patch features f -> Phi = MLP(LayerNorm(f)),

and this module computes
    q0 = softmax(g(R0)),  q1 = softmax(g(R1)),   L_C = mean ||q0 - q1||^2 - H(q0) - H(q1)
                                                  (METHODS' form, ``entropy_mode: per_example``; the default
                                                  ``mutual_information`` takes the entropies as in
                                                  ``causal_alignment_loss``),
    L_adj = CE(h([q1, Phi[perm]]), y)            (perm: a derangement of the batch),
    p(y | do(x)) ~= 1/K sum_k softmax(h([q1(x), Phi'_k]))   (Phi'_k drawn independently of x).

Every pooling runs over *prompt* tokens only: completion tokens contain the answer, and pooling
them would leak the label into Phi.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, DataError, describe_rows

Adjustment = Literal["shuffle_train", "shuffle_test"]
EntropyMode = Literal["mutual_information", "marginal", "per_example"]
PhiSource = Literal["bank", "batch", "own"]

ADJUSTMENTS: tuple[str, ...] = ("shuffle_train", "shuffle_test")
ENTROPY_MODES: tuple[str, ...] = ("mutual_information", "marginal", "per_example")
PHI_SOURCES: tuple[str, ...] = ("bank", "batch", "own")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(repr(c) for c in choices)}.")


def _token_mask(hidden: Tensor, mask: Tensor) -> Tensor:
    """The mask (a tensor, or nested lists) as bool [B, T] on the hidden states' device, after checking it matches them."""
    mask = torch.as_tensor(mask, device=hidden.device)
    if hidden.dim() != 3:
        raise DataError(f"hidden states must be [batch, tokens, features]; got shape {tuple(hidden.shape)}.")
    if tuple(mask.shape) != tuple(hidden.shape[:2]):
        raise DataError(
            f"mask has shape {tuple(mask.shape)} but the hidden states have [batch, tokens] = "
            f"{tuple(hidden.shape[:2])}; pass one mask entry per token (e.g. the prompt-token mask)."
        )
    return mask.bool()


def _raise_on_empty_rows(lengths: Tensor) -> None:
    empty = (lengths == 0).nonzero().flatten().tolist()
    if empty:
        raise DataError(
            f"No masked tokens to pool in {describe_rows(empty)} of the batch; the mask must select at least one "
            "prompt token per row (check truncation: max_length may cut the whole prompt)."
        )


def _masked_mean(hidden: Tensor, token_mask: Tensor, count: Tensor) -> Tensor:
    """sum_t m_bt h_bt / count_b [B, D], summed and divided in float32 (float64 for float64 input), so a bf16 / fp16
    sum is neither rounded to 8 or 11 bits (the mean of 257 ones in bf16 was 0.996) nor overflows fp16's 65504. Masked
    positions count as 0, whatever they hold (NaN too)."""
    precise = torch.promote_types(hidden.dtype, torch.float32)
    summed = hidden.masked_fill(~token_mask.unsqueeze(-1), 0).sum(1, dtype=precise)
    return summed / count.to(precise).unsqueeze(1)


def prompt_token_mask(labels: Tensor, attention_mask: Tensor) -> Tensor:
    """[B, T] bool: the tokens before the start of each row's last supervised span (label != -100), i.e. its prompt:
    in a conversation whose assistant turns are all trained (assistant_only_loss), everything before the final
    answer, which the label belongs to, as prediction pools it."""
    supervised = labels.ne(-100)
    starts = supervised & ~F.pad(supervised[:, :-1], (1, 0), value=False)
    positions = torch.arange(labels.shape[1], device=labels.device)
    last_start = torch.where(starts, positions, -1).amax(dim=1, keepdim=True)
    last_start = torch.where(last_start < 0, labels.shape[1], last_start)  # no supervised token: every token
    return (positions < last_start) & attention_mask.bool()


def masked_mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """R_b = sum_t m_bt h_bt / sum_t m_bt: the mean of ``hidden`` [B, T, D] over the tokens where ``mask`` [B, T] is set."""
    token_mask = _token_mask(hidden, mask)
    lengths = token_mask.sum(1)
    _raise_on_empty_rows(lengths)
    return _masked_mean(hidden, token_mask, lengths).to(hidden.dtype)


def patch_features(hidden: Tensor, mask: Tensor, n_patches: int) -> tuple[Tensor, int]:
    """f_b = 1/P' sum_p mean_{t in patch p} h_bt, over the masked tokens of row b split in order into P' patches.

    A row with L masked tokens uses P' = min(P, L) contiguous patches sized as ``torch.tensor_split``
    does (the first L mod P' patches hold one token more). Rows with L < P fall back to L one-token
    patches (then f_b is the plain mean). Returns ``(f [B, D], number of rows that fell back)``.
    """
    if not isinstance(n_patches, numbers.Integral) or isinstance(n_patches, bool) or n_patches < 1:
        raise ConfigError(f"n_patches={n_patches!r} must be a whole number of at least 1 (the paper uses 10).")
    token_mask = _token_mask(hidden, mask)
    lengths = token_mask.sum(1)
    _raise_on_empty_rows(lengths)
    n_used = lengths.clamp(max=n_patches)
    base_size = lengths // n_used
    n_long = lengths % n_used  # patches 0 .. n_long-1 hold base_size + 1 tokens
    rank = token_mask.long().cumsum(1) - 1  # position of each masked token among its row's masked tokens
    in_long_patch = rank < (n_long * (base_size + 1)).unsqueeze(1)
    # each token weighs 1 / (its patch's size * P'): the tokens of the long and of the short patches summed apart
    features = _masked_mean(hidden, token_mask & in_long_patch, (base_size + 1) * n_used) + _masked_mean(
        hidden, token_mask & ~in_long_patch, base_size * n_used
    )
    n_fallback = int((lengths < n_patches).sum())
    return features.to(hidden.dtype), n_fallback


def _mlp(in_features: int, hidden_sizes: Sequence[int], out_features: int) -> nn.Sequential:
    """Linear -> GELU for each hidden size, then Linear to ``out_features`` (a single Linear when ``hidden_sizes`` is empty)."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.GELU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def _check_size(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}.")


class CausalHead(nn.Module):
    """g: logits = MLP(LayerNorm(R)) over ``n_causal`` causal states; q = softmax(logits)."""

    def __init__(self, hidden_size: int, n_causal: int, hidden_sizes: Sequence[int] = ()) -> None:
        super().__init__()
        _check_size("n_causal", n_causal, 2)
        self.norm = nn.LayerNorm(hidden_size)
        self.mlp = _mlp(hidden_size, hidden_sizes, n_causal)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.mlp(self.norm(pooled))


def entropy(probs: Tensor) -> Tensor:
    """H(q) = -sum_c q_c log q_c over the last dimension."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


def causal_alignment_loss(q0: Tensor, q1: Tensor, entropy_mode: EntropyMode = "mutual_information") -> Tensor:
    """L_C = mean_b ||q0_b - q1_b||^2 - H(q0) - H(q1) for q0, q1 [B, C] (frozen and fine-tuned view).

    METHODS.md leaves open which entropy stops collapse; three readings are offered:

    - ``"mutual_information"`` (default): H(q) = H(mean_b q_b) - mean_b H(q_b), the mutual information
      between a row and its causal state (as in deep-clustering losses such as IIC). Minimised only by
      confident, balanced assignments that agree across views: it stops both the collapse of every
      row into one state and the collapse of every row into the uniform q.
    - ``"marginal"``: H(q) = H(mean_b q_b). Stops the one-state collapse, but q0 = q1 = uniform for
      every row minimises it just as well, and that q carries nothing about x: on the shift benchmark
      L_C sat at -2 log C while L_adj stayed at log 2 (h learnt nothing from q1).
    - ``"per_example"``: H(q) = mean_b H(q_b). Its minimiser is q0 = q1 = uniform for every row;
      only L_adj keeps q1 informative. Offered as the literal reading of the formula.
    """
    if q0.shape != q1.shape or q0.dim() != 2:
        raise DataError(f"q0 and q1 must both be [batch, n_causal]; got {tuple(q0.shape)} and {tuple(q1.shape)}.")
    _check_choice("entropy_mode", entropy_mode, ENTROPY_MODES)
    alignment = (q0 - q1).pow(2).sum(-1).mean()
    if entropy_mode == "per_example":
        return alignment - entropy(q0).mean() - entropy(q1).mean()
    loss = alignment - entropy(q0.mean(0)) - entropy(q1.mean(0))
    if entropy_mode == "mutual_information":
        loss = loss + entropy(q0).mean() + entropy(q1).mean()
    return loss


class LowLevelEncoder(nn.Module):
    """Phi = MLP(LayerNorm(f)): low-level features [B, d_phi] from the patch features f [B, D]."""

    def __init__(self, feature_size: int, d_phi: int, hidden_sizes: Sequence[int] = (256,)) -> None:
        super().__init__()
        _check_size("d_phi", d_phi, 1)
        self.norm = nn.LayerNorm(feature_size)
        self.mlp = _mlp(feature_size, hidden_sizes, d_phi)

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(self.norm(features))


def derangement(n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """A uniformly random permutation of 0..n-1 with perm[i] != i for every i (rejection sampling, ~e draws)."""
    if n < 2:
        raise DataError(
            f"the latent_shift shuffle pairs each row with another row's Phi, so it needs at least 2 rows per "
            f"device batch, got {n}; raise per_device_train_batch_size to 2 or more (and drop a last batch of 1 "
            "with dataloader_drop_last=True)."
        )
    generator_device = generator.device if generator is not None else "cpu"
    identity = torch.arange(n, device=generator_device)
    while True:
        perm = torch.randperm(n, generator=generator, device=generator_device)
        if not bool((perm == identity).any()):
            return perm.to(device) if device is not None else perm


class AdjustedHead(nn.Module):
    """h: logits over the label set = MLP([q, Phi]); accepts any leading dimensions."""

    def __init__(self, n_causal: int, d_phi: int, n_labels: int, hidden_sizes: Sequence[int] = (64,)) -> None:
        super().__init__()
        _check_size("n_labels", n_labels, 2)
        self.d_phi = d_phi
        self.mlp = _mlp(n_causal + d_phi, hidden_sizes, n_labels)

    def forward(self, q: Tensor, phi: Tensor) -> Tensor:
        """Logits [..., n_labels] of q [..., n_causal] and Phi [..., d_phi] with the same leading dimensions, taken in
        the head's dtype."""
        first = self.mlp[0]
        n_causal = first.in_features - self.d_phi
        if q.shape[-1] != n_causal or phi.shape[-1] != self.d_phi or q.shape[:-1] != phi.shape[:-1]:
            raise DataError(
                f"The adjusted head takes q [..., {n_causal}] and Phi [..., {self.d_phi}] with the same leading "
                f"dimensions (one Phi per q); got q {tuple(q.shape)} and Phi {tuple(phi.shape)}."
            )
        return self.mlp(torch.cat([q, phi], dim=-1).to(first.weight.dtype))


def adjusted_loss(
    adjusted_head: AdjustedHead,
    q1: Tensor,
    phi: Tensor,
    labels: Tensor,
    generator: torch.Generator | None = None,
    adjustment: Adjustment = "shuffle_train",
) -> Tensor:
    """L_adj = CE(h([q1, Phi[perm]]), y) with perm a derangement (``shuffle_train``), or perm = identity (``shuffle_test``).

    ``shuffle_train`` makes Phi independent of y in training, so the optimum of h is p(y | c);
    ``shuffle_test`` fits h on the true pairs and leaves the mixing to ``adjusted_predict``.
    ``labels`` are class indices [B] into the label set.
    """
    _check_choice("adjustment", adjustment, ADJUSTMENTS)
    if adjustment == "shuffle_train":
        phi = phi[derangement(phi.shape[0], generator, device=phi.device)]
    return F.cross_entropy(adjusted_head(q1, phi), labels)


class MemoryBank(nn.Module):
    """A FIFO buffer of the last ``capacity`` vectors seen in training (a ring over ``vectors`` [capacity, dim]).

    The contents are registered buffers, so they are part of ``state_dict()`` (and of a safetensors
    checkpoint) and follow ``.to(device)``. FIFO rather than reservoir: the bank then reflects the
    most recent inputs.
    """

    vectors: Tensor
    num_seen: Tensor

    def __init__(self, capacity: int, dim: int) -> None:
        super().__init__()
        _check_size("memory bank capacity", capacity, 1)
        self.capacity = capacity
        self.register_buffer("vectors", torch.zeros(capacity, dim))
        self.register_buffer("num_seen", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return min(int(self.num_seen), self.capacity)

    @torch.no_grad()
    def add(self, batch: Tensor) -> None:
        """Append ``batch`` [N, dim] (detached), overwriting the oldest entries once full. No host sync."""
        batch = batch.detach().to(device=self.vectors.device, dtype=self.vectors.dtype)
        if batch.dim() != 2 or batch.shape[1] != self.vectors.shape[1]:
            raise DataError(f"memory bank expects [N, {self.vectors.shape[1]}] vectors; got {tuple(batch.shape)}.")
        skipped = max(batch.shape[0] - self.capacity, 0)  # only the last `capacity` rows can survive
        batch = batch[skipped:]
        slots = (self.num_seen + skipped + torch.arange(batch.shape[0], device=self.vectors.device)) % self.capacity
        self.vectors.index_copy_(0, slots, batch)
        self.num_seen += batch.shape[0] + skipped

    def stored(self) -> Tensor:
        """The filled part of the bank [len(self), dim], in slot order: oldest first until the bank wraps, then the
        ring as it lies (which rows are kept is FIFO; their order here is not)."""
        if len(self) == 0:
            raise DataError(
                "the memory bank is empty: train first (the bank fills during training and is saved with the "
                "heads) or draw Phi' from the test batch instead."
            )
        return self.vectors[: len(self)]

    def sample(self, k: int, generator: torch.Generator | None = None) -> Tensor:
        """k vectors [k, dim] drawn uniformly with replacement from the filled part."""
        stored = self.stored()
        generator_device = generator.device if generator is not None else "cpu"
        index = torch.randint(stored.shape[0], (k,), generator=generator, device=generator_device)
        return stored[index.to(stored.device)]


def adjusted_predict(
    adjusted_head: AdjustedHead,
    q1: Tensor,
    phi_candidates: Tensor,
    k: int = 20,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    exclude_self: bool = False,
) -> Tensor:
    """p_b = 1/K sum_{j=1..K} softmax(h([q1_b, Phi'_{b,j}])), each Phi'_{b,j} drawn uniformly (with replacement) from ``phi_candidates`` [M, d_phi].

    ``exclude_self=True`` is for candidates that are the batch's own Phi (M = B): row b then never
    draws its own Phi (needs B >= 2; with one row use the memory bank). Deterministic given a
    seeded ``generator``; a sequence of generators, one per row, draws each row's K from its own, so that a row's
    draws do not depend on the rows before it. Returns probabilities [B, n_labels].
    """
    _check_size("k (number of Phi' draws)", k, 1)
    if q1.dim() != 2 or phi_candidates.dim() != 2:
        raise DataError(
            f"adjusted_predict takes q1 [rows, n_causal] and phi_candidates [M, d_phi]; got {tuple(q1.shape)} and "
            f"{tuple(phi_candidates.shape)} (one row is q1[None])."
        )
    n_rows, n_candidates = q1.shape[0], phi_candidates.shape[0]
    if exclude_self and n_candidates != n_rows:
        raise DataError(
            f"exclude_self=True means the candidates are the batch's own Phi, but there are {n_candidates} "
            f"candidates for {n_rows} rows; pass the batch's Phi or set exclude_self=False."
        )
    if n_candidates - int(exclude_self) < 1:
        raise DataError(
            f"{n_candidates} Phi candidate(s) leave nothing to draw for the adjusted prediction"
            + (" after excluding each row's own Phi; with batch size 1 draw from the memory bank." if exclude_self else ".")
        )
    choices = n_candidates - int(exclude_self)
    if isinstance(generator, Sequence):
        if len(generator) != n_rows:
            raise DataError(f"{len(generator)} generators for {n_rows} rows: give one per row, or one for all.")
        generator_device = generator[0].device if n_rows else "cpu"
        rows = [torch.randint(choices, (k,), generator=row_generator, device=generator_device) for row_generator in generator]
        index = torch.stack(rows) if rows else torch.empty(0, k, dtype=torch.long)
    else:
        generator_device = generator.device if generator is not None else "cpu"
        index = torch.randint(choices, (n_rows, k), generator=generator, device=generator_device)
    if exclude_self:
        index += index >= torch.arange(n_rows, device=generator_device).unsqueeze(1)
    drawn_phi = phi_candidates[index.to(phi_candidates.device)]  # [B, K, d_phi]
    logits = adjusted_head(q1.unsqueeze(1).expand(-1, k, -1), drawn_phi)
    return logits.softmax(-1).mean(1)


@dataclass
class LatentShiftLosses:
    """The auxiliary losses of one batch: add ``lambda_C * causal + lambda_adj * adjusted`` to L_SFT."""

    causal: Tensor
    adjusted: Tensor
    n_patch_fallback: int


class LatentShiftHeads(nn.Module):
    """The trainable parts of ``latent_shift``: causal head g, low-level encoder (Phi) and adjusted head h, plus the memory bank.

    The bank stores patch features f (the encoder's input), not Phi: Phi' = encoder(f') is recomputed
    with the current encoder whenever it is drawn, so the bank never holds a stale encoder's Phi (the f themselves
    come from the model as it was when their rows were seen: they drift where the embeddings, or with
    ``low_level_layer`` > 0 the layers below it, train). The heads
    compute in their own dtype (float32 unless cast); hidden states are cast to it.
    ``config`` holds the constructor arguments: ``LatentShiftHeads.from_config(heads.config)``
    rebuilds the same architecture before ``load_state_dict``.
    """

    def __init__(
        self,
        hidden_size: int,
        n_causal: int,
        d_phi: int,
        n_labels: int,
        *,
        low_level_size: int | None = None,
        n_patches: int = 10,
        bank_size: int = 1024,
        causal_hidden_sizes: Sequence[int] = (),
        encoder_hidden_sizes: Sequence[int] = (256,),
        adjusted_hidden_sizes: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        _check_size("n_patches", n_patches, 1)
        low_level_size = low_level_size or hidden_size
        self.config: dict[str, Any] = {
            "hidden_size": hidden_size,
            "n_causal": n_causal,
            "d_phi": d_phi,
            "n_labels": n_labels,
            "low_level_size": low_level_size,
            "n_patches": n_patches,
            "bank_size": bank_size,
            "causal_hidden_sizes": list(causal_hidden_sizes),
            "encoder_hidden_sizes": list(encoder_hidden_sizes),
            "adjusted_hidden_sizes": list(adjusted_hidden_sizes),
        }
        self.n_patches = n_patches
        self.causal_head = CausalHead(hidden_size, n_causal, causal_hidden_sizes)
        self.low_level_encoder = LowLevelEncoder(low_level_size, d_phi, encoder_hidden_sizes)
        self.adjusted_head = AdjustedHead(n_causal, d_phi, n_labels, adjusted_hidden_sizes)
        self.memory_bank = MemoryBank(bank_size, low_level_size)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LatentShiftHeads":
        return cls(**config)

    @property
    def dtype(self) -> torch.dtype:
        return self.causal_head.norm.weight.dtype

    def causal_probs(self, last_hidden: Tensor, prompt_mask: Tensor) -> Tensor:
        """q = softmax(g(R)), R = masked mean of ``last_hidden`` [B, T, D] over the prompt tokens."""
        return self.causal_head(masked_mean_pool(last_hidden.to(self.dtype), prompt_mask)).softmax(-1)

    def low_level_features(self, low_hidden: Tensor, prompt_mask: Tensor) -> tuple[Tensor, int]:
        """Patch features f [B, D_low] of the prompt tokens and the number of rows that fell back to fewer patches."""
        return patch_features(low_hidden.to(self.dtype), prompt_mask, self.n_patches)

    def losses(
        self,
        last_hidden: Tensor,
        frozen_last_hidden: Tensor,
        low_hidden: Tensor,
        prompt_mask: Tensor,
        labels: Tensor,
        *,
        adjustment: Adjustment = "shuffle_train",
        entropy_mode: EntropyMode = "mutual_information",
        generator: torch.Generator | None = None,
        gather: Callable[[Tensor], Tensor] | None = None,
    ) -> LatentShiftLosses:
        """L_C and L_adj of one batch. In training mode (``self.training``) the batch's patch features also enter the
        memory bank: under data parallelism ``gather`` (e.g. ``accelerator.gather``) collects every process's rows, so
        that each process's bank holds them all, in the same order.

        ``last_hidden``: last hidden layer of the model being fine-tuned (with grad);
        ``frozen_last_hidden``: the same layer of the frozen view (no grad);
        ``low_hidden``: the low layer for Phi (``hidden_states[0]``, the embeddings, by default);
        ``labels``: class indices [B] into the verbalizer's label set.
        """
        q0 = self.causal_probs(frozen_last_hidden.detach(), prompt_mask)
        q1 = self.causal_probs(last_hidden, prompt_mask)
        features, n_fallback = self.low_level_features(low_hidden, prompt_mask)
        phi = self.low_level_encoder(features)
        losses = LatentShiftLosses(
            causal=causal_alignment_loss(q0, q1, entropy_mode),
            adjusted=adjusted_loss(self.adjusted_head, q1, phi, labels, generator, adjustment),
            n_patch_fallback=n_fallback,
        )
        if self.training:  # after the losses: a batch they refuse leaves the bank as it was
            self.memory_bank.add(features if gather is None else gather(features.detach()))
        return losses

    def predict(
        self,
        last_hidden: Tensor,
        prompt_mask: Tensor,
        *,
        low_hidden: Tensor | None = None,
        k: int = 20,
        source: PhiSource = "bank",
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> Tensor:
        """Adjusted prediction [B, n_labels]: 1/K sum_k softmax(h([q1, Phi'_k])).

        Phi' comes from the memory bank (``source="bank"``; any batch size, ``low_hidden`` unused) or
        from the other rows of this batch (``source="batch"``; needs ``low_hidden`` and B >= 2).
        ``source="own"`` is no adjustment (the no-shuffle ablation): softmax(h([q1, Phi(x)])) with each row's own Phi
        (needs ``low_hidden``; ``k`` and ``generator`` unused).
        """
        _check_choice("source", source, PHI_SOURCES)
        q1 = self.causal_probs(last_hidden, prompt_mask)
        if source == "bank":
            candidates = self.low_level_encoder(self.memory_bank.stored().to(self.dtype))
        elif low_hidden is None:
            raise ConfigError(f'source="{source}" takes Phi from the batch: pass low_hidden (the low layer\'s hidden states).')
        elif source == "own":
            return self.adjusted_head(q1, self.low_level_encoder(self.low_level_features(low_hidden, prompt_mask)[0])).softmax(-1)
        else:
            candidates = self.low_level_encoder(self.low_level_features(low_hidden, prompt_mask)[0])
        return adjusted_predict(self.adjusted_head, q1, candidates, k, generator, exclude_self=source == "batch")
