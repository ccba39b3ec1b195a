"""Emotion classifiers through the trainer: the heads learn separable synthetic classes (single- and
multi-label), CARL's terms train beside them, calibration is fitted on dev and stored in the model
folder, and bad labelled input stops with one line naming the file, line and field."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import emotion_overrides

from carl.cli import main
from carl.config import ConfigError, load_config
from carl.data.errors import DataError
from carl.data.sources import load_training_data
from carl.evaluation.metrics import multilabel_per_class_f1
from carl.inference import AffectEncoder
from carl.model.folder import ModelFolderError, load_heads
from carl.objectives.classification import balanced_class_weights
from carl.testing import synthetic_emotion_corpus, write_emotion_csv
from carl.training.trainer import CarlTrainer


def metrics(run: Path, dev: bool = False) -> list[dict]:
    """The step lines of a run's metrics.jsonl, or its dev-evaluation lines."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if ("dev" in r) == dev]


def carl_json(model: Path) -> dict:
    return json.loads((model / "carl" / "carl.json").read_text())


def test_single_label_head_learns_separable_classes(emotion_model, emotion_csv):
    encoder = AffectEncoder.load(str(emotion_model))
    result = encoder.classify(emotion_csv.test_texts)
    accuracy = np.mean([label == want[0] for label, want in zip(result.labels, emotion_csv.test_labels)])
    assert accuracy >= 0.95
    log = metrics(emotion_model.parent)
    assert log[0]["classify"] == pytest.approx(math.log(4), abs=0.3)  # uniform logits: log C
    assert log[-1]["classify"] < 0.1 and log[-1]["ce_accuracy"] > 0.9
    info = carl_json(emotion_model)
    assert info["heads"] == ["class_logits", "va"]
    assert info["classes"] == ["anger", "joy", "relief", "sadness"] and info["multi_label"] is False
    assert info["calibration"]["fitted_on"] == "dev" and info["calibration"]["dev_rows"] == 200
    assert info["metrics"]["dev_macro_f1"] >= 0.95 and info["thresholds"] is None
    # a classifier's run selects on the classes' dev macro-F1 by default
    assert info["selection"]["metric"] == "class_macro_f1"
    dev = metrics(emotion_model.parent, dev=True)
    assert dev and all("class_macro_f1" in r["dev"] and "va_pearson_mean" in r["dev"] for r in dev)
    assert info["selection"]["dev"]["class_macro_f1"] == max(r["dev"]["class_macro_f1"] for r in dev)
    # VA from the GoEmotions mapping of each class: joy texts get a higher valence than anger texts
    valence, _ = encoder.predict(["the thrilled day", "the furious day"])
    assert valence[0] > valence[1]


def test_multi_label_head_learns_separable_classes(multi_emotion_model, multi_emotion_csv):
    encoder = AffectEncoder.load(str(multi_emotion_model))
    result = encoder.classify(multi_emotion_csv.test_texts)
    classes = list(result.classes)
    want = np.array([[c in labels for c in classes] for labels in multi_emotion_csv.test_labels])
    got = np.array([[c in labels for c in classes] for labels in result.labels])
    assert np.mean(multilabel_per_class_f1(got, want)) >= 0.9
    assert np.mean((got == want).all(1)) >= 0.8  # every label of the text right
    info = carl_json(multi_emotion_model)
    assert info["multi_label"] is True and len(info["thresholds"]) == 4
    assert all(0 < t < 1 for t in info["thresholds"])
    assert "bce_label_accuracy" in metrics(multi_emotion_model.parent)[-1]


@pytest.mark.parametrize(
    "objective, terms, heads",
    [
        ("carl-classify", {"classify", "mcl", "ptd"}, ["class_logits", "query", "token_logits"]),
        ("mcl-classify", {"classify", "mcl"}, ["class_logits", "query"]),
    ],
)
def test_carl_terms_train_beside_the_classifier(objective, terms, heads, tiny_encoder, emotion_csv, tmp_path):
    cfg = load_config(None, emotion_overrides(tiny_encoder, emotion_csv, f"objective.name={objective}"))
    CarlTrainer(cfg, tmp_path, show_progress=False).train()
    log = metrics(tmp_path)
    assert terms <= set(log[-1]) and "mse" not in log[-1]
    assert log[-1]["classify"] < log[0]["classify"] / 4
    assert carl_json(tmp_path / "model")["metrics"]["dev_macro_f1"] > 0.9
    assert carl_json(tmp_path / "model")["heads"] == heads


def test_ptd_saliency_comes_from_the_total_clean_loss(tiny_encoder, emotion_csv, tmp_path):
    """The word-embedding gradient PTD selects by is d(w_cls L_classify + w_mcl L_mcl)/de: changing the
    classification weight changes it."""
    grads = []
    for weight in ("1", "5"):
        cfg = load_config(
            None,
            emotion_overrides(
                tiny_encoder, emotion_csv, "objective.name=carl-classify", f"objective.classify_weight={weight}"
            ),
        )
        trainer = CarlTrainer(cfg, tmp_path / weight, show_progress=False)
        batch = next(iter(trainer.loader))
        core = trainer.accelerator.unwrap_model(trainer.model)
        out = trainer.model(
            batch["input_ids"], batch["attention_mask"], heads=("query", "class_logits"), track_input_grad=True
        )
        labels = core.standardise(batch["labels"])
        loss = sum(
            trainer.terms[n].weight * trainer.clean_terms[n](batch, out, labels).loss for n in ("classify", "mcl")
        )
        loss.backward()
        grads.append(core.input_gradient().clone())
        trainer._pending_enqueue = None
        trainer.close()
    assert not torch.allclose(grads[0], grads[1])


def test_calibration_lowers_ece_of_an_over_confident_classifier(tiny_encoder, tmp_path):
    """40% random labels, memorised on train: dev probabilities are over-confident until T > 1."""
    train = write_emotion_csv(tmp_path / "train.csv", *synthetic_emotion_corpus(200, seed=0, label_noise=0.4))
    dev = write_emotion_csv(tmp_path / "dev.csv", *synthetic_emotion_corpus(300, seed=1, label_noise=0.4))
    cfg = load_config(
        None,
        [
            f"data.path={train}",
            f"data.dev_path={dev}",
            "data.label_column=label",
            f"model.encoder={tiny_encoder}",
            "objective.name=classify",
            "train.batch_size=16",
            "train.learning_rate=3e-3",
            "train.head_learning_rate=1e-2",
            "train.max_steps=300",
            "train.warmup_ratio=0",
            "train.checkpoint_every=100000",
            "train.num_threads=1",
        ],
    )
    CarlTrainer(cfg, tmp_path / "run", show_progress=False).train()
    info = carl_json(tmp_path / "run" / "model")
    calibration = info["calibration"]
    assert info["temperature"] > 2
    assert calibration["ece_before"] > 0.2 and calibration["ece_after"] < calibration["ece_before"] / 4
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "anger, joy, relief, sadness" in card and f"{info['temperature']:.4f}" in card
    assert f"{calibration['ece_after']:.4f}" in card and "dev_macro_f1" in card


def test_without_dev_data_the_temperature_is_one_and_the_log_says_so(tiny_encoder, emotion_csv, tmp_path, capsys):
    cfg = load_config(
        None,
        emotion_overrides(
            tiny_encoder,
            emotion_csv,
            "objective.name=classify",
            "data.dev_path=",
            "data.dev_fraction=0",
            "train.max_steps=5",
        ),
    )
    CarlTrainer(cfg, tmp_path, show_progress=False).train()
    assert "no dev data" in capsys.readouterr().out
    info = carl_json(tmp_path / "model")
    assert info["temperature"] == 1.0 and info["calibration"] == {"fitted_on": None}
    assert "none (no dev data)" in (tmp_path / "model" / "README.md").read_text()


def test_balanced_class_weights_reach_the_loss(tiny_encoder, tmp_path):
    texts, labels = synthetic_emotion_corpus(300, seed=0)
    keep = [i for i, names in enumerate(labels) if names != ["joy"] or i % 5 == 0]  # few joy rows
    train = write_emotion_csv(tmp_path / "train.csv", [texts[i] for i in keep], [labels[i] for i in keep])
    cfg = load_config(
        None,
        [
            f"data.path={train}",
            "data.label_column=label",
            f"model.encoder={tiny_encoder}",
            "objective.name=classify",
            "objective.class_weights=balanced",
            "train.num_threads=1",
        ],
    )
    trainer = CarlTrainer(cfg, tmp_path / "run", show_progress=False)
    weights = trainer.losses["classify"].class_weights
    assert torch.allclose(weights, balanced_class_weights(trainer.train_data.targets, 4))
    assert weights[trainer.train_data.classes.index("joy")] == weights.max()
    trainer.close()


# --------------------------------------------------------------------------- bad input


def train_error(capsys, *overrides: str) -> str:
    """``carl train`` with ``overrides``: exit 2 and one line on stderr, returned."""
    sets = [arg for o in overrides[1:] for arg in ("--set", o)]
    assert main(["train", "--output", overrides[0], "--no-progress", *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def base(tiny_encoder, tmp_path, train: Path) -> list[str]:
    return [
        str(tmp_path / "run"),
        f"data.path={train}",
        "data.label_column=label",
        f"model.encoder={tiny_encoder}",
        "objective.name=classify",
        "train.max_steps=2",
        "train.num_threads=1",
    ]


def test_a_classification_objective_without_a_label_column_is_one_line(tiny_encoder, emotion_csv, tmp_path, capsys):
    err = train_error(
        capsys,
        str(tmp_path / "run"),
        f"data.path={emotion_csv.train_path}",
        f"model.encoder={tiny_encoder}",
        "objective.name=carl-classify",
    )
    assert "data.label_column" in err and "carl-classify" in err


def test_a_missing_label_column_is_one_line(tiny_encoder, emotion_csv, tmp_path, capsys):
    err = train_error(capsys, *base(tiny_encoder, tmp_path, emotion_csv.train_path), "data.label_column=emotion")
    assert "emotion" in err and str(emotion_csv.train_path) in err


def test_an_empty_label_is_one_line_naming_the_line(tiny_encoder, tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("text,label\nthe thrilled day,joy\nthe furious day,\n", encoding="utf-8")
    err = train_error(capsys, *base(tiny_encoder, tmp_path, train))
    assert "line 3" in err and "label is empty" in err


def test_a_label_only_in_dev_is_one_line_naming_the_dev_file(tiny_encoder, emotion_csv, tmp_path, capsys):
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\nthe thrilled day,joy\nthe bored day,boredom\n", encoding="utf-8")
    err = train_error(capsys, *base(tiny_encoder, tmp_path, emotion_csv.train_path), f"data.dev_path={dev}")
    assert str(dev) in err and "line 3" in err and "'boredom'" in err


def test_a_class_too_small_for_a_stratified_split_is_one_line(tiny_encoder, tmp_path, capsys):
    train = tmp_path / "train.csv"
    rows = ["the thrilled day,joy"] * 10 + ["the furious day,anger"] * 10 + ["the gloomy day,sadness"]
    train.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    err = train_error(capsys, *base(tiny_encoder, tmp_path, train), "data.dev_fraction=0.2")
    assert "'sadness' (1)" in err and "data.dev_path" in err


def test_a_delimiter_inside_quotes_keeps_the_label_whole(tiny_encoder, tmp_path):
    """And plain classification trains on any label names: no VA mapping is needed without VA terms."""
    train = tmp_path / "train.csv"
    train.write_text('text,label\nthe thrilled day,"""love|hate""|joy"\nthe furious day,anger\n', encoding="utf-8")
    cfg = load_config(
        None,
        [
            f"data.path={train}",
            "data.label_column=label",
            "data.multi_label=true",
            "data.label_delimiter=|",
            "data.dev_fraction=0",
            "objective.name=classify",
            f"model.encoder={tiny_encoder}",
            "train.batch_size=2",
            "train.max_steps=2",
            "train.num_threads=1",
        ],
    )
    trainer = CarlTrainer(cfg, tmp_path / "run", show_progress=False)
    assert trainer.train_data.classes == ("anger", "joy", "love|hate")
    assert trainer.train_data.targets.tolist() == [[0, 1, 1], [1, 0, 0]]
    trainer.train()
    assert AffectEncoder.load(str(tmp_path / "run" / "model")).classify("the day").classes[2] == "love|hate"
    with pytest.raises(DataError, match=r"love\|hate"):  # a VA term needs each label's VA coordinates
        load_training_data(cfg.data, verbose=False)


def test_bad_class_weights_and_objective_settings_are_config_errors(emotion_csv):
    with pytest.raises(ConfigError, match=r"objective\.class_weights"):
        load_config(None, ["objective.class_weights=inverse"])
    with pytest.raises(ConfigError, match=r"data\.label_column"):
        load_config(None, ["objective.name=classify"])
    with pytest.raises(DataError):
        load_training_data(load_config(None, [f"data.path={emotion_csv.train_path}", "data.label_column=x"]).data)


# --------------------------------------------------------------------------- the model folder


def edited_copy(model: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    info = carl_json(copy)
    edit(info)
    (copy / "carl" / "carl.json").write_text(json.dumps(info))
    return copy


def test_a_classifier_whose_size_disagrees_with_the_classes_is_one_named_error(emotion_model, tmp_path):
    copy = edited_copy(emotion_model, tmp_path, lambda info: info["classes"].pop())
    with pytest.raises(ModelFolderError, match=r"classification head has 4 outputs .* lists 3 classes"):
        load_heads(copy)
    (tmp_path / "texts.txt").write_text("the thrilled day\n", encoding="utf-8")
    assert main(["predict", str(copy), "--input", str(tmp_path / "texts.txt")]) == 2


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("classes", ["joy", "joy", "anger", "sadness"], "distinct"),
        ("temperature", 0, "temperature"),
        ("multi_label", "no", "multi_label"),
    ],
)
def test_bad_classifier_entries_are_named(emotion_model, tmp_path, key, value, message):
    copy = edited_copy(emotion_model, tmp_path, lambda info: info.update({key: value}))
    with pytest.raises(ModelFolderError, match=message):
        load_heads(copy)


def test_multi_label_thresholds_must_match_the_classes(multi_emotion_model, tmp_path):
    copy = edited_copy(multi_emotion_model, tmp_path, lambda info: info.update(thresholds=[0.5]))
    with pytest.raises(ModelFolderError, match="thresholds"):
        load_heads(copy)


def test_a_saved_classifier_loads_back_the_same(emotion_model, emotion_csv, tmp_path):
    encoder = AffectEncoder.load(str(emotion_model))
    again = AffectEncoder.load(str(encoder.save(tmp_path / "saved")))
    a, b = encoder.classify(emotion_csv.test_texts[:20]), again.classify(emotion_csv.test_texts[:20])
    assert a.labels == b.labels and np.allclose(a.probabilities, b.probabilities, atol=1e-6)
    assert again.classifier == encoder.classifier


def test_a_killed_classifier_run_resumes_to_the_same_model(tiny_encoder, emotion_csv, tmp_path, run_cli):
    """SIGKILL after step 5 of carl-classify, resume: the loss trace, the class probabilities and the
    calibration equal an uninterrupted run's (the class targets are batched like the VA labels)."""
    sets = [
        arg
        for o in emotion_overrides(
            tiny_encoder,
            emotion_csv,
            "objective.name=carl-classify",
            "train.max_steps=8",
            "train.checkpoint_every=3",
            "train.batch_size=8",
            "objective.mcl.queue_size=32",
        )
        for arg in ("--set", o)
    ]
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    killed = run_cli("train", "--output", resumed, "--no-progress", *sets, kill_at_step=5)
    assert killed.returncode != 0 and not (resumed / "model").exists()
    for out in (resumed, straight):
        done = run_cli("train", "--output", out, "--no-progress", *sets)
        assert done.returncode == 0, done.stderr[-3000:]
    got, want = metrics(resumed), metrics(straight)
    assert [r["step"] for r in got] == list(range(1, 9))
    for a, b in zip(got, want):
        for key in ("loss", "classify", "mcl", "ptd", "ce_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["step"], key)
    texts = emotion_csv.test_texts[:20]
    a, b = AffectEncoder.load(str(resumed)).classify(texts), AffectEncoder.load(str(straight)).classify(texts)
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-6)
    assert carl_json(resumed / "model")["temperature"] == pytest.approx(carl_json(straight / "model")["temperature"])
