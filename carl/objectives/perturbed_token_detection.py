"""Gradient-saliency perturbed token detection (PTD).

1. Saliency. The backward pass of the clean loss already yields g_t = dL/de_t for every input
   word embedding e_t [B, T, H]; a token's saliency is ||g_t||_2, a word's the max over its
   sub-words. Special and padding tokens (``word_index == -1``) are never chosen.
2. Selection. Per sentence the top ``ratio`` of words (at least one) by saliency, or uniformly
   random words for the ``random`` control; every sub-word of a chosen word is perturbed.
3. Replacement. ``hotflip``: v* = argmax_v (E_v - e_t) . g_t, the token that most increases
   the loss to first order (Ebrahimi et al. 2018); ``random``: a uniform vocabulary token;
   ``mask``: the tokenizer's mask token. Special tokens and the original token are excluded.
4. Detection. The perturbed sentence goes through the query encoder; a token head predicts
   which positions were perturbed, trained with binary cross-entropy over non-padding tokens.
   ``sentence_fraction < 1`` perturbs and detects only a random share of each batch's
   sentences, which makes the extra pass proportionally cheaper (``sample_sentences``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carl.objectives.base import ObjectiveOutput


def sample_sentences(fraction: float, attention_mask: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A random ``fraction`` of the batch's sentences (at least one), trimmed to their longest.

    ``attention_mask`` [B, T] and each tensor [B, T, ...] -> the same for the B' chosen rows and
    T' <= T positions. ``fraction = 1`` keeps every row and draws no random numbers.
    """
    batch = attention_mask.shape[0]
    keep = max(1, round(batch * fraction))
    if keep < batch:
        rows = torch.randperm(batch, device=attention_mask.device)[:keep].sort().values
        attention_mask, tensors = attention_mask[rows], tuple(t[rows] for t in tensors)
    length = int(attention_mask.sum(-1).max())
    return (attention_mask[:, :length], *(t[:, :length] for t in tensors))


def word_saliency(input_grad: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    """Gradients [B, T, H] and word ids [B, T] (-1 = not a word) -> word scores [B, W].

    W is the largest word count in the batch; missing words score -inf.
    """
    token_score = input_grad.float().norm(dim=-1)  # [B, T]
    return _scatter_words(token_score, word_index)


def _scatter_words(token_score: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    batch = token_score.shape[0]
    num_words = int(word_index.max().clamp(min=0)) + 1
    scores = token_score.new_full((batch, num_words + 1), float("-inf"))
    slot = torch.where(word_index >= 0, word_index, num_words)  # non-words go to a spare column
    scores = scores.scatter_reduce(1, slot, token_score, reduce="amax", include_self=True)
    scores[:, num_words] = float("-inf")
    return scores[:, :num_words]


def select_words(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Word scores [B, W] (-inf = absent) -> chosen words [B, W] bool: top max(1, round(ratio n))."""
    present = torch.isfinite(scores)
    count = present.sum(-1)  # [B]
    k = torch.clamp(torch.round(count.float() * ratio).long(), min=1)
    k = torch.minimum(k, count)
    order = scores.argsort(dim=-1, descending=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    )
    return (rank < k[:, None]) & present


def positions_from_words(chosen: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    """Chosen words [B, W] and word ids [B, T] -> perturbed token positions [B, T] bool."""
    safe = word_index.clamp(min=0)
    return chosen.gather(1, safe) & (word_index >= 0)


def hotflip_replacements(input_ids, input_grad, embedding_matrix, banned: torch.Tensor) -> torch.Tensor:
    """First-order loss-maximising token for each position: ids [N], grads [N, H] -> ids [N].

    ``banned`` [V] bool excludes special tokens; the original token is excluded too.
    """
    grad = input_grad.float()
    gain = grad @ embedding_matrix.float().T  # [N, V]: (E_v . g)
    gain = gain - (embedding_matrix[input_ids].float() * grad).sum(-1, keepdim=True)
    gain[:, banned] = float("-inf")
    gain.scatter_(1, input_ids[:, None], float("-inf"))
    return gain.argmax(-1)


def random_replacements(input_ids: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
    """Uniform allowed vocabulary tokens differing from the original: ids [N] -> ids [N]."""
    allowed = (~banned).nonzero().squeeze(-1)  # [V']
    if len(allowed) < 2:
        raise ValueError("random replacement needs at least two non-special tokens in the vocabulary")
    draw = allowed[torch.randint(len(allowed), input_ids.shape, device=input_ids.device)]
    clash = draw == input_ids
    while clash.any():
        draw[clash] = allowed[torch.randint(len(allowed), (int(clash.sum()),), device=input_ids.device)]
        clash = draw == input_ids
    return draw


def detection_loss(logits: torch.Tensor, perturbed: torch.Tensor, attention_mask: torch.Tensor) -> ObjectiveOutput:
    """BCE of token logits [B, T] against perturbed positions [B, T], averaged over non-padding tokens.

    Masked sums rather than boolean indexing, so that nothing waits for the device.
    """
    valid = attention_mask.float()
    per_token = F.binary_cross_entropy_with_logits(logits.float(), perturbed.float(), reduction="none")
    loss = (per_token * valid).sum() / valid.sum()
    with torch.no_grad():
        hit = ((logits > 0) == perturbed).float()
        on_perturbed = perturbed.float() * valid
        on_clean = valid - on_perturbed
        diagnostics = {  # 0 where a batch has no such token
            "ptd_acc_perturbed": (hit * on_perturbed).sum() / on_perturbed.sum().clamp(min=1),
            "ptd_acc_clean": (hit * on_clean).sum() / on_clean.sum().clamp(min=1),
            "ptd_perturbed_fraction": on_perturbed.sum() / valid.sum(),
        }
    return ObjectiveOutput(loss, diagnostics)


class PerturbedTokenDetection(nn.Module):
    """Choose salient words, perturb them, and score the detector on the perturbed batch.

    Args:
        ratio: fraction of words perturbed per sentence (at least one).
        sentence_fraction: share of the batch's sentences perturbed and detected (at least one).
        selection: ``saliency`` (gradient norm) or ``random`` (the random-positions control).
        replacement: ``hotflip``, ``random``, ``mask`` or ``embedding`` (only :meth:`positions` is used).
        special_ids: token ids never used as replacements (CLS, SEP, PAD, UNK, MASK ...).
        mask_token_id: id for the ``mask`` replacement.
        vocab_size: rows of the embedding matrix.
    """

    def __init__(
        self,
        *,
        ratio: float = 0.15,
        selection: str = "saliency",
        replacement: str = "hotflip",
        special_ids: list[int],
        mask_token_id: int | None,
        vocab_size: int,
        sentence_fraction: float = 1.0,
    ):
        super().__init__()
        self.sentence_fraction = sentence_fraction
        if replacement == "mask" and mask_token_id is None:
            raise ValueError("replacement 'mask' needs a tokenizer with a mask token")
        self.ratio, self.selection, self.replacement = ratio, selection, replacement
        self.mask_token_id = mask_token_id
        banned = torch.zeros(vocab_size, dtype=torch.bool)
        banned[[i for i in special_ids if i < vocab_size]] = True
        self.banned: torch.Tensor
        self.register_buffer("banned", banned, persistent=False)

    @torch.no_grad()
    def positions(self, word_index: torch.Tensor, input_grad: torch.Tensor) -> torch.Tensor:
        """Word ids [B, T], grads [B, T, H] -> the positions [B, T] bool to perturb (by ``selection``)."""
        if self.selection == "saliency":
            scores = word_saliency(input_grad, word_index)
        else:
            noise = torch.rand(word_index.shape, device=word_index.device)
            scores = _scatter_words(noise, word_index)
        return positions_from_words(select_words(scores, self.ratio), word_index)

    @torch.no_grad()
    def perturb(self, input_ids, word_index, input_grad, embedding_matrix) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids [B, T], word ids [B, T], grads [B, T, H] -> (perturbed ids [B, T], positions [B, T]).

        A token replacement (``hotflip``, ``random``, ``mask``); ``embedding`` shifts are made by the
        trainer (:mod:`carl.objectives.embedding_perturbation`) at :meth:`positions`."""
        positions = self.positions(word_index, input_grad)
        where = positions.nonzero(as_tuple=True)  # one device read of N, not one per indexing
        original = input_ids[where]  # [N]
        if self.replacement == "hotflip":
            new = hotflip_replacements(original, input_grad[where], embedding_matrix, self.banned)
        elif self.replacement == "random":
            new = random_replacements(original, self.banned)
        else:
            assert self.mask_token_id is not None  # checked at construction
            new = torch.full_like(original, self.mask_token_id)
        perturbed = input_ids.clone()
        perturbed[where] = new
        return perturbed, positions

    def forward(self, token_logits, positions, attention_mask) -> ObjectiveOutput:
        return detection_loss(token_logits, positions, attention_mask)


def schedule_factor(schedule: str, step: int, total_steps: int, fraction: float) -> float:
    """The share of ``ptd_weight`` at optimizer step ``step`` (0-based) of ``total_steps``.

    ``constant``: 1. ``warmup``: min(1, step / (f T)), rising over the first f of training.
    ``decay``: min(1, (T - step) / (f T)), falling over the last f of training (f = ``fraction``).
    """
    span = fraction * total_steps
    if schedule == "warmup":
        return min(1.0, step / span)
    if schedule == "decay":
        return min(1.0, (total_steps - step) / span)
    return 1.0
