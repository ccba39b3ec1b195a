"""Tests for carl.data: scales, readers, emotion mapping, EmoBank, user corpora."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from carl.data import (
    AffectDataset,
    DataError,
    Scale,
    UnknownLabelError,
    available_mappings,
    emotion_to_va,
    load_emobank,
    load_table,
    load_user_corpus,
)
from carl.data.emotion_va import EKMAN_LABELS, GOEMOTIONS_LABELS, WARRINER_NORMS, get_mapping


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def assert_located(err: DataError, path: Path, line: int | None, field: str | None) -> str:
    """The message names the file, line and field, and the attributes agree."""
    message = str(err)
    assert path.name in message
    assert err.path == str(path)
    assert err.line == line
    assert err.field == field
    if line is not None:
        assert f"line {line}" in message
    if field is not None:
        assert f"field {field!r}" in message
    return message


# --------------------------------------------------------------------------- EmoBank


@pytest.mark.parametrize("split, size", [("train", 8062), ("dev", 1000), ("test", 1000)])
def test_emobank_split_sizes_and_label_range(split, size):
    data = load_emobank(split)
    assert len(data) == size
    assert data.labels.shape == (size, 2)
    assert data.labels.dtype == np.float32
    assert np.all(data.labels >= 0.0) and np.all(data.labels <= 1.0)
    assert str(data.scale) == "1-5"
    original = data.original_labels()
    # documented observed ranges of emobank.csv: V 1.20-4.60, A 1.80-4.40
    assert original[:, 0].min() >= 1.2 - 1e-6 and original[:, 0].max() <= 4.6 + 1e-6
    assert original[:, 1].min() >= 1.8 - 1e-6 and original[:, 1].max() <= 4.4 + 1e-6
    assert all(text.strip() for text in data.texts)


def test_emobank_first_rows_match_file():
    train = load_emobank("train")
    # first data row of emobank.csv: 110CYL068_1036_1079,train,3.0,3.0,3.2,"Remember ... """
    assert train.texts[0] == 'Remember what she said in my last letter? "'
    np.testing.assert_allclose(train.labels[0], [0.5, 0.5])
    test = load_emobank("test")
    assert test.texts[0] == "If I wasn't working here."
    np.testing.assert_allclose(test.labels[0], [(2.8 - 1) / 4, (3.1 - 1) / 4], rtol=1e-6)


def test_emobank_splits_cover_every_row():
    texts = [load_emobank(s).texts for s in ("train", "dev", "test")]
    assert sum(len(t) for t in texts) == 10062


def test_emobank_unknown_split():
    with pytest.raises(ValueError, match="train.*dev.*test"):
        load_emobank("validation")


# --------------------------------------------------------------------------- scales


def test_scale_round_trip_and_parse():
    scale = Scale.parse("1-5")
    assert (scale.low, scale.high) == (1.0, 5.0)
    x = np.array([1.0, 2.5, 5.0])
    np.testing.assert_allclose(scale.normalise(x), [0.0, 0.375, 1.0])
    np.testing.assert_allclose(scale.denormalise(scale.normalise(x)), x)
    assert scale.denormalise(scale.normalise(3.3)) == pytest.approx(3.3)
    for text, bounds in [
        ("0-1", (0, 1)),
        ("1-9", (1, 9)),
        ("-1:1", (-1, 1)),
        ("-1-1", (-1, 1)),
        ("1..9", (1, 9)),
        (" 1 to 5 ", (1, 5)),
        ("-2.5:2.5", (-2.5, 2.5)),
    ]:
        parsed = Scale.parse(text)
        assert (parsed.low, parsed.high) == bounds, text
    assert Scale.parse("-1:1").normalise(0.0) == pytest.approx(0.5)
    assert str(Scale(-1, 1)) == "-1:1" and str(Scale(1, 9)) == "1-9"
    assert Scale.parse(scale) is scale


@pytest.mark.parametrize("bad", ["5-1", "3-3", "abc", "1-", "1,2,3"])
def test_scale_rejects_bad_text(bad):
    with pytest.raises(ValueError):
        Scale.parse(bad)


def test_scale_rejects_bad_bounds():
    with pytest.raises(ValueError, match="low < high"):
        Scale(2, 1)
    with pytest.raises(ValueError, match="finite"):
        Scale(0, float("inf"))


# --------------------------------------------------------------------------- readers: good input


def test_read_csv_with_quoted_fields(tmp_path):
    path = write(
        tmp_path, "data.csv", 'text,valence,arousal\n"Hello, world",1,5\n"She said ""hi""\nand left",3,3\nplain,5,1\n'
    )
    data = load_table(path)
    assert data.texts == ["Hello, world", 'She said "hi"\nand left', "plain"]
    np.testing.assert_allclose(data.labels, [[0, 1], [0.5, 0.5], [1, 0]])
    assert data.labels.dtype == np.float32
    assert data.source == str(path)


def test_read_tsv_and_custom_columns(tmp_path):
    path = write(tmp_path, "data.tsv", "sentence\tV\tA\nfine\t7\t3\nbad\t1\t9\n")
    data = load_table(path, text_column="sentence", valence_column="V", arousal_column="A", scale="1-9")
    assert data.texts == ["fine", "bad"]
    np.testing.assert_allclose(data.labels, [[0.75, 0.25], [0.0, 1.0]])


def test_read_jsonl_and_negative_scale(tmp_path):
    lines = [{"text": "up", "valence": 1, "arousal": -1}, {"text": "mid", "valence": "0", "arousal": 0.5}]
    path = write(tmp_path, "data.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n\n")
    data = load_table(path, scale="-1:1")
    np.testing.assert_allclose(data.labels, [[1.0, 0.0], [0.5, 0.75]])


def test_format_override(tmp_path):
    path = write(tmp_path, "data.txt", "text\tvalence\tarousal\nx\t2\t4\n")
    data = load_table(path, file_format="tsv")
    np.testing.assert_allclose(data.labels, [[0.25, 0.75]])


def test_split_filtering(tmp_path):
    path = write(tmp_path, "data.csv", "text,valence,arousal,part\na,1,1,train\nb,2,2,test\nc,3,3,train\n")
    data = load_table(path, split_column="part", split="train")
    assert data.texts == ["a", "c"]
    with pytest.raises(ValueError, match="split_column"):
        load_table(path, split="train")


def test_split_without_rows(tmp_path):
    path = write(tmp_path, "data.csv", "text,valence,arousal,part\na,1,1,train\n")
    with pytest.raises(DataError) as info:
        load_table(path, split_column="part", split="dev")
    message = assert_located(info.value, path, None, "part")
    assert "'train'" in message


def test_subset_and_mask(tmp_path):
    path = write(tmp_path, "data.csv", "text,valence,arousal\na,1,1\nb,3,3\nc,5,5\n")
    data = load_table(path)
    part = data.subset([2, 0])
    assert part.texts == ["c", "a"]
    np.testing.assert_allclose(part.labels, [[1, 1], [0, 0]])
    assert part.scale == data.scale and part.source == data.source
    masked = data.subset(np.array([False, True, False]))
    assert masked.texts == ["b"]
    assert len(data) == 3  # original unchanged


def test_dataset_shape_validation():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        AffectDataset(["a"], np.zeros((1, 3)), Scale(0, 1), "x")
    with pytest.raises(ValueError, match="texts"):
        AffectDataset(["a", "b"], np.zeros((1, 2)), Scale(0, 1), "x")


def test_summary_text(tmp_path):
    path = write(tmp_path, "scores.csv", "text,valence,arousal\na,1,2\nb,3,4\nc,5,3\n")
    summary = load_table(path).summary()
    assert "rows read: 3" in summary
    assert "scores.csv" in summary
    assert "1-5" in summary
    assert re.search(r"valence.*min 1\.000\s+mean 3\.000\s+max 5\.000", summary)
    assert re.search(r"arousal.*min 2\.000\s+mean 3\.000\s+max 4\.000", summary)


# --------------------------------------------------------------------------- categorical labels


def test_emotion_mappings_cover_required_labels():
    assert available_mappings() == ["ekman", "goemotions"]
    goemotions, ekman = get_mapping("goemotions"), get_mapping("ekman")
    assert len(goemotions) == 28 and set(goemotions) == set(GOEMOTIONS_LABELS)
    assert set(ekman) == {"anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"}
    assert set(EKMAN_LABELS) <= set(GOEMOTIONS_LABELS)
    for label, (v, a) in goemotions.items():
        assert 0.0 <= v <= 1.0 and 0.0 <= a <= 1.0, label
        assert ekman.get(label, (v, a)) == (v, a)


def test_emotion_to_va_values_follow_warriner():
    assert emotion_to_va("joy") == pytest.approx(((8.21 - 1) / 8, (5.55 - 1) / 8))
    assert emotion_to_va("  Sadness ") == pytest.approx(((2.40 - 1) / 8, (2.81 - 1) / 8))
    assert emotion_to_va("neutral", "ekman") == pytest.approx((0.5, (3.45 - 1) / 8))
    assert WARRINER_NORMS["caring"].word == "care"
    v_joy, _ = emotion_to_va("joy")
    v_anger, _ = emotion_to_va("anger")
    assert v_joy > 0.5 > v_anger  # sanity: positive vs negative
    assert emotion_to_va("sadness")[1] < emotion_to_va("fear")[1]  # calm vs aroused


def test_emotion_to_va_unknown_label_is_keyerror():
    with pytest.raises(KeyError) as info:
        emotion_to_va("joyy")
    assert isinstance(info.value, UnknownLabelError) and isinstance(info.value, DataError)
    assert "did you mean 'joy'" in str(info.value)
    with pytest.raises(KeyError):
        emotion_to_va("admiration", "ekman")
    with pytest.raises(ValueError, match="unknown label mapping"):
        emotion_to_va("joy", "plutchik")


def test_categorical_table(tmp_path):
    path = write(tmp_path, "cats.csv", "text,emotion\nyay,joy\ngrr,Anger\nhm,neutral\n")
    data = load_table(path, label_column="emotion", label_mapping="ekman")
    assert str(data.scale) == "0-1"
    np.testing.assert_allclose(
        data.labels, [emotion_to_va("joy"), emotion_to_va("anger"), emotion_to_va("neutral")], rtol=1e-6
    )
    default = load_table(path, label_column="emotion")  # goemotions by default
    np.testing.assert_allclose(default.labels, data.labels)


def test_categorical_user_json_mapping(tmp_path):
    mapping = write(tmp_path, "my_map.json", json.dumps({"Happy": [0.9, 0.7], "calm": [0.6, 0.1]}))
    path = write(tmp_path, "cats.jsonl", '{"text": "a", "label": "happy"}\n{"text": "b", "label": "CALM"}\n')
    data = load_table(path, label_column="label", label_mapping=str(mapping))
    np.testing.assert_allclose(data.labels, [[0.9, 0.7], [0.6, 0.1]], rtol=1e-6)
    assert emotion_to_va("calm", str(mapping)) == (0.6, 0.1)


def test_bad_user_json_mapping(tmp_path):
    mapping = write(tmp_path, "bad_map.json", json.dumps({"happy": [0.9, 1.7]}))
    with pytest.raises(DataError) as info:
        emotion_to_va("happy", str(mapping))
    assert_located(info.value, mapping, None, "happy")


# --------------------------------------------------------------------------- bad input: one test each


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError) as info:
        load_table(path)
    message = assert_located(info.value, path, None, None)
    assert "not found" in message


def test_missing_column_lists_columns_and_suggests(tmp_path):
    path = write(tmp_path, "data.csv", "text,Valence,arousal\nhi,1,1\n")
    with pytest.raises(DataError) as info:
        load_table(path)
    message = assert_located(info.value, path, 1, "valence")
    assert "'text', 'Valence', 'arousal'" in message
    assert "did you mean 'Valence'" in message


def test_missing_key_in_jsonl_record(tmp_path):
    path = write(
        tmp_path, "data.jsonl", '{"text": "a", "valence": 1, "arousal": 1}\n{"text": "b", "valenc": 1, "arousal": 1}\n'
    )
    with pytest.raises(DataError) as info:
        load_table(path)
    message = assert_located(info.value, path, 2, "valence")
    assert "did you mean 'valenc'" in message


@pytest.mark.parametrize("text_cell", ['""', '"   "'])
def test_empty_or_whitespace_text(tmp_path, text_cell):
    path = write(tmp_path, "data.csv", f"text,valence,arousal\nok,1,1\nok,2,2\n{text_cell},3,3\n")
    with pytest.raises(DataError) as info:
        load_table(path)
    message = assert_located(info.value, path, 4, "text")
    assert "empty" in message or "whitespace" in message


def test_non_numeric_value(tmp_path):
    path = write(tmp_path, "data.csv", "text,valence,arousal\nok,1,1\nbad,abc,2\n")
    with pytest.raises(DataError) as info:
        load_table(path)
    assert_located(info.value, path, 3, "valence")
    assert str(info.value) == f"{path}, line 3, field 'valence': 'abc' is not a number"


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-Infinity"])
def test_nan_or_inf_value(tmp_path, cell):
    path = write(tmp_path, "data.csv", f"text,valence,arousal\nok,1,1\nbad,2,{cell}\n")
    with pytest.raises(DataError) as info:
        load_table(path)
    message = assert_located(info.value, path, 3, "arousal")
    assert "finite" in message


def test_nan_in_jsonl(tmp_path):
    path = write(tmp_path, "data.jsonl", '{"text": "a", "valence": NaN, "arousal": 1}\n')
    with pytest.raises(DataError) as info:
        load_table(path)
    assert_located(info.value, path, 1, "valence")


def test_value_outside_scale(tmp_path):
    path = write(tmp_path, "data.csv", "text,valence,arousal\nok,1,1\nbig,7,2\n")
    with pytest.raises(DataError) as info:
        load_table(path, scale="1-5")
    message = assert_located(info.value, path, 3, "valence")
    assert "outside the declared scale 1-5" in message


def test_undecodable_bytes(tmp_path):
    content = b"text,valence,arousal\nok,1,1\n" + b"caf\xe9 latin-1,2,2\n"
    path = write(tmp_path, "data.csv", content)
    with pytest.raises(DataError) as info:
        load_table(path)
    message = assert_located(info.value, path, 3, "text")
    assert "UTF-8" in message and "0xe9" in message


def test_malformed_jsonl_line(tmp_path):
    path = write(tmp_path, "data.jsonl", '{"text": "a", "valence": 1, "arousal": 1}\n\n{"text": "b", "valence": 2,\n')
    with pytest.raises(DataError) as info:
        load_table(path)
    message = assert_located(info.value, path, 3, None)
    assert "malformed JSON" in message


def test_unknown_label_in_table(tmp_path):
    path = write(tmp_path, "cats.csv", "text,emotion\nyay,joy\nugh,disgusted\n")
    with pytest.raises(DataError) as info:
        load_table(path, label_column="emotion")
    message = assert_located(info.value, path, 3, "emotion")
    assert isinstance(info.value, KeyError)
    assert "'disgusted'" in message and "did you mean 'disgust'" in message


def test_zero_data_rows(tmp_path):
    path = write(tmp_path, "empty.csv", "text,valence,arousal\n")
    with pytest.raises(DataError) as info:
        load_table(path)
    message = assert_located(info.value, path, None, None)
    assert "no data rows" in message
    blank = write(tmp_path, "blank.jsonl", "\n\n")
    with pytest.raises(DataError, match="no data rows"):
        load_table(blank)


def test_error_line_is_record_start_after_multiline_record(tmp_path):
    path = write(tmp_path, "data.csv", 'text,valence,arousal\n"line one\nline two\nline three",1,1\nbad,x,1\n')
    with pytest.raises(DataError) as info:
        load_table(path)
    assert_located(info.value, path, 5, "valence")


def test_wrong_field_count(tmp_path):
    path = write(tmp_path, "data.csv", "text,valence,arousal\nok,1,1\nshort,1\n")
    with pytest.raises(DataError) as info:
        load_table(path)
    message = assert_located(info.value, path, 3, None)
    assert "expected 3 fields" in message


# --------------------------------------------------------------------------- user corpora


def test_user_corpus_missing_path_says_how_to_obtain(tmp_path):
    for name, hint in [("iemocap", "sail.usc.edu"), ("facebookposts", "wwbp.org"), ("EmoTales", "authors")]:
        with pytest.raises(DataError) as info:
            load_user_corpus(name, None)
        assert "How to obtain it" in str(info.value) and hint in str(info.value)
    missing = tmp_path / "dataset-fb-valence-arousal-anon.csv"
    with pytest.raises(DataError) as info:
        load_user_corpus("facebookposts", missing)
    assert missing.name in str(info.value) and "not found" in str(info.value)
    with pytest.raises(ValueError, match="unknown user corpus"):
        load_user_corpus("sst", missing)


def test_facebook_posts_average_annotators(tmp_path):
    path = write(
        tmp_path,
        "dataset-fb-valence-arousal-anon.csv",
        'Anonymized Message,Valence1,Valence2,Arousal1,Arousal2\n"great day, really",9,7,5,3\nmeh,1,1,1,1\n',
    )
    data = load_user_corpus("facebookposts", path)
    assert data.texts == ["great day, really", "meh"]
    np.testing.assert_allclose(data.labels, [[0.875, 0.375], [0.0, 0.0]])
    assert str(data.scale) == "1-9"


def test_facebook_posts_bad_rating(tmp_path):
    path = write(tmp_path, "fb.csv", "Anonymized Message,Valence1,Valence2,Arousal1,Arousal2\npost,5,10,3,3\n")
    with pytest.raises(DataError) as info:
        load_user_corpus("facebook", path)
    assert_located(info.value, path, 2, "Valence2")


def test_iemocap_and_emotales_columns(tmp_path):
    iemocap = write(tmp_path, "iemocap.csv", "text,valence,activation\nhello there,2,4\n")
    np.testing.assert_allclose(load_user_corpus("iemocap", iemocap).labels, [[0.25, 0.75]])
    tales = write(tmp_path, "emotales.csv", "text,valence,arousal\nOnce upon a time,5,1\n")
    np.testing.assert_allclose(load_user_corpus("emotales", tales).labels, [[0.5, 0.0]])
    np.testing.assert_allclose(load_user_corpus("emotales", tales, scale="1-5").labels, [[1.0, 0.0]])
