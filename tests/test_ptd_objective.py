"""Tests for carl.objectives.perturbed_token_detection: saliency, selection, replacement, detection."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from carl.objectives.perturbed_token_detection import (
    PerturbedTokenDetection,
    detection_loss,
    hotflip_replacements,
    positions_from_words,
    random_replacements,
    sample_sentences,
    select_words,
    word_saliency,
)

NEG = float("-inf")


def grads_with_norms(norms: list[list[float]], hidden: int = 2) -> torch.Tensor:
    """Gradients [B, T, H] whose token L2 norms are ``norms`` (3-4-5 triangles for variety)."""
    n = torch.tensor(norms, dtype=torch.float)
    grad = torch.zeros(*n.shape, hidden)
    grad[..., 0] = 0.6 * n
    grad[..., 1] = -0.8 * n
    return grad


# --------------------------------------------------------------------------- word saliency


def test_word_saliency_max_over_subwords_and_ignores_non_words():
    # [CLS] w0 w0 w1 [SEP] [PAD]: huge gradients on CLS/SEP/PAD must not leak into words
    word_index = torch.tensor([[-1, 0, 0, 1, -1, -1]])
    grad = grads_with_norms([[100.0, 1.0, 4.0, 2.0, 50.0, 70.0]])
    scores = word_saliency(grad, word_index)
    assert scores.shape == (1, 2)
    torch.testing.assert_close(scores, torch.tensor([[4.0, 2.0]]))


def test_word_saliency_uses_l2_norm_over_hidden():
    word_index = torch.tensor([[-1, 0, 1, -1]])
    grad = torch.zeros(1, 4, 3)
    grad[0, 1] = torch.tensor([1.0, 2.0, 2.0])  # norm 3
    grad[0, 2] = torch.tensor([0.0, -4.0, 0.0])  # norm 4 (sign does not matter)
    torch.testing.assert_close(word_saliency(grad, word_index), torch.tensor([[3.0, 4.0]]))


def test_word_saliency_batch_with_different_word_counts():
    word_index = torch.tensor(
        [
            [-1, 0, 1, 1, 2, -1],
            [-1, 0, 0, -1, -1, -1],  # one word, then padding
        ]
    )
    grad = grads_with_norms(
        [
            [9.0, 0.5, 3.0, 7.0, 1.0, 9.0],
            [9.0, 2.0, 0.25, 9.0, 9.0, 9.0],
        ]
    )
    scores = word_saliency(grad, word_index)
    assert scores.shape == (2, 3)
    assert scores[0].tolist() == pytest.approx([0.5, 7.0, 1.0])
    assert scores[1, 0].item() == pytest.approx(2.0)
    assert scores[1, 1].item() == NEG and scores[1, 2].item() == NEG


def test_word_saliency_zero_gradient_word_is_present():
    word_index = torch.tensor([[-1, 0, 1, -1]])
    grad = grads_with_norms([[5.0, 0.0, 1.0, 5.0]])
    scores = word_saliency(grad, word_index)
    assert scores[0].tolist() == [0.0, 1.0]  # 0, not -inf: the word exists


# --------------------------------------------------------------------------- selection


def test_select_words_hand_example():
    scores = torch.tensor(
        [
            [1.0, 5.0, 3.0, NEG],
            [2.0, NEG, NEG, NEG],
            [0.1, 0.4, 0.3, 0.2],
        ]
    )
    chosen = select_words(scores, 0.5)
    assert chosen.tolist() == [
        [False, True, True, False],  # round(1.5) = 2: words 1 and 2
        [True, False, False, False],  # round(0.5) = 0 -> at least one
        [False, True, True, False],  # round(2.0) = 2: the two largest
    ]


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.34, 0.6, 0.8, 1.0])
def test_select_words_count_and_top_scores(ratio):
    g = torch.Generator().manual_seed(int(ratio * 100))
    width = 12
    counts = list(range(1, width + 1))
    scores = torch.full((len(counts), width), NEG)
    for row, n in enumerate(counts):
        scores[row, :n] = torch.randperm(n, generator=g).float()  # distinct scores
    chosen = select_words(scores, ratio)
    for row, n in enumerate(counts):
        k = min(n, max(1, round(ratio * n)))
        assert int(chosen[row].sum()) == k, (n, ratio)
        assert not chosen[row, n:].any()  # absent words never chosen
        picked = scores[row][chosen[row]]
        rest = scores[row, :n][~chosen[row, :n]]
        if len(rest):
            assert picked.min() > rest.max()


def test_select_words_empty_sentence_chooses_nothing():
    scores = torch.tensor([[NEG, NEG], [1.0, 2.0]])
    chosen = select_words(scores, 0.5)
    assert chosen.tolist() == [[False, False], [False, True]]


# --------------------------------------------------------------------------- positions


def test_positions_from_words_marks_all_subwords_only():
    word_index = torch.tensor(
        [
            [-1, 0, 1, 1, 1, 2, -1, -1],
            [-1, 0, 0, 1, -1, -1, -1, -1],
        ]
    )
    chosen = torch.tensor(
        [
            [False, True, False],
            [True, False, False],
        ]
    )
    positions = positions_from_words(chosen, word_index)
    assert positions.tolist() == [
        [False, False, True, True, True, False, False, False],
        [False, True, True, False, False, False, False, False],
    ]


def test_positions_never_on_special_or_pad_even_if_word0_chosen():
    word_index = torch.tensor([[-1, 0, 1, -1, -1]])
    chosen = torch.tensor([[True, True]])
    positions = positions_from_words(chosen, word_index)
    assert positions.tolist() == [[False, True, True, False, False]]
    assert not positions[word_index == -1].any()


# --------------------------------------------------------------------------- replacements

# vocabulary of 6 tokens in 2-d; token 0 is a (banned) special token with a big embedding
EMBEDDING = torch.tensor(
    [
        [5.0, 5.0],  # 0 special
        [1.0, 0.0],  # 1
        [0.0, 1.0],  # 2
        [-1.0, 0.0],  # 3
        [2.0, 2.0],  # 4
        [0.0, -2.0],  # 5
    ]
)


def test_hotflip_hand_example():
    banned = torch.tensor([True, False, False, False, False, False])
    input_ids = torch.tensor([1, 2, 4, 4, 3])
    grads = torch.tensor(
        [
            [0.0, 1.0],  # gains (E_v - e_1).g = E_v[1] - 0 -> [5, 0, 1, 0, 2, -2]: 0 banned -> 4
            [1.0, 0.0],  # E_v[0] - 0 -> [5, 1, 0, -1, 2, 0]: -> 4
            [1.0, 0.5],  # E.g = [7.5, 1, .5, -1, 3, -1] - 3: original 4 is best allowed -> excluded -> 1
            [0.0, -1.0],  # E.g = [-5, 0, -1, 0, -2, 2] + 2: -> 5
            [-1.0, -0.1],  # E.g = [-5.5, -1, -.1, 1, -2.2, .2]: original 3 is the argmax, excluded -> 5
        ]
    )
    got = hotflip_replacements(input_ids, grads, EMBEDDING, banned)
    assert got.tolist() == [4, 4, 1, 5, 5]


def test_hotflip_respects_banned_tokens():
    banned = torch.tensor([True, False, False, False, True, False])
    input_ids = torch.tensor([1, 2])
    grads = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # without 0 and 4: row 0 gains [., 0, 1, 0, ., -2] -> 2; row 1 gains [., 1, 0, -1, ., 0] -> 1
    assert hotflip_replacements(input_ids, grads, EMBEDDING, banned).tolist() == [2, 1]


def test_hotflip_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    vocab, hidden, n = 30, 4, 25
    embedding = torch.randn(vocab, hidden, generator=g)
    banned = torch.zeros(vocab, dtype=torch.bool)
    banned[[0, 1, 2, 7]] = True
    input_ids = torch.randint(3, vocab, (n,), generator=g)
    grads = torch.randn(n, hidden, generator=g)
    got = hotflip_replacements(input_ids, grads, embedding, banned)
    for i in range(n):
        best, best_gain = None, -math.inf
        for v in range(vocab):
            if banned[v] or v == input_ids[i]:
                continue
            gain = float((embedding[v] - embedding[input_ids[i]]) @ grads[i])
            if gain > best_gain:
                best, best_gain = v, gain
        assert int(got[i]) == best
    assert not banned[got].any()
    assert not (got == input_ids).any()


def test_random_replacements_avoid_original_and_banned():
    torch.manual_seed(0)
    banned = torch.zeros(10, dtype=torch.bool)
    banned[[0, 1, 2]] = True
    input_ids = torch.tensor([3, 4, 9, 5] * 100)
    new = random_replacements(input_ids, banned)
    assert new.shape == input_ids.shape
    assert not (new == input_ids).any()
    assert not banned[new].any()
    assert set(new.tolist()) == set(range(3, 10))  # uniform over allowed: all appear in 400 draws


def test_random_replacements_two_allowed_tokens():
    torch.manual_seed(1)
    banned = torch.tensor([True, False, False, True])
    input_ids = torch.tensor([1, 2, 1, 2, 1])
    assert random_replacements(input_ids, banned).tolist() == [2, 1, 2, 1, 2]


# --------------------------------------------------------------------------- detection loss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def detection_example():
    logits = torch.tensor([[2.0, -1.0, 0.5, 9.0], [-3.0, -1.0, 7.0, 7.0]])
    perturbed = torch.tensor([[True, False, False, False], [False, True, False, True]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    return logits, perturbed, mask


def test_detection_loss_hand_example():
    logits, perturbed, mask = detection_example()
    out = detection_loss(logits, perturbed, mask)
    # valid tokens: (2, T) (-1, F) (0.5, F) (-3, F) (-1, T)
    # BCE: target 1 -> softplus(-x), target 0 -> softplus(x)
    terms = [softplus(-2.0), softplus(-1.0), softplus(0.5), softplus(-3.0), softplus(1.0)]
    assert out.loss.item() == pytest.approx(sum(terms) / 5, abs=1e-6)
    # perturbed valid: (0,0) predicted yes -> hit; (1,1) predicted no -> miss
    assert float(out.diagnostics["ptd_acc_perturbed"]) == pytest.approx(0.5)
    # clean valid: (0,1) no -> hit; (0,2) yes -> miss; (1,0) no -> hit
    assert float(out.diagnostics["ptd_acc_clean"]) == pytest.approx(2 / 3)
    assert float(out.diagnostics["ptd_perturbed_fraction"]) == pytest.approx(2 / 5)


def test_detection_loss_matches_masked_bce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, generator=g)
    perturbed = torch.rand(3, 7, generator=g) < 0.3
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    out = detection_loss(logits, perturbed, mask)
    per_token = F.binary_cross_entropy_with_logits(logits, perturbed.float(), reduction="none")
    expected = (per_token * mask).sum() / mask.sum()
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_detection_loss_ignores_padding():
    logits, perturbed, mask = detection_example()
    out = detection_loss(logits, perturbed, mask)
    changed = logits.clone()
    changed[0, 3] = -50.0
    changed[1, 2:] = torch.tensor([123.0, -7.0])
    flipped = perturbed.clone()
    flipped[0, 3] = True
    flipped[1, 3] = False
    out2 = detection_loss(changed, flipped, mask)
    assert out2.loss.item() == out.loss.item()
    assert out2.diagnostics == out.diagnostics


def test_detection_loss_gradient_zero_on_padding():
    logits, perturbed, mask = detection_example()
    logits = logits.clone().requires_grad_(True)
    detection_loss(logits, perturbed, mask).loss.backward()
    assert torch.all(logits.grad[mask == 0] == 0)
    assert torch.all(logits.grad[mask == 1] != 0)


# --------------------------------------------------------------------------- PerturbedTokenDetection

VOCAB = 20
SPECIAL = [0, 1, 2, 3]  # pad, cls, sep, mask
MASK_ID = 3


def ptd_batch():
    # [CLS] w0 w1 w1 w2 w3 [SEP] [PAD] / [CLS] w0 w0 w1 [SEP] [PAD] [PAD] [PAD]
    input_ids = torch.tensor(
        [
            [1, 10, 11, 12, 13, 14, 2, 0],
            [1, 15, 16, 17, 2, 0, 0, 0],
        ]
    )
    word_index = torch.tensor(
        [
            [-1, 0, 1, 1, 2, 3, -1, -1],
            [-1, 0, 0, 1, -1, -1, -1, -1],
        ]
    )
    return input_ids, word_index


def test_perturb_random_mask_only_at_chosen_positions():
    torch.manual_seed(0)
    input_ids, word_index = ptd_batch()
    ptd = PerturbedTokenDetection(
        ratio=0.5, selection="random", replacement="mask", special_ids=SPECIAL, mask_token_id=MASK_ID, vocab_size=VOCAB
    )
    embedding = torch.randn(VOCAB, 4)
    grad = torch.zeros(2, 8, 4)
    for _ in range(5):
        perturbed, positions = ptd.perturb(input_ids, word_index, grad, embedding)
        assert positions.dtype == torch.bool and positions.shape == input_ids.shape
        assert torch.all(perturbed[positions] == MASK_ID)
        assert torch.equal(perturbed[~positions], input_ids[~positions])
        assert not positions[word_index == -1].any()
        # round(0.5 * 4) = 2 words in row 0, round(0.5 * 2) = 1 word in row 1
        for row, k in ((0, 2), (1, 1)):
            words = set(word_index[row][positions[row]].tolist())
            assert len(words) == k
            # every sub-word of a chosen word is perturbed
            for w in words:
                assert positions[row][word_index[row] == w].all()
        assert not torch.equal(input_ids, perturbed)


def test_perturb_saliency_chooses_largest_gradient_words():
    input_ids, word_index = ptd_batch()
    ptd = PerturbedTokenDetection(
        ratio=0.25,
        selection="saliency",
        replacement="mask",
        special_ids=SPECIAL,
        mask_token_id=MASK_ID,
        vocab_size=VOCAB,
    )
    grad = grads_with_norms(
        [
            [99.0, 1.0, 0.5, 6.0, 2.0, 5.0, 99.0, 99.0],  # words: 1, 6, 2, 5 -> word 1 (max over sub-words)
            [99.0, 0.1, 0.2, 3.0, 99.0, 99.0, 99.0, 99.0],  # words: 0.2, 3 -> word 1
        ],
        hidden=4,
    )
    perturbed, positions = ptd.perturb(input_ids, word_index, grad, torch.randn(VOCAB, 4))
    assert positions.tolist() == [
        [False, False, True, True, False, False, False, False],
        [False, False, False, True, False, False, False, False],
    ]
    expected = input_ids.clone()
    expected[positions] = MASK_ID
    assert torch.equal(perturbed, expected)


def test_perturb_saliency_hotflip():
    g = torch.Generator().manual_seed(3)
    input_ids, word_index = ptd_batch()
    embedding = torch.randn(VOCAB, 4, generator=g)
    grad = torch.randn(2, 8, 4, generator=g)
    ptd = PerturbedTokenDetection(
        ratio=0.5,
        selection="saliency",
        replacement="hotflip",
        special_ids=SPECIAL,
        mask_token_id=MASK_ID,
        vocab_size=VOCAB,
    )
    perturbed, positions = ptd.perturb(input_ids, word_index, grad, embedding)
    # the chosen words are the top-scoring ones
    scores = word_saliency(grad, word_index)
    assert torch.equal(positions, positions_from_words(select_words(scores, 0.5), word_index))
    banned = torch.zeros(VOCAB, dtype=torch.bool)
    banned[SPECIAL] = True
    expected = hotflip_replacements(input_ids[positions], grad[positions], embedding, banned)
    assert torch.equal(perturbed[positions], expected)
    assert not (perturbed[positions] == input_ids[positions]).any()
    assert not banned[perturbed[positions]].any()
    assert torch.equal(perturbed[~positions], input_ids[~positions])


def test_perturb_random_replacement():
    torch.manual_seed(4)
    input_ids, word_index = ptd_batch()
    ptd = PerturbedTokenDetection(
        ratio=1.0, selection="random", replacement="random", special_ids=SPECIAL, mask_token_id=None, vocab_size=VOCAB
    )
    perturbed, positions = ptd.perturb(input_ids, word_index, torch.zeros(2, 8, 4), torch.randn(VOCAB, 4))
    assert torch.equal(positions, word_index >= 0)  # ratio 1: every word
    assert not (perturbed[positions] == input_ids[positions]).any()
    assert (perturbed[positions] >= 4).all()


def test_mask_replacement_needs_mask_token():
    with pytest.raises(ValueError):
        PerturbedTokenDetection(replacement="mask", special_ids=SPECIAL, mask_token_id=None, vocab_size=VOCAB)


def test_special_ids_beyond_vocab_are_ignored():
    ptd = PerturbedTokenDetection(special_ids=[0, 1, 500], mask_token_id=None, vocab_size=VOCAB)
    assert ptd.banned.shape == (VOCAB,)
    assert ptd.banned.tolist() == [True, True] + [False] * (VOCAB - 2)


def test_forward_is_detection_loss():
    logits, perturbed, mask = detection_example()
    ptd = PerturbedTokenDetection(special_ids=SPECIAL, mask_token_id=MASK_ID, vocab_size=VOCAB)
    assert ptd(logits, perturbed, mask).loss.item() == detection_loss(logits, perturbed, mask).loss.item()


# --------------------------------------------------------------------------- sentence sampling


def test_sample_sentences_all_rows_trims_padding_and_draws_nothing():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    ids = torch.arange(8).reshape(2, 4)
    state = torch.get_rng_state()
    out_mask, out_ids = sample_sentences(1.0, mask, ids)
    assert torch.equal(torch.get_rng_state(), state)
    assert out_mask.tolist() == [[1, 1, 0], [1, 1, 1]] and out_ids.tolist() == [[0, 1, 2], [4, 5, 6]]


@pytest.mark.parametrize("fraction, expected", [(0.5, 2), (0.25, 1), (0.01, 1), (0.75, 3)])
def test_sample_sentences_keeps_a_share_of_distinct_rows_in_order(fraction, expected):
    torch.manual_seed(0)
    mask = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    row_id = torch.arange(4)[:, None].expand(4, 3)
    grad = torch.randn(4, 3, 5)
    out_mask, out_rows, out_grad = sample_sentences(fraction, mask, row_id, grad)
    rows = out_rows[:, 0].tolist()
    assert len(rows) == expected and rows == sorted(set(rows))
    assert out_mask.shape[1] == int(mask[rows].sum(-1).max()) == out_grad.shape[1]
    assert torch.equal(out_grad, grad[rows][:, : out_mask.shape[1]])
