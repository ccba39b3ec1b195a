"""Categorical targets in the data layer: label cells, the label set, multi-task VA, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carl.config import ConfigError, DataConfig
from carl.data import (
    AffectDataset,
    DataError,
    Scale,
    UnknownLabelError,
    emotion_to_va,
    load_table,
)
from carl.data.classification import (
    goemotions_label_names,
    load_goemotions,
    read_goemotions,
)
from carl.data.sources import describe_data, load_training_data


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8", newline="")
    return path


def located(err: DataError, path: Path, line: int | None, field: str | None) -> str:
    assert (err.path, err.line, err.field) == (str(path), line, field)
    message = str(err)
    assert path.name in message and "\n" not in message
    return message


# --------------------------------------------------------------------------- single-label


def test_single_label_targets_sorted_label_set_and_mapped_va(tmp_path):
    path = write(tmp_path, "t.csv", "text,emotion\nyay,joy\ngrr,anger\nhm,neutral\nwow, joy \n")
    data = load_table(path, label_column="emotion")
    assert data.classes == ("anger", "joy", "neutral")
    assert data.targets.dtype == np.int64 and data.targets.tolist() == [1, 0, 2, 1]
    assert not data.multi_label
    np.testing.assert_allclose(data.labels[1], emotion_to_va("anger"), rtol=1e-6)
    assert data.class_counts() == {"anger": 1, "joy": 2, "neutral": 1}
    assert "classes (3, single-label): anger 1, joy 2, neutral 1" in data.summary()


def test_va_only_data_has_no_class_targets(tmp_path):
    path = write(tmp_path, "va.csv", "text,valence,arousal\na,1,5\nb,3,2\n")
    data = load_table(path)
    assert data.targets is None and data.classes == () and data.class_counts() == {}
    assert "classes" not in data.summary()


def test_va_columns_and_label_column_together_take_va_from_the_columns(tmp_path):
    path = write(tmp_path, "both.csv", "text,valence,arousal,emotion\na,1,5,joy\nb,5,1,anger\n")
    data = load_table(path, label_column="emotion", scale="1-5")
    assert str(data.scale) == "1-5"
    np.testing.assert_allclose(data.labels, [[0.0, 1.0], [1.0, 0.0]])  # not the mapped coordinates
    assert data.classes == ("anger", "joy") and data.targets.tolist() == [1, 0]


def test_one_va_column_with_a_label_column_names_the_missing_one(tmp_path):
    path = write(tmp_path, "half.csv", "text,valence,emotion\na,1,joy\n")
    with pytest.raises(DataError) as info:
        load_table(path, label_column="emotion")
    assert "'arousal' not found" in located(info.value, path, 1, "arousal")


def test_dev_file_is_read_against_the_training_label_set(tmp_path):
    train = write(tmp_path, "train.csv", "text,emotion\na,joy\nb,sadness\nc,anger\n")
    dev = write(tmp_path, "dev.csv", "text,emotion\nd,sadness\ne,sadness\n")
    classes = load_table(train, label_column="emotion").classes
    data = load_table(dev, label_column="emotion", classes=classes)
    assert data.classes == ("anger", "joy", "sadness") and data.targets.tolist() == [2, 2]


def test_label_only_in_dev_is_named_with_the_training_labels(tmp_path):
    train = write(tmp_path, "train.csv", "text,emotion\na,joy\nb,sadness\n")
    dev = write(tmp_path, "dev.jsonl", '{"text": "x", "emotion": "joy"}\n{"text": "y", "emotion": "fear"}\n')
    classes = load_table(train, label_column="emotion").classes
    with pytest.raises(DataError) as info:
        load_table(dev, label_column="emotion", classes=classes)
    message = located(info.value, dev, 2, "emotion")
    assert "'fear'" in message and "training data: joy, sadness" in message


def test_user_classification_shares_the_label_reading(tmp_path):
    from carl.data.classification import load_user_classification

    path = write(tmp_path, "u.jsonl", '{"text": "a", "label": 3}\n{"text": "b", "label": ["1"]}\n')
    data = load_user_classification(path)
    assert data.classes == ("1", "3") and data.labels.tolist() == [1, 0]


# --------------------------------------------------------------------------- multi-label


def test_multi_label_delimited_cells_give_multi_hot_targets_and_mean_va(tmp_path):
    path = write(tmp_path, "m.tsv", "text\tlabels\na\tjoy|love\nb\tanger\nc\tjoy | joy\n")
    data = load_table(path, label_column="labels", multi_label=True, label_delimiter="|")
    assert data.multi_label and data.classes == ("anger", "joy", "love")
    np.testing.assert_array_equal(data.targets, [[0, 1, 1], [1, 0, 0], [0, 1, 0]])
    assert data.targets.dtype == np.float32
    expected = (np.array(emotion_to_va("joy")) + np.array(emotion_to_va("love"))) / 2
    np.testing.assert_allclose(data.labels[0], expected, rtol=1e-6)
    assert data.class_counts() == {"anger": 1, "joy": 2, "love": 1}
    sub = data.subset([2, 0])
    np.testing.assert_array_equal(sub.targets, [[0, 1, 0], [0, 1, 1]])
    assert sub.classes == data.classes


def test_multi_label_json_lists_in_jsonl_and_in_csv_cells(tmp_path):
    jsonl = write(tmp_path, "m.jsonl", '{"text": "a", "labels": ["joy", "fear"]}\n{"text": "b", "labels": "fear"}\n')
    csv_path = write(tmp_path, "m.csv", 'text,labels\na,"[""joy"", ""fear""]"\nb,fear\n')
    for path in (jsonl, csv_path):
        data = load_table(path, label_column="labels", multi_label=True)
        assert data.classes == ("fear", "joy")
        np.testing.assert_array_equal(data.targets, [[1, 1], [1, 0]])


def test_delimiter_inside_quotes_keeps_one_label(tmp_path):
    # the cell's text is  "calm, then angry",joy  : the quoted label contains the delimiter
    path = write(tmp_path, "q.csv", 'text,labels\na,"""calm, then angry"",joy"\nb,joy\n')
    data = load_table(
        path, label_column="labels", multi_label=True, label_delimiter=",", label_mapping=str(_mapping(tmp_path))
    )
    assert data.classes == ("calm, then angry", "joy")
    np.testing.assert_array_equal(data.targets, [[1, 1], [0, 1]])
    # whereas the file's own quotes only make the cell: two labels
    plain = write(tmp_path, "p.csv", 'text,labels\na,"joy,calm, then angry"\n')
    data = load_table(
        plain, label_column="labels", multi_label=True, label_delimiter=",", label_mapping=str(_mapping(tmp_path))
    )
    assert data.classes == ("calm", "joy", "then angry")


def _mapping(tmp_path: Path) -> Path:
    path = tmp_path / "map.json"
    path.write_text(
        json.dumps({"calm, then angry": [0.4, 0.6], "joy": [0.9, 0.6], "calm": [0.6, 0.1], "then angry": [0.2, 0.8]}),
        encoding="utf-8",
    )
    return path


def test_unterminated_quote_in_a_label_list(tmp_path):
    path = write(tmp_path, "u.jsonl", '{"text": "a", "labels": "joy|\\"love|anger"}\n')
    with pytest.raises(DataError) as info:
        load_table(path, label_column="labels", multi_label=True, label_delimiter="|")
    assert "malformed quoting" in located(info.value, path, 1, "labels")


def test_goemotions_28_labels_from_the_shared_label_code():
    data = load_goemotions("dev")
    rows = read_goemotions("dev")
    names = goemotions_label_names()
    assert data.classes == tuple(names) and data.targets.shape == (len(rows), 28)
    for i in (0, 1, len(rows) - 1):
        assert {names[c] for c in np.flatnonzero(data.targets[i])} == set(rows[i][1])
        expected = np.mean([emotion_to_va(label) for label in rows[i][1]], axis=0)
        np.testing.assert_allclose(data.labels[i], expected, rtol=1e-6)
    assert (data.targets.sum(1) >= 1).all() and (data.targets.sum(1) > 1).any()
    with pytest.raises(ValueError, match="unknown split"):
        load_goemotions("validation")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "cell, reason",
    [
        ('""', "label is empty"),
        ('"  "', "label is empty"),
        ('"joy||love"', "an empty label"),
        ('"[]"', "list of labels is empty"),
        ('"[""joy"", 3]"', "only text"),
        ('"[joy"', "not valid JSON"),
    ],
)
def test_bad_label_cells_are_located(tmp_path, cell, reason):
    path = write(tmp_path, "bad.csv", f"text,labels\nfine,joy\nx,{cell}\n")
    with pytest.raises(DataError) as info:
        load_table(path, label_column="labels", multi_label=True, label_delimiter="|")
    assert reason in located(info.value, path, 3, "labels")


def test_missing_label_column_and_key(tmp_path):
    csv_path = write(tmp_path, "c.csv", "text,emotoin\na,joy\n")
    with pytest.raises(DataError) as info:
        load_table(csv_path, label_column="emotion")
    assert "did you mean 'emotoin'" in located(info.value, csv_path, 1, "emotion")
    jsonl = write(tmp_path, "c.jsonl", '{"text": "a", "emotion": "joy"}\n{"text": "b"}\n')
    with pytest.raises(DataError) as info:
        load_table(jsonl, label_column="emotion")
    located(info.value, jsonl, 2, "emotion")
    null = write(tmp_path, "n.jsonl", '{"text": "a", "emotion": null}\n')
    with pytest.raises(DataError, match="expected a label"):
        load_table(null, label_column="emotion")


def test_several_labels_in_a_single_label_column(tmp_path):
    path = write(tmp_path, "s.jsonl", '{"text": "a", "emotion": ["joy", "love"]}\n')
    with pytest.raises(DataError) as info:
        load_table(path, label_column="emotion")
    assert "data.multi_label = true" in located(info.value, path, 1, "emotion")


def test_label_missing_from_the_va_mapping_is_still_an_unknown_label(tmp_path):
    path = write(tmp_path, "u.csv", "text,emotion\na,joyy\n")
    with pytest.raises(UnknownLabelError) as info:
        load_table(path, label_column="emotion")
    assert "did you mean 'joy'" in located(info.value, path, 2, "emotion")


def test_dataset_checks_targets():
    texts, va = ["a", "b"], np.zeros((2, 2))
    with pytest.raises(ValueError, match="lie in"):
        AffectDataset(texts, va, Scale(0, 1), "x", ("a", "b"), np.array([0, 2]))
    with pytest.raises(ValueError, match="0 or 1"):
        AffectDataset(texts, va, Scale(0, 1), "x", ("a", "b"), np.array([[0, 0.5], [1, 0]]))
    with pytest.raises(ValueError, match="shape"):
        AffectDataset(texts, va, Scale(0, 1), "x", ("a", "b"), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="without targets"):
        AffectDataset(texts, va, Scale(0, 1), "x", ("a", "b"))


# --------------------------------------------------------------------------- config and sources


@pytest.mark.parametrize(
    "fields, key",
    [
        ({"dev_fraction": 1.0}, "data.dev_fraction"),
        ({"dev_fraction": -0.1}, "data.dev_fraction"),
        ({"multi_label": True}, "data.label_column"),
        ({"label_column": "l", "label_delimiter": "|"}, "data.multi_label"),
        ({"label_column": "l", "multi_label": True, "label_delimiter": "||"}, "one character"),
        ({"label_column": "l", "multi_label": True, "label_delimiter": '"'}, "one character"),
    ],
)
def test_data_config_check_names_the_key(fields, key):
    with pytest.raises(ConfigError, match=key):
        DataConfig(**fields).check()


def test_load_training_data_reads_dev_against_train_classes(tmp_path):
    train = write(
        tmp_path,
        "train.jsonl",
        "".join(json.dumps({"text": f"t{i}", "labels": ["joy", "fear"][: 1 + i % 2]}) + "\n" for i in range(6)),
    )
    dev = write(tmp_path, "dev.jsonl", json.dumps({"text": "d", "labels": ["fear"]}) + "\n")
    cfg = DataConfig(path=str(train), dev_path=str(dev), label_column="labels", multi_label=True)
    train_data, dev_data = load_training_data(cfg, verbose=False)
    assert train_data.classes == dev_data.classes == ("fear", "joy")
    np.testing.assert_array_equal(dev_data.targets, [[1, 0]])
    assert "multi-label emotion classes (labels)" in describe_data(cfg)["description"]
    with pytest.raises(ConfigError):
        load_training_data(DataConfig(path=str(train), multi_label=True), verbose=False)
