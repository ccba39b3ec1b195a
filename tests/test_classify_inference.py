"""Users get the classifier everywhere: ``AffectEncoder.classify``, ``carl predict``, ``/classify`` in
``carl serve`` and ``carl explain --target CLASS``; each refuses a model without a classification
head with one named error (409 in the service)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from carl.cli import main
from carl.evaluation.calibration import probabilities
from carl.inference import AffectEncoder
from carl.inference.explain import explain_class
from carl.serve.app import create_app
from carl.serve.schemas import ServeLimits

TEXTS = [
    "we felt thrilled after dinner",
    "the report was gloomy",
    "she was furious at the office",
    "a serene walk by the river",
]
WANT = ["joy", "sadness", "anger", "relief"]


@pytest.fixture(scope="module")
def classifier(emotion_model) -> AffectEncoder:
    return AffectEncoder.load(str(emotion_model))


@pytest.fixture(scope="module")
def multi_classifier(multi_emotion_model) -> AffectEncoder:
    return AffectEncoder.load(str(multi_emotion_model))


def test_classify_gives_calibrated_softmax_probabilities(classifier):
    result = classifier.classify(TEXTS)
    assert result.labels == WANT and result.classes == ("anger", "joy", "relief", "sadness")
    logits, _ = classifier.class_logits(TEXTS)
    t = classifier.classifier.temperature
    assert np.allclose(result.probabilities, probabilities(logits, t, multi_label=False), atol=1e-6)
    assert np.allclose(result.probabilities.sum(1), 1.0, atol=1e-5)
    one = classifier.classify(TEXTS[0])  # a bare string is one text
    assert one.labels == "joy" and one.probabilities.shape == (4,)
    assert np.allclose(one.probabilities, result.probabilities[0], atol=1e-6)


def test_multi_label_classify_applies_temperature_and_thresholds(multi_classifier):
    texts = ["we felt thrilled and then gloomy", "the report was gloomy", "the day"]
    result = multi_classifier.classify(texts)
    logits, _ = multi_classifier.class_logits(texts)
    c = multi_classifier.classifier
    probs = probabilities(logits, c.temperature, multi_label=True)
    assert np.allclose(result.probabilities, probs, atol=1e-6)
    assert result.labels == [[k for k, p, t in zip(c.classes, row, c.thresholds) if p >= t] for row in probs]
    assert result.labels[0] == ["joy", "sadness"] and result.labels[1] == ["sadness"]


def test_classify_without_a_classifier_is_a_named_error(affect_model):
    with pytest.raises(RuntimeError, match="no classification head"):
        AffectEncoder.load(str(affect_model)).classify(TEXTS)


# --------------------------------------------------------------------------- carl predict


def write_texts(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def test_predict_writes_labels_probabilities_and_va(emotion_model, classifier, tmp_path):
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(emotion_model), "-i", str(write_texts(tmp_path)), "-o", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == TEXTS and [r["labels"] for r in rows] == [[w] for w in WANT]
    result, (valence, arousal) = classifier.classify(TEXTS), classifier.predict(TEXTS)
    for row, probs, v, a in zip(rows, result.probabilities, valence, arousal):
        assert list(row["probabilities"]) == list(result.classes)
        assert np.allclose(list(row["probabilities"].values()), probs, atol=1e-5)
        assert row["valence"] == pytest.approx(v, abs=1e-4) and row["arousal"] == pytest.approx(a, abs=1e-4)


def test_predict_csv_columns_and_npy_probabilities(emotion_model, classifier, tmp_path, capsys):
    source = write_texts(tmp_path)
    assert main(["predict", str(emotion_model), "-i", str(source), "-o", str(tmp_path / "o.csv"), "--no-progress"]) == 0
    with open(tmp_path / "o.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["text", "valence", "arousal", "labels", "p_anger", "p_joy", "p_relief", "p_sadness"]
    assert [json.loads(r["labels"]) for r in rows] == [[w] for w in WANT]
    npy = tmp_path / "o.npy"
    assert main(["predict", str(emotion_model), "-i", str(source), "-o", str(npy), "--classes", "--no-progress"]) == 0
    assert "probabilities [N, 4] in the order anger, joy, relief, sadness" in capsys.readouterr().err
    assert np.allclose(np.load(npy), classifier.classify(TEXTS).probabilities, atol=1e-6)


def test_predict_of_a_va_model_is_unchanged_and_classes_is_a_named_error(affect_model, tmp_path, capsys):
    source, out = write_texts(tmp_path), tmp_path / "va.jsonl"
    assert main(["predict", str(affect_model), "-i", str(source), "-o", str(out), "--no-progress"]) == 0
    assert set(json.loads(out.read_text().splitlines()[0])) == {"text", "valence", "arousal"}
    capsys.readouterr()
    assert main(["predict", str(affect_model), "-i", str(source), "--classes", "--no-progress"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the weight-loading bar
    assert last.startswith("carl predict: error:") and "no classification head" in last and "Traceback" not in err


# --------------------------------------------------------------------------- carl serve


LIMITS = ServeLimits(max_texts=4, max_chars=100, max_batch_texts=8)


def test_serve_classify_matches_the_python_api(classifier):
    with TestClient(create_app(classifier, LIMITS, name="emotion")) as client:
        response = client.post("/classify", json={"texts": TEXTS})
        assert response.status_code == 200
        body = response.json()
        assert body["classes"] == ["anger", "joy", "relief", "sadness"] and body["multi_label"] is False
        assert body["temperature"] == pytest.approx(classifier.classifier.temperature)
        assert [p["labels"] for p in body["predictions"]] == [[w] for w in WANT]
        got = np.array([list(p["probabilities"].values()) for p in body["predictions"]])
        assert np.allclose(got, classifier.classify(TEXTS).probabilities, atol=1e-5)
        health = client.get("/health").json()
        assert health["heads"] == ["class_logits", "va"] and health["classes"] == body["classes"]
        assert health["requests"] == 1 and health["texts"] == 4
        # the same request limits and errors as /predict
        assert client.post("/classify", json={"texts": TEXTS + ["one too many"]}).status_code == 422
        assert client.post("/classify", json={"texts": ["x" * 101]}).status_code == 422
        assert client.post("/classify", json={"texts": []}).status_code == 422
        assert client.post("/classify", content=b"{", headers={"content-type": "application/json"}).status_code == 400


def test_serve_classify_without_a_classifier_is_409(affect_model):
    with TestClient(create_app(AffectEncoder.load(str(affect_model)), LIMITS)) as client:
        response = client.post("/classify", json={"texts": TEXTS})
        assert response.status_code == 409 and "no classification head" in response.json()["detail"]
        assert client.get("/health").json()["classes"] is None
        assert client.post("/predict", json={"texts": TEXTS}).status_code == 200


# --------------------------------------------------------------------------- carl explain --target


def test_explain_target_attributes_the_class_probability_to_its_words(classifier):
    explanations = explain_class(classifier, TEXTS, "anger")
    for e, text in zip(explanations, TEXTS):
        assert e.target == "anger" and e.words == text.split()
    probs = classifier.classify(TEXTS).probabilities[:, 0]
    assert np.allclose([e.probability for e in explanations], probs, atol=1e-5)
    # two competing affect words: each pushes the log-odds of its own class, against the other's
    for target, pro, con in (("anger", "furious", "thrilled"), ("joy", "thrilled", "furious")):
        e = explain_class(classifier, ["she was furious and thrilled at the office"], target)[0]
        scores = dict(zip(e.words, e.scores))
        assert scores[pro] > 0 > scores[con]
        assert set(sorted(e.words, key=lambda w: -abs(scores[w]))[:2]) == {pro, con}


def test_explain_target_equals_a_reference_gradient_x_input(classifier):
    text = TEXTS[0]
    model, c = classifier.model, classifier.classifier
    ids = torch.tensor([classifier.tokenize([text])["input_ids"][0]])
    embeds = model.backbone.get_input_embeddings()(ids).detach().requires_grad_(True)
    hidden = model.backbone(inputs_embeds=embeds, attention_mask=torch.ones_like(ids)).last_hidden_state
    z = model.classifier(hidden.mean(1))[0] / c.temperature
    (z[1] - torch.cat([z[:1], z[2:]]).logsumexp(0)).backward()  # log-odds of class 1 (joy): log p / (1 - p)
    reference = (embeds.grad * embeds).sum(-1)[0, 1:-1]  # words between [CLS] and [SEP]
    got = explain_class(classifier, [text], "joy")[0].scores
    assert np.allclose(got, reference.detach().numpy(), atol=1e-5)


def test_explain_target_cli_writes_jsonl_csv_and_html(emotion_model, tmp_path):
    source = write_texts(tmp_path)
    jsonl, page = tmp_path / "e.jsonl", tmp_path / "e.html"
    assert (
        main(
            [
                "explain",
                str(emotion_model),
                "-i",
                str(source),
                "-o",
                str(jsonl),
                "--html",
                str(page),
                "--target",
                "joy",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["target"] for r in rows] == ["joy"] * 4 and set(rows[0]) >= {"words", "scores", "probability"}
    html = page.read_text()
    assert "calibrated probability of joy" in html and "log-odds" in html
    assert "rgba(0,150,170" in html and "valence" not in html
    assert (
        main(
            [
                "explain",
                str(emotion_model),
                "-i",
                str(source),
                "-o",
                str(tmp_path / "e.csv"),
                "--target",
                "joy",
                "--no-progress",
            ]
        )
        == 0
    )
    header = (tmp_path / "e.csv").read_text().splitlines()[0]
    assert header == "index,word,target,attribution"


@pytest.mark.parametrize(
    "model, target, message",
    [("emotion_model", "boredom", "not one of the model's classes"), ("affect_model", "joy", "no classification head")],
)
def test_explain_target_errors_are_one_line(request, tmp_path, capsys, model, target, message):
    folder = request.getfixturevalue(model)
    assert main(["explain", str(folder), "-i", str(write_texts(tmp_path)), "--target", target, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err
