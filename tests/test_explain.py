"""``AffectEncoder.explain``: per-word valence/arousal attributions on a model with a known answer.

The tiny encoder trained on the synthetic corpus (conftest ``affect_model``) predicts VA from the
one or two affect words of a sentence, so those words must carry the attribution. Measured on the
300 held-out sentences: the top word is an affect word in ~0.91 of them (chance ~0.20), and every
affect word beats every filler word in ~0.88.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from carl.inference import AffectEncoder
from carl.inference.explain import Explanation, _word_table
from carl.testing import affect_word_positions

TOP1_MIN = 0.75  # measured ~0.91
ALL_AFFECT_ABOVE_FILLER_MIN = 0.70  # measured ~0.88


@pytest.fixture(scope="module")
def encoder(affect_model) -> AffectEncoder:
    return AffectEncoder.load(str(affect_model))


@pytest.fixture(scope="module")
def explanations(encoder, synthetic_csv) -> list[Explanation]:
    return encoder.explain_batch(synthetic_csv.heldout_texts)


@pytest.mark.parametrize("dimension", ["valence", "arousal"])
def test_affect_words_get_the_largest_attributions(explanations, dimension):
    top1, all_above = [], []
    for e in explanations:
        scores = np.abs(getattr(e, f"{dimension}_scores"))
        affect = affect_word_positions(e.text)
        filler = [i for i in range(len(scores)) if i not in affect]
        top1.append(int(scores.argmax()) in affect)
        all_above.append(scores[affect].min() > scores[filler].max())
    chance = np.mean([len(affect_word_positions(e.text)) / len(e.words) for e in explanations])
    assert np.mean(top1) >= TOP1_MIN, f"{dimension}: top word is affect in {np.mean(top1):.2f} (chance {chance:.2f})"
    assert np.mean(all_above) >= ALL_AFFECT_ABOVE_FILLER_MIN, f"{dimension}: {np.mean(all_above):.2f}"


def test_attribution_signs_follow_the_affect_words(encoder):
    """'serene' raises valence and lowers arousal; 'furious' lowers valence and raises arousal."""
    calm = encoder.explain("the morning by the river was serene")
    angry = encoder.explain("the morning by the river was furious")
    assert calm.words[-1] == "serene" and angry.words[-1] == "furious"
    assert calm.valence > angry.valence and calm.arousal < angry.arousal
    assert calm.arousal_scores[-1] < 0 < angry.arousal_scores[-1]
    assert calm.valence_scores[-1] > angry.valence_scores[-1]


def test_explain_matches_predict_and_batching(encoder, synthetic_csv):
    texts = synthetic_csv.heldout_texts[:20]
    valence, arousal = encoder.predict(texts)
    batched = encoder.explain_batch(texts, batch_size=7)
    for text, e, v, a in zip(texts, batched, valence, arousal):
        assert e.text == text and e.words == text.split()
        assert [text[s:t] for s, t in e.spans] == e.words
        assert e.valence == pytest.approx(v, abs=1e-5) and e.arousal == pytest.approx(a, abs=1e-5)
        single = encoder.explain(text)
        np.testing.assert_allclose(single.valence_scores, e.valence_scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(single.arousal_scores, e.arousal_scores, rtol=1e-4, atol=1e-6)
    json.dumps([e.to_dict() for e in batched])  # JSON-ready


def reference_attributions(encoder: AffectEncoder, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Gradient x input per token [T, 2] and the prediction [2], written out without CarlModel.forward:
    a leaf copy of the word embeddings through the backbone, pooling, VA head, label statistics, scale."""
    from carl.model.pooling import pool

    model = encoder.model
    ids = torch.tensor([encoder.tokenizer(text, truncation=True, max_length=encoder.max_length)["input_ids"]])
    mask = torch.ones_like(ids)
    low, high = encoder.scale
    embeds = model.backbone.get_input_embeddings()(ids).detach().requires_grad_(True)
    hidden = model.backbone(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    z = model.regression(pool(hidden, mask, model.pooling))
    values = low + (z * model.label_std + model.label_mean) * (high - low)  # [1, 2]
    grads = [torch.autograd.grad(values[0, k], embeds, retain_graph=True)[0] for k in range(2)]
    return torch.stack([(g * embeds).sum(-1)[0] for g in grads], -1).detach().numpy(), values[0].detach().numpy()


def test_attributions_equal_a_reference_gradient_x_input(encoder, synthetic_csv):
    """Batched explain (padding, length sorting, ATTENTION_KERNELS) gives the reference numbers."""
    texts = synthetic_csv.heldout_texts[:12] + ["serene", "a furious , tired week"]
    for text, e in zip(texts, encoder.explain_batch(texts, batch_size=5)):
        tokens, values = reference_attributions(encoder, text)
        np.testing.assert_allclose([e.valence, e.arousal], values, rtol=1e-5, atol=1e-6)
        per_word = tokens[1:-1]  # the synthetic vocabulary is whole words: one token per word, then [SEP]
        np.testing.assert_allclose(e.valence_scores, per_word[:, 0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(e.arousal_scores, per_word[:, 1], rtol=1e-4, atol=1e-6)
        assert np.abs(per_word).max() > 1e-3  # the attributions are not trivially zero


def test_explain_leaves_no_gradients_or_graph_behind(encoder):
    encoder.explain_batch(["a serene day", "furious"])
    assert all(p.grad is None for p in encoder.model.parameters())
    with pytest.raises(RuntimeError, match="no tracked input"):
        encoder.model.input_attribution(torch.zeros(1, 2))


def test_explain_edge_cases(encoder):
    empty = encoder.explain("")
    assert empty.words == [] and empty.valence_scores == [] and np.isfinite(empty.valence)
    long_text = " ".join(["serene", "river"] * 200)  # past the tiny model's 128 tokens
    e = encoder.explain(long_text)
    assert e.truncated and len(e.words) == encoder.max_length - 2
    assert not encoder.explain("a serene day").truncated


def test_explain_without_heads_raises(tiny_encoder):
    with pytest.raises(RuntimeError, match="no VA regression head.*explain"):
        AffectEncoder.load(tiny_encoder).explain("a serene day")


def test_subword_attributions_are_summed_per_word():
    """Tokens [CLS] un ##believ ##able day [SEP]: word 0 spans three tokens, specials are dropped."""
    word_ids = [None, 0, 0, 0, 1, None]
    offsets = [(0, 0), (0, 2), (2, 7), (7, 11), (12, 15), (0, 0)]
    spans, slot = _word_table(word_ids, offsets)
    assert spans == [(0, 11), (12, 15)]
    assert slot.tolist() == [-1, 0, 0, 0, 1, -1]


@pytest.mark.real_model
def test_minilm_subwords_map_back_to_words():
    """On the real WordPiece tokenizer: split words come back whole, with their text spans."""
    encoder = AffectEncoder.load("minilm-l6")
    encoder.has_heads, encoder.scale = True, (1.0, 5.0)  # an untrained head is enough for the mapping
    text = "Unbelievably, the rollercoaster was exhilarating!"
    e = encoder.explain(text)
    assert e.words == ["Unbelievably", ",", "the", "rollercoaster", "was", "exhilarating", "!"]
    assert all(text[s:t] == w for (s, t), w in zip(e.spans, e.words))
    assert len(encoder.tokenizer.tokenize("exhilarating")) > 1
