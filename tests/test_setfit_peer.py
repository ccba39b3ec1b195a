"""The SetFit peer (carl/evaluation/setfit_peer.py): it learns separable data, is seeded, saves
without pickle and scores the same after loading, and refuses bad input before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from carl.evaluation import setfit_peer
from carl.evaluation.setfit_peer import (
    SetFitResult,
    _head_coefficients,
    _load_body,
    _sampled_combinations,
    fit_setfit,
    head_probabilities,
    load_setfit,
)
from carl.evaluation.thresholds import macro_f1_at_thresholds
from carl.testing import QUADRANT_CLASSES, synthetic_emotion_corpus

CLASSES = list(QUADRANT_CLASSES)
STEPS = 60


def emotion_data(n: int, seed: int, multi_label: bool = False) -> tuple[list[str], np.ndarray]:
    """Short sentences (2-4 words, one affect word per class) and their class indices or multi-hot rows."""
    texts, names = synthetic_emotion_corpus(n, seed, multi_label=multi_label, min_words=2, max_words=4)
    if multi_label:
        return texts, np.array([[c in row for c in CLASSES] for row in names], dtype=np.int64)
    return texts, np.array([CLASSES.index(row[0]) for row in names])


def fit(encoder, out_dir, *, seed=0, multi_label=False, max_steps=STEPS, show_progress=False):
    train, dev = emotion_data(80, 0, multi_label), emotion_data(40, 1, multi_label)
    return fit_setfit(
        encoder,
        *train,
        *dev,
        classes=CLASSES,
        multi_label=multi_label,
        max_steps=max_steps,
        seed=seed,
        out_dir=out_dir,
        show_progress=show_progress,
    )


@pytest.fixture(scope="module")
def single_dir(tiny_encoder, tmp_path_factory) -> Path:
    """The folder of one single-label fit (seed 0), shared by the tests that read it."""
    return tmp_path_factory.mktemp("setfit-single")


@pytest.fixture(scope="module")
def single(tiny_encoder, single_dir) -> SetFitResult:
    """The single-label fit as trained (in memory), saved in ``single_dir``."""
    return fit(tiny_encoder, single_dir)


def test_single_label_learns_the_affect_word_classes(single):
    texts, labels = emotion_data(200, 2)
    probs = single.predict_proba(texts)
    assert probs.shape == (200, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert single.steps == STEPS
    assert single.train_seconds > 0
    assert (probs.argmax(1) == labels).mean() > 0.5  # chance: 0.25
    assert set(single.dev_metrics) == {"accuracy", "macro_f1", "per_class_f1"}
    assert single.recipe["loss"] == "CosineSimilarityLoss" and single.recipe["max_steps"] == STEPS
    assert single.recipe["pair_order"].startswith("setfit")


def test_the_body_is_fine_tuned(single, tiny_encoder):
    texts, _ = emotion_data(10, 3)
    before = _load_body(tiny_encoder).encode(texts)
    after = single.body.encode(texts)
    assert np.abs(after - before).max() > 1e-4


def test_save_load_round_trip_is_exact_and_pickle_free(single, single_dir):
    loaded = load_setfit(single_dir)
    texts, _ = emotion_data(50, 4)
    np.testing.assert_array_equal(loaded.predict_proba(texts), single.predict_proba(texts))
    assert loaded.dev_metrics == single.dev_metrics and loaded.steps == single.steps
    suffixes = {p.suffix for p in single_dir.rglob("*") if p.is_file()}
    assert not suffixes & {".pkl", ".bin", ".joblib", ".pt", ".pth"}


def test_a_finished_fit_is_reused_and_other_settings_are_refused(single, tiny_encoder, single_dir):
    stamp = (single_dir / "setfit.json").stat().st_mtime_ns
    fit(tiny_encoder, single_dir)
    assert (single_dir / "setfit.json").stat().st_mtime_ns == stamp  # read back, not retrained
    with pytest.raises(ValueError, match="other seed"):
        fit(tiny_encoder, single_dir, seed=1)


def test_seeded_runs_repeat_and_seeds_differ(single, tiny_encoder, tmp_path):
    texts, _ = emotion_data(50, 4)
    same = fit(tiny_encoder, tmp_path / "same", seed=0)
    other = fit(tiny_encoder, tmp_path / "other", seed=1)
    np.testing.assert_array_equal(same.predict_proba(texts), single.predict_proba(texts))
    assert np.abs(other.predict_proba(texts) - single.predict_proba(texts)).max() > 1e-6


@pytest.mark.parametrize("replacement", [True, False])
def test_sampled_pairs_are_uniform_over_setfit_pairs(replacement):
    items = list("abcd")
    pairs = list(_sampled_combinations(items, replacement))
    expected = {(x, y) for i, x in enumerate(items) for y in items[i + (0 if replacement else 1) :]}
    counts = {pair: pairs.count(pair) for pair in expected}
    assert set(pairs) == expected and len(pairs) > 2000
    mean = len(pairs) / len(expected)
    assert all(abs(c - mean) < 0.15 * mean for c in counts.values()), counts


def test_large_training_sets_draw_pairs_lazily_and_still_learn(tiny_encoder, tmp_path, monkeypatch):
    import setfit.sampler

    listed = setfit.sampler.shuffle_combinations
    monkeypatch.setattr(setfit_peer, "EXACT_PAIR_LIMIT", 100)  # 80 texts: 3240 pairs
    result = fit(tiny_encoder, tmp_path / "lazy")
    assert result.recipe["pair_order"].startswith("carl") and setfit.sampler.shuffle_combinations is listed
    texts, labels = emotion_data(200, 2)
    assert (result.predict(texts) == labels).mean() > 0.5  # chance: 0.25


def test_multi_label_learns_and_tunes_thresholds_on_dev(tiny_encoder, tmp_path):
    result = fit(tiny_encoder, tmp_path / "multi", multi_label=True)
    texts, targets = emotion_data(200, 2, multi_label=True)
    probs = result.predict_proba(texts)
    assert probs.shape == (200, 4) and result.thresholds is not None and result.thresholds.shape == (4,)
    prior = targets.mean(0)
    all_positive = float(np.mean(2 * prior / (1 + prior)))  # macro-F1 of predicting every class
    assert macro_f1_at_thresholds(probs, targets, result.thresholds) > all_positive + 0.1
    assert result.predict(texts).shape == (200, 4)
    np.testing.assert_array_equal(load_setfit(tmp_path / "multi").predict_proba(texts), probs)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_head_probabilities_match_sklearn(n_classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = np.arange(60) % n_classes
    clf = LogisticRegression().fit(x, y)
    np.testing.assert_allclose(
        head_probabilities(x, *_head_coefficients(clf, False), False), clf.predict_proba(x), atol=1e-12
    )
    multi_hot = np.stack([y == 0, y != 1, rng.random(60) < 0.5], axis=1).astype(int)
    ovr = OneVsRestClassifier(LogisticRegression()).fit(x, multi_hot)
    np.testing.assert_allclose(
        head_probabilities(x, *_head_coefficients(ovr, True), True), ovr.predict_proba(x), atol=1e-12
    )


@pytest.mark.parametrize(
    ("multi_label", "labels", "message"),
    [
        (False, [0, 1, 2], "4 texts need labels of shape \\[4\\] class indices, got shape \\(3,\\)"),
        (False, [0, 1, 2, 2], "class 'sadness' \\(index 3\\) has no example"),
        (False, [0, 1, 2, 4], "train example 3: labels must lie in 0..3"),
        (True, [[1, 0, 0, 1], [0, 0, 1, 0]] * 2, "class 'relief' \\(index 1\\) has no example"),
        (True, [[1, 1, 0, 1], [1, 0, 1, 0]] * 2, "class 'joy' \\(index 0\\) is on every example"),
        (True, [[1, 1, 0, 1]] * 3, "shape \\[4, 4\\] multi-hot, got shape \\(3, 4\\)"),
        (False, ["joy", "relief", "anger", "sadness"], "train labels must be whole numbers"),
    ],
)
def test_bad_input_is_refused_before_training(tiny_encoder, tmp_path, multi_label, labels, message):
    texts = ["thrilled", "serene", "furious", "gloomy"]
    with pytest.raises(ValueError, match=message):
        fit_setfit(
            tiny_encoder,
            texts,
            labels,
            texts,
            np.eye(4, dtype=int) if multi_label else [0, 1, 2, 3],
            classes=CLASSES,
            multi_label=multi_label,
            max_steps=1,
            seed=0,
            out_dir=tmp_path,
        )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("show_progress", [False, True])
def test_show_progress(tiny_encoder, tmp_path, capfd, show_progress):
    fit(tiny_encoder, tmp_path / "run", max_steps=2, show_progress=show_progress)
    out, err = capfd.readouterr()
    if show_progress:
        assert "2/2" in err
    else:
        assert out == "" and err == ""


@pytest.mark.real_model
def test_minilm_smoke(tmp_path):
    train, dev = emotion_data(40, 0), emotion_data(40, 1)
    result = fit_setfit(
        "minilm-l6", *train, *dev, classes=CLASSES, multi_label=False, max_steps=20, seed=0, out_dir=tmp_path
    )
    assert result.steps == 20
    assert result.dev_metrics["accuracy"] > 0.5  # chance: 0.25; the affect words are real English
    np.testing.assert_array_equal(load_setfit(tmp_path).predict_proba(dev[0]), result.predict_proba(dev[0]))
