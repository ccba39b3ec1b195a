"""Task data loaders, the task runner on the tiny encoder, the frozen-encoder check, lexicons."""

from __future__ import annotations

import numpy as np
import pytest

from carl.data import DataError
from carl.data.classification import (
    EKMAN_CLASSES,
    load_goemotions_ekman,
    load_mr,
    load_sst2,
    load_sst5,
    load_user_classification,
    read_labelled_lines,
)
from carl.data.similarity import SentencePairs, load_sick
from carl.evaluation.features import FeatureTable
from carl.evaluation.probe import EncoderNotFrozen, parameter_fingerprint
from carl.evaluation.tasks import (
    TaskSettings,
    evaluate_encoder,
    load_task_data,
    missing_user_corpora,
    relatedness_metrics,
)
from carl.evaluation.va_probe import evaluate_va
from carl.inference import AffectEncoder

TINY_TASKS = dict(
    limit=40, mr_limit=60, cv_folds=3, goemotions_train_limit=40, goemotions_dev_limit=40, geometry_limit=40
)

# ----------------------------------------------------------------------------- data


def test_official_split_sizes():
    assert [len(load_sst2(s)) for s in ("train", "dev", "test")] == [6920, 872, 1821]
    assert [len(load_sst5(s)) for s in ("train", "dev", "test")] == [8544, 1101, 2210]
    assert load_sst2("test").counts() == {"negative": 912, "positive": 909}
    with pytest.raises(ValueError, match="unknown split"):
        load_sst2("validation")


def test_mr_reads_windows_1252():
    mr = load_mr()
    assert len(mr) == 10662 and mr.counts() == {"negative": 5331, "positive": 5331}
    assert any(t.startswith("\u2026the maudlin way") for t in mr.texts)  # byte 0x85 is an ellipsis
    assert not any("\x85" in t for t in mr.texts)


def test_goemotions_ekman_filtering_counts():
    test = load_goemotions_ekman("test")
    assert len(test) == 4968 and test.classes == EKMAN_CLASSES
    assert test.counts() == {
        "anger": 572,
        "disgust": 76,
        "fear": 80,
        "joy": 1863,
        "sadness": 283,
        "surprise": 488,
        "neutral": 1606,
    }
    assert len(load_goemotions_ekman("test", filtering="original")) == 4590
    with pytest.raises(ValueError):
        load_goemotions_ekman("test", filtering="loose")


def test_malformed_lines_and_user_labels(tmp_path):
    bad = tmp_path / "sst.txt"
    bad.write_text("1 good film\nseven bad\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        read_labelled_lines(bad, 2)
    csv = tmp_path / "iemocap.csv"
    csv.write_text("text,label\nhello there,neu\nI am so angry,ang\nwonderful,hap\nfine,neu\n", encoding="utf-8")
    data = load_user_classification(csv)
    assert data.classes == ("ang", "hap", "neu") and data.labels.tolist() == [2, 0, 1, 2]
    with pytest.raises(DataError, match="not one of"):
        load_user_classification(csv, classes=("ang", "neu"))


def test_sick_test_split_and_its_errors(tmp_path):
    sick = load_sick()
    assert len(sick) == 4927 and (sick.scores.min(), sick.scores.max()) == (1.0, 5.0)
    assert sick.first[0] == "There is no boy playing outdoors and there is no man smiling"
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    bad = tmp_path / "sick.txt"
    bad.write_text(header + "1\ta dog\ta cat\t3.5\tNEUTRAL\n2\ta man\ta woman\tmany\tNEUTRAL\n", encoding="utf-8")
    with pytest.raises(DataError, match="sick.txt, line 3, field 'relatedness_score'"):
        load_sick(bad)
    bad.write_text(header + "1\ta dog\t \t3.5\tNEUTRAL\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2, field 'sentence_B': empty sentence"):
        load_sick(bad)
    bad.write_text("id\tsentence_A\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column"):
        load_sick(bad)


def test_relatedness_is_spearman_x100_of_the_cosines():
    scores = np.array([1.0, 4.5, 2.0, 5.0, 3.2, 1.7])
    pairs = SentencePairs([f"a{i}" for i in range(6)], [f"b{i}" for i in range(6)], scores, "synthetic")
    angle = (5 - scores) / 4 * np.pi / 2  # related pairs point the same way: cosine rises with the score
    first = np.tile([[2.0, 0.0]], (6, 1))
    second = np.stack([np.cos(angle), np.sin(angle)], 1) * 3
    table = FeatureTable(pairs.texts, np.concatenate([first, second]))
    metrics = relatedness_metrics(table, pairs)
    assert metrics["spearman"] == pytest.approx(100.0)
    reversed_angle = np.pi / 2 - angle  # unrelated pairs point the same way
    second = np.stack([np.cos(reversed_angle), np.sin(reversed_angle)], 1)
    reversed_table = FeatureTable(pairs.texts, np.concatenate([first, second]))
    assert relatedness_metrics(reversed_table, pairs)["spearman"] == pytest.approx(-100.0)


def test_missing_user_corpora_say_how_to_obtain(tmp_path):
    with pytest.raises(DataError, match="sail.usc.edu"):
        load_task_data(TaskSettings(tasks=(), user_corpora={"iemocap": str(tmp_path / "absent.csv")}))
    missing = missing_user_corpora(TaskSettings())
    assert len(missing) == 3 and all("--corpus" in how for how in missing.values())


def test_user_corpus_runs_through_the_same_tasks(tmp_path, tiny_encoder, synthetic_csv):
    path = tmp_path / "emotales.csv"
    rows = ["text,valence,arousal,label"]
    for text, (v, a) in zip(synthetic_csv.heldout_texts[:60], synthetic_csv.heldout_labels[:60]):
        rows.append(f"{text},{1 + 8 * v:.3f},{1 + 8 * a:.3f},{'pos' if v > 0.5 else 'neg'}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    settings = TaskSettings(tasks=(), user_corpora={"emotales": str(path)}, cv_folds=3)
    data = load_task_data(settings)
    assert set(data) == {"emotales", "emotales-categories"}
    results = evaluate_encoder(AffectEncoder.load(tiny_encoder), settings, data=data)
    assert results["tasks"]["emotales"]["protocol"] == "3-fold CV"
    assert "valence_pearson" in results["tasks"]["emotales"]["metrics"]
    assert results["tasks"]["emotales-categories"]["classes"] == ["neg", "pos"]


# ----------------------------------------------------------------------------- running tasks


@pytest.fixture(scope="module")
def tiny_results(tiny_encoder):
    encoder = AffectEncoder.load(tiny_encoder)
    before = parameter_fingerprint(encoder.model)
    results = evaluate_encoder(encoder, TaskSettings(**TINY_TASKS))
    assert parameter_fingerprint(encoder.model) == before
    return results


def test_every_task_reports_its_metrics(tiny_results):
    tasks = tiny_results["tasks"]
    assert set(tasks) == {"emobank", "sst2", "mr", "sst5", "goemotions", "sickr"}
    sickr = tasks["sickr"]
    assert sickr["n"] == {"test": 40} and sickr["protocol"] == "cosine, no training"
    assert all(-100 <= sickr["metrics"][k] <= 100 for k in ("spearman", "pearson"))
    assert {"valence_pearson", "valence_spearman", "valence_mse", "arousal_pearson"} <= set(tasks["emobank"]["metrics"])
    assert len(tasks["emobank"]["test_predictions"]) == 40
    for name in ("sst2", "mr", "sst5", "goemotions"):
        metrics = tasks[name]["metrics"]
        assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
        assert len(metrics["per_class_f1"]) == len(tasks[name]["classes"])
    assert tasks["mr"]["protocol"] == "3-fold CV" and len(tasks["mr"]["metrics"]["fold_accuracy"]) == 3
    assert tasks["goemotions"]["select_by"] == "macro_f1"
    geometry = tiny_results["geometry"]
    assert set(geometry) == {"emobank_test", "sst2_test", "goemotions_test"}
    assert "alignment_va" in geometry["emobank_test"] and "alignment_label" in geometry["sst2_test"]
    assert np.asarray(tiny_results["emobank_test_2d"]).shape == (40, 2)
    # shared sentences are embedded once (SST-2 is a subset of SST-5 only in the full sets)
    texts = sum(sum(t["n"].values()) for t in tasks.values()) + tasks["sickr"]["n"]["test"]  # 2 per SICK pair
    assert tiny_results["texts_embedded"] <= texts


def mutating_encoder(path: str) -> AffectEncoder:
    """A broken probe: each encode call nudges a weight (what the frozen-encoder check must catch)."""
    import torch

    encoder = AffectEncoder.load(path)
    encode = encoder.encode

    def encode_and_mutate(texts, **kwargs):
        with torch.no_grad():
            next(encoder.model.parameters()).add_(1e-3)
        return encode(texts, **kwargs)

    encoder.encode = encode_and_mutate
    return encoder


def test_a_probe_that_changes_the_encoder_is_detected(tiny_encoder, synthetic_csv):
    plain, broken = AffectEncoder.load(tiny_encoder), mutating_encoder(tiny_encoder)
    with pytest.raises(EncoderNotFrozen):
        evaluate_encoder(broken, TaskSettings(tasks=("sst2",), limit=20))
    from carl.data.readers import load_table

    data = load_table(synthetic_csv.heldout_path, scale="0-1")
    with pytest.raises(EncoderNotFrozen):
        evaluate_va(broken, data.subset(range(100)), data.subset(range(100, 150)), data.subset(range(150, 200)))
    result = evaluate_va(plain, data.subset(range(100)), data.subset(range(100, 150)), data.subset(range(150, 200)))
    assert set(result.alphas) == {"valence", "arousal"}


# ----------------------------------------------------------------------------- lexicons


def test_lexicon_baselines_offline():
    pytest.importorskip("vaderSentiment")
    pytest.importorskip("textblob")
    from carl.evaluation.lexicon import evaluate_lexicon, lexicon_scorer

    for name in ("vader", "textblob"):
        score = lexicon_scorer(name)
        assert score("What a lovely, wonderful day!") > 0 > score("This is terrible and awful.")
    settings = TaskSettings(tasks=("emobank", "sst2"), limit=60)
    results = evaluate_lexicon("vader", load_task_data(settings), settings)
    emobank = results["tasks"]["emobank"]["metrics"]
    assert {"valence_pearson", "valence_raw_pearson", "valence_raw_spearman"} <= set(emobank)
    assert not any(k.startswith("arousal") for k in emobank)
    assert emobank["valence_pearson"] == pytest.approx(abs(emobank["valence_raw_pearson"]), abs=1e-6)
    assert results["tasks"]["sst2"]["metrics"]["accuracy"] > 0.5
