"""The held-out dev split: stratified, deterministic in the seed, named errors for tiny classes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carl.config import DataConfig
from carl.data import AffectDataset, DataError, Scale
from carl.data.sources import load_training_data
from carl.data.splits import hold_out_dev


def labelled(counts: dict[str, int]) -> AffectDataset:
    classes = tuple(sorted(counts))
    targets = np.concatenate([np.full(n, classes.index(name)) for name, n in counts.items()])
    texts = [f"text {i}" for i in range(len(targets))]
    return AffectDataset(texts, np.full((len(texts), 2), 0.5), Scale(0, 1), "train.csv", classes, targets)


def test_single_label_split_is_stratified_and_disjoint():
    data = labelled({"joy": 50, "anger": 30, "fear": 20})
    train, dev, note = hold_out_dev(data, 0.1, seed=0)
    assert dev.class_counts() == {"anger": 3, "fear": 2, "joy": 5}
    assert train.class_counts() == {"anger": 27, "fear": 18, "joy": 45}
    assert set(train.texts).isdisjoint(dev.texts) and len(train) + len(dev) == len(data)
    assert note == "dev: held out 10 of 100 training rows (10%, seed 0, stratified on the class); training on 90"
    # both parts keep the original order
    assert [data.texts.index(t) for t in dev.texts] == sorted(data.texts.index(t) for t in dev.texts)


def test_split_is_deterministic_in_the_seed():
    data = labelled({"joy": 40, "anger": 40})
    first = hold_out_dev(data, 0.25, seed=3)[1].texts
    assert hold_out_dev(data, 0.25, seed=3)[1].texts == first
    assert hold_out_dev(data, 0.25, seed=4)[1].texts != first


def test_rounding_meets_the_total_and_keeps_a_row_of_each_class_in_train():
    data = labelled({"a": 7, "b": 7, "c": 7, "d": 2})
    train, dev, _ = hold_out_dev(data, 0.5, seed=0)
    # quotas 3.5, 3.5, 3.5, 1.0 -> floors 10 rows, then the largest remainders (a, b) up to round(11.5) = 12
    assert dev.class_counts() == {"a": 4, "b": 4, "c": 3, "d": 1}
    assert all(n >= 1 for n in train.class_counts().values())


def test_class_too_small_is_a_named_error():
    with pytest.raises(DataError) as info:
        hold_out_dev(labelled({"joy": 10, "grief": 1}), 0.2, seed=0)
    message = str(info.value)
    assert message.startswith("train.csv: ") and "'grief' (1)" in message and "data.dev_path" in message


def test_multi_label_stratifies_on_the_rarest_label():
    targets = np.zeros((40, 3), dtype=np.float32)
    targets[:, 0] = 1  # every row has "a"
    targets[:10, 1] = 1  # "b" on 10 rows: their stratum
    targets[10:14, 2] = 1  # "c" on 4 rows
    data = AffectDataset(
        [f"t{i}" for i in range(40)], np.zeros((40, 2)), Scale(0, 1), "m.jsonl", ("a", "b", "c"), targets
    )
    _, dev, note = hold_out_dev(data, 0.25, seed=1)
    assert "rarest label" in note
    assert dev.class_counts() == {"a": 10, "b": 2, "c": 1}  # 26*0.25=6.5, 10*0.25=2.5, 4*0.25=1


def test_va_only_split_uses_valence_arousal_bins():
    rng = np.random.default_rng(0)
    labels = rng.uniform(size=(90, 2))
    data = AffectDataset([f"t{i}" for i in range(90)], labels, Scale(0, 1), "va.csv")
    _, dev, note = hold_out_dev(data, 0.2, seed=0)
    assert "3x3 valence-arousal bins" in note and len(dev) == 18

    def cells(va: np.ndarray) -> np.ndarray:  # tertile of valence x tertile of arousal
        edges = np.quantile(data.labels, [1 / 3, 2 / 3], axis=0)
        return np.bincount(
            3 * np.searchsorted(edges[:, 0], va[:, 0], side="right")
            + np.searchsorted(edges[:, 1], va[:, 1], side="right"),
            minlength=9,
        )

    share = 0.2 * cells(data.labels)
    assert np.all((cells(dev.labels) == np.floor(share)) | (cells(dev.labels) == np.ceil(share)))
    assert len(set(cells(data.labels).tolist())) > 1  # unequal cells: the rounding is tested


def test_too_few_rows_and_bad_fraction():
    with pytest.raises(DataError, match="too few to hold out"):
        hold_out_dev(labelled({"a": 2, "b": 2}), 0.1, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        hold_out_dev(labelled({"a": 5}), 1.0, seed=0)


def test_load_training_data_holds_out_dev_without_a_dev_file(tmp_path, capsys):
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"t{i}", "emotion": ["joy", "anger"][i % 2]}) + "\n" for i in range(20)),
        encoding="utf-8",
    )
    cfg = DataConfig(path=str(path), label_column="emotion", dev_fraction=0.2, dev_seed=5)
    train, dev = load_training_data(cfg)
    assert len(train) == 16 and dev is not None and dev.class_counts() == {"anger": 2, "joy": 2}
    assert "dev: held out 4 of 20 training rows (20%, seed 5" in capsys.readouterr().out
    # by default 10% is held out, but only for a run that selects on dev
    default = DataConfig(path=str(path), label_column="emotion")
    assert len(load_training_data(default, verbose=False)[1]) == 2
    assert load_training_data(default, verbose=False, hold_out=False)[1] is None
    assert (
        load_training_data(DataConfig(path=str(path), label_column="emotion", dev_fraction=0), verbose=False)[1] is None
    )
