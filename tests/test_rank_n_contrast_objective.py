"""Rank-N-Contrast (the ``rank`` MCL targets): negative sets, the fast denominators, the loss's limits."""

from __future__ import annotations

import math

import pytest
import torch

from carl.objectives.rank_n_contrast import RankNContrastLoss, rank_log_denominators, rank_n_contrast_loss


def brute_force_loss(logits: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """The definition, with the [B, K, K] mask: for positive j the keys k with d_ik >= d_ij."""
    b, k = distance.shape
    total = 0.0
    for i in range(b):
        for j in range(k):
            negatives = distance[i] >= distance[i, j]
            total += -(logits[i, j] - torch.logsumexp(logits[i][negatives], 0))
    return total / (b * k)


def test_negatives_are_exactly_the_samples_at_least_as_far_in_1d():
    # 1-D labels; anchor 0 at y = 0, keys at y = 0 (its own), 1, -1 (a tie), 3, 7
    y_anchor, y_keys = 0.0, [0.0, 1.0, -1.0, 3.0, 7.0]
    distance = torch.tensor([[(y - y_anchor) ** 2 for y in y_keys]])
    # logits 10^k make each denominator identify its set: log(sum of distinct powers of ten)
    logits = torch.tensor([[math.log(10.0**k) for k in range(5)]], dtype=torch.float64)
    expected_sets = {
        0: {0, 1, 2, 3, 4},  # the own key (d = 0): every key is a negative (InfoNCE)
        1: {1, 2, 3, 4},  # y = 1: the tie at y = -1 is as far, so in the set; the own key is not
        2: {1, 2, 3, 4},
        3: {3, 4},  # y = 3: only itself and y = 7
        4: {4},  # the farthest key has only itself
    }
    got = rank_log_denominators(logits, distance.double())
    for j, members in expected_sets.items():
        want = math.log(sum(10.0**k for k in members))
        assert got[0, j].item() == pytest.approx(want, rel=1e-12), j


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_sorted_denominators_match_the_definition_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 9, generator=g, dtype=torch.float64)
    distance = torch.randint(0, 4, (4, 9), generator=g).double()  # many ties
    torch.testing.assert_close(rank_n_contrast_loss(logits, distance), brute_force_loss(logits, distance))


def test_unlabelled_negatives_are_in_every_denominator_and_never_a_positive():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 6, generator=g, dtype=torch.float64)  # 4 labelled keys, then 2 negatives
    distance = torch.rand(3, 4, generator=g, dtype=torch.float64)
    far = torch.cat([distance, torch.full((3, 2), float("inf"), dtype=torch.float64)], 1)
    log_den = rank_log_denominators(logits, far)
    for i in range(3):
        for j in range(4):
            members = far[i] >= far[i, j]
            assert bool(members[4:].all())
            assert log_den[i, j].item() == pytest.approx(torch.logsumexp(logits[i][members], 0).item())
    want = -(logits[:, :4] - log_den[:, :4]).mean()
    torch.testing.assert_close(rank_n_contrast_loss(logits, distance, num_negatives=2), want)
    # a negative only adds to denominators: the loss grows
    assert rank_n_contrast_loss(logits, distance, 2) > rank_n_contrast_loss(logits[:, :4], distance)


def test_one_key_per_query_is_infonce_and_ordered_similarities_score_lower():
    queries = torch.nn.functional.normalize(torch.randn(1, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    labels = torch.tensor([[0.0, 0.0]])
    key_labels = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    loss = RankNContrastLoss(temperature=0.1)
    # keys whose similarity to the query falls with VA distance vs. the reverse order
    angles = torch.tensor([0.0, 0.5, 1.0, 1.5])
    basis = torch.linalg.qr(torch.cat([queries.T, torch.randn(8, 1)], 1))[0].T  # [2, 8], row 0 = +-query
    basis[0] = queries[0]
    ordered = torch.cos(angles)[:, None] * basis[0] + torch.sin(angles)[:, None] * basis[1]
    own = torch.tensor([0])
    good = loss(queries, ordered, labels, key_labels, own).loss
    bad = loss(queries, ordered.flip(0), labels, key_labels, own).loss
    assert good < bad
    # with the own key alone the loss is 0 (it is its own only negative)
    alone = loss(queries, ordered[:1], labels, key_labels[:1], own)
    assert alone.loss.item() == pytest.approx(0.0, abs=1e-6)
