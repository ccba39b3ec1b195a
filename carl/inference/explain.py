"""Per-word affect saliency: which words push a text's predicted valence and arousal.

For the predicted valence v (on the model's declared scale) and each input token t with word
embedding e_t, the token's attribution is gradient x input, ``a_t = sum_h (dv/de_th) e_th``;
a word's attribution is the sum over its sub-word tokens (``word_ids()`` of the fast tokenizer).
The same for arousal. Positive: the word raises the prediction; the magnitude is in scale units
(a first-order estimate). Special tokens ([CLS], [SEP]) are left out.

For one emotion class c of a classifier (``explain --target c``) the output is the log-odds of
the class's calibrated probability p_c, log(p_c / (1 - p_c)):

    single-label:  z_c / T - logsumexp_{k != c} z_k / T      (p = softmax(z / T))
    multi-label:   z_c / T                                    (p_c = sigmoid(z_c / T))

Log-odds, not p_c itself: p_c's gradient vanishes where p_c saturates near 0 or 1, which is where
a confident classifier puts most texts, while the log-odds keep the words' contributions; they
rise and fall with p_c. The calibrated probability is reported beside the scores.

>>> enc = AffectEncoder.load("runs/x")            # doctest: +SKIP
>>> e = enc.explain("I was furious this morning")  # doctest: +SKIP
>>> max(zip(map(abs, e.arousal_scores), e.words))[1]  # doctest: +SKIP
'furious'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from carl.data.batching import length_sorted_batches
from carl.data.scales import Scale
from carl.inference.encoder import as_texts

if TYPE_CHECKING:
    from carl.inference.encoder import AffectEncoder


@dataclass
class Explanation:
    """Word-level attributions for one text (lists are parallel, one entry per word)."""

    text: str
    words: list[str]
    spans: list[tuple[int, int]]  # character [start, end) of each word in ``text``
    valence_scores: list[float]  # gradient x input of the predicted valence, per word
    arousal_scores: list[float]  # gradient x input of the predicted arousal, per word
    valence: float  # predicted valence on ``scale``
    arousal: float  # predicted arousal on ``scale``
    scale: tuple[float, float]
    truncated: bool = False  # words past the model's max_length are not explained

    def to_dict(self) -> dict:
        """JSON-ready dict (floats rounded to 6 digits)."""
        d = asdict(self)
        for key in ("valence_scores", "arousal_scores"):
            d[key] = [round(x, 6) for x in d[key]]
        d["spans"] = [list(s) for s in self.spans]
        d["scale"] = list(self.scale)
        d["valence"], d["arousal"] = round(self.valence, 6), round(self.arousal, 6)
        return d

    def top_words(self, dimension: str = "valence", k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` words with the largest |attribution| for ``dimension`` (valence or arousal)."""
        scores = {"valence": self.valence_scores, "arousal": self.arousal_scores}[dimension]
        order = sorted(range(len(scores)), key=lambda i: -abs(scores[i]))[:k]
        return [(self.words[i], scores[i]) for i in order]


def _word_table(word_ids: list[int | None], offsets: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Character spans of the words in order of appearance, and token -> word slot (-1 = none)."""
    position: dict[int, int] = {}
    spans: list[list[int]] = []
    slot = np.full(len(word_ids), -1, dtype=np.int64)
    for t, w in enumerate(word_ids):
        if w is None:
            continue
        start, end = offsets[t]
        if w not in position:
            position[w] = len(spans)
            spans.append([start, end])
        p = position[w]
        spans[p][0], spans[p][1] = min(spans[p][0], start), max(spans[p][1], end)
        slot[t] = p
    return [(s, e) for s, e in spans], slot


@dataclass
class ClassExplanation:
    """Word-level attributions of one class's calibrated log-odds for one text."""

    text: str
    words: list[str]
    spans: list[tuple[int, int]]  # character [start, end) of each word in ``text``
    target: str  # the explained class
    scores: list[float]  # gradient x input of the class's calibrated log-odds, per word
    probability: float  # the class's calibrated probability
    truncated: bool = False

    def to_dict(self) -> dict:
        """JSON-ready dict (floats rounded to 6 digits)."""
        d = asdict(self)
        d["scores"] = [round(x, 6) for x in self.scores]
        d["spans"] = [list(s) for s in self.spans]
        d["probability"] = round(self.probability, 6)
        return d


def _word_attributions(
    encoder: AffectEncoder,
    texts: list[str],
    heads: tuple[str, ...],
    outputs: Callable[[object], torch.Tensor],
    batch_size: int,
) -> Iterator[tuple[int, list[tuple[int, int]], np.ndarray, np.ndarray, bool]]:
    """Per text, in length-sorted batches: ``(index, word spans, word scores [W, K], outputs [K],
    truncated)`` for the K differentiable ``outputs(CarlOutput)`` [B, K] of a pass computing ``heads``.

    One query pass per batch through ``CarlModel.forward`` (word embeddings tracked), then
    :meth:`CarlModel.input_attribution`; sub-word scores are summed per word.
    """
    tok = encoder.tokenize(texts, offsets=True)
    model = encoder.model
    for rows, ids, mask in length_sorted_batches(tok["input_ids"], batch_size, encoder.pad_token_id):
        with torch.inference_mode(False), torch.enable_grad():
            out = model(ids.to(encoder.device), mask.to(encoder.device), heads=heads, track_input_grad=True)
            values = outputs(out)  # [B, K]
            attribution = model.input_attribution(values).cpu().numpy()  # [B, T, K]
        predicted = values.detach().float().cpu().numpy()  # [B, K]
        for r, i in enumerate(rows):
            n = len(tok["input_ids"][i])
            spans, slot = _word_table(tok.word_ids(i), tok["offset_mapping"][i])
            scores = np.zeros((len(spans), values.shape[1]))
            keep = slot >= 0
            np.add.at(scores, slot[keep], attribution[r, :n][keep])
            truncated = n >= encoder.max_length and bool(spans) and spans[-1][1] < len(texts[i].rstrip())
            yield int(i), spans, scores, predicted[r], truncated


def explain_texts(encoder: AffectEncoder, texts: Sequence[str], *, batch_size: int = 16) -> list[Explanation]:
    """:class:`Explanation` for each text, batched by length; raises without a VA head."""
    encoder.require_heads("explain")
    texts = as_texts(texts)
    model, scale = encoder.model, Scale(*encoder.scale)
    results: list[Explanation | None] = [None] * len(texts)

    def on_scale(out) -> torch.Tensor:  # [B, 2] VA on the model's scale
        return scale.denormalise(model.destandardise(out.va.float()))

    for i, spans, scores, predicted, truncated in _word_attributions(encoder, texts, ("va",), on_scale, batch_size):
        results[i] = Explanation(
            text=texts[i],
            words=[texts[i][s:e] for s, e in spans],
            spans=spans,
            valence_scores=scores[:, 0].tolist(),
            arousal_scores=scores[:, 1].tolist(),
            valence=float(predicted[0]),
            arousal=float(predicted[1]),
            scale=(scale.low, scale.high),
            truncated=truncated,
        )
    return results  # type: ignore[return-value]


def check_target(encoder: AffectEncoder, target: str) -> None:
    """Refuse a model without a classifier, or a class it does not know (one line naming its classes)."""
    encoder.require_classifier("explain a class")
    if target not in encoder.classifier.classes:
        raise ValueError(
            f"--target {target!r} is not one of the model's classes: {', '.join(encoder.classifier.classes)}"
        )


def explain_class(
    encoder: AffectEncoder, texts: Sequence[str], target: str, *, batch_size: int = 16
) -> list[ClassExplanation]:
    """:class:`ClassExplanation` of class ``target``'s calibrated log-odds for each text (and its
    calibrated probability); raises without a classifier or for a class it does not know."""
    check_target(encoder, target)
    classifier = encoder.classifier
    c, t = classifier.classes.index(target), classifier.temperature
    texts = as_texts(texts)
    results: list[ClassExplanation | None] = [None] * len(texts)

    def log_odds(out) -> torch.Tensor:  # [B, 1] log(p_c / (1 - p_c)) of the calibrated probability
        z = out.class_logits.float() / t  # [B, C]
        if classifier.multi_label:
            return z[:, c : c + 1]
        others = torch.cat([z[:, :c], z[:, c + 1 :]], dim=1)
        return z[:, c : c + 1] - others.logsumexp(dim=1, keepdim=True)

    for i, spans, scores, predicted, truncated in _word_attributions(
        encoder, texts, ("class_logits",), log_odds, batch_size
    ):
        results[i] = ClassExplanation(
            text=texts[i],
            words=[texts[i][s:e] for s, e in spans],
            spans=spans,
            target=target,
            scores=scores[:, 0].tolist(),
            probability=float(np.exp(-np.logaddexp(0.0, -predicted[0]))),  # sigmoid
            truncated=truncated,
        )
    return results  # type: ignore[return-value]
