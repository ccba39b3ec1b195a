"""The embedding perturbation of PTD: the L2 ball, the ascent, the consistency term."""

from __future__ import annotations

import pytest
import torch

from carl.objectives.embedding_perturbation import (
    adversarial_shift,
    ascent_step,
    consistency_loss,
    project_to_ball,
)


def test_projection_clips_each_token_to_the_ball_and_keeps_short_ones():
    delta = torch.tensor([[[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]])  # norms 5, 0.5, 0
    out = project_to_ball(delta, 1.0)
    torch.testing.assert_close(out.norm(dim=-1), torch.tensor([[1.0, 0.5, 0.0]]))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.6, 0.8]))  # direction kept


def test_an_ascent_step_moves_only_the_chosen_tokens_by_epsilon():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(2, 4, 3, generator=g)
    positions = torch.tensor([[True, False, True, False], [False, False, False, True]])
    out = ascent_step(torch.zeros(2, 4, 3), grad, positions, 0.7)
    norms = out.norm(dim=-1)
    torch.testing.assert_close(norms[positions], torch.full((3,), 0.7))
    assert (norms[~positions] == 0).all()
    cosine = torch.nn.functional.cosine_similarity(out[positions], grad[positions], dim=-1)
    torch.testing.assert_close(cosine, torch.ones(3))


@pytest.mark.parametrize("steps", [1, 3])
def test_the_shift_stays_within_epsilon_and_raises_the_loss(steps):
    g = torch.Generator().manual_seed(1)
    embeds = torch.randn(3, 5, 4, generator=g)
    weight = torch.randn(4, 2, generator=g)
    target = torch.randn(3, 2, generator=g)
    positions = torch.rand(3, 5, generator=g) < 0.4
    positions[:, 0] = True

    def affect_loss(delta):  # a small regression model of the mean embedding
        return ((embeds + delta).mean(1) @ weight - target).pow(2).mean()

    delta = adversarial_shift(affect_loss, positions, embeds.shape, epsilon=0.1, steps=steps)
    assert not delta.requires_grad
    assert (delta.norm(dim=-1) <= 0.1 + 1e-6).all()
    assert (delta[~positions] == 0).all()
    assert affect_loss(delta) > affect_loss(torch.zeros_like(delta))
    if steps == 1:  # the fast gradient method: exactly on the sphere
        torch.testing.assert_close(delta.norm(dim=-1)[positions], torch.full((int(positions.sum()),), 0.1))


def test_consistency_is_zero_for_equal_views_and_positive_otherwise():
    g = torch.Generator().manual_seed(2)
    clean = torch.randn(4, 3, generator=g)
    for kind in ("va", "single", "multi"):
        assert consistency_loss(clean, clean, kind).item() == pytest.approx(0.0, abs=1e-6)
        assert consistency_loss(clean, clean + 0.5, kind if kind != "single" else "multi") > 0
    moved = clean.clone()
    moved[:, 0] += 1.0
    assert consistency_loss(clean, moved, "single") > 0
    assert consistency_loss(clean, clean + 1.0, "single").item() == pytest.approx(0.0, abs=1e-6)  # softmax shift
    # the VA form is half the squared distance; the gradient reaches only the perturbed side
    perturbed = (clean + 2.0).requires_grad_(True)
    clean_leaf = clean.clone().requires_grad_(True)
    loss = consistency_loss(clean_leaf, perturbed, "va")
    assert loss.item() == pytest.approx(0.5 * 3 * 4.0)
    loss.backward()
    assert clean_leaf.grad is None and perturbed.grad is not None
    # symmetric KL: swapping the views gives the same value
    a, b = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    torch.testing.assert_close(consistency_loss(a, b, "single"), consistency_loss(b, a, "single"))
