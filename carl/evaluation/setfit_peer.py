"""SetFit (Tunstall et al., 2022) as the peer baseline of the fine-tuning benchmark.

SetFit's documented recipe, through the ``setfit`` package: the sentence-transformers body is
fine-tuned contrastively on text pairs (``CosineSimilarityLoss``; "oversampling" draws as many
same-class as different-class pairs), then a logistic-regression head is fitted on the body's
embeddings of the training texts (``OneVsRestClassifier`` of it for multi-label data). Only the
number of body optimizer steps (``max_steps``, the benchmark's shared budget) and the seed are set;
above :data:`EXACT_PAIR_LIMIT` pairs of training texts, the pairs are drawn lazily (:func:`_pair_order`).

The head is kept as its coefficients, so that scoring needs no sklearn object and saving needs no
pickle (``setfit``'s own ``save_pretrained`` writes the head with joblib):

    z = E W^T + b                       E [N, D] body embeddings, W [K, D], b [K]
    single-label, C > 2:  p = softmax(z)            K = C  (multinomial logistic regression)
    single-label, C = 2:  p = [1 - s(z), s(z)]      K = 1  (sklearn's binary form)
    multi-label:          p = s(z)                  K = C  (one binary regression per class)

with s the logistic sigmoid. Saved under ``out_dir``: ``body/`` (a sentence-transformers folder,
safetensors), ``head.safetensors`` (W, b, float64) and ``setfit.json`` (classes, thresholds, dev
metrics, timing, recipe), written last: a folder with ``setfit.json`` holds a finished model, and
:func:`fit_setfit` returns it instead of training again when the same fit is asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit, softmax

from carl.atomic import temporary_beside, write_text_atomic
from carl.evaluation.metrics import classification_metrics, multilabel_per_class_f1
from carl.evaluation.thresholds import macro_f1_at_thresholds, tune_thresholds
from carl.model.encoder import resolve_encoder
from carl.model.folder import ModelFolderError, check_model_folder, check_safetensors, read_json_object

# setfit lists every pair of training texts (np.triu_indices, n(n+1)/2 index pairs, then a
# permutation of them) before it keeps the first max_steps x batch_size pairs it trains on: the 43k
# GoEmotions texts would need about 22 GB. Above this many pairs the same draw (pairs in a uniformly
# random order) is made lazily by _sampled_combinations.
EXACT_PAIR_LIMIT = 2**25
RESULT_FILE = "setfit.json"
HEAD_FILE = "head.safetensors"
BODY_DIR = "body"

# SetFit's documented defaults (setfit.TrainingArguments, SetFitModel: LogisticRegression head),
# recorded with every result; only max_steps and seed are set per benchmark cell
SETFIT_DEFAULTS = {
    "loss": "CosineSimilarityLoss",
    "sampling_strategy": "oversampling",
    "num_iterations": None,
    "body_learning_rate": 2e-5,
    "warmup_proportion": 0.1,
    "l2_weight": 0.01,
    "num_epochs": 1,
    "max_length": None,
    "head": "LogisticRegression()",
    "normalize_embeddings": False,
}


@dataclass
class SetFitResult:
    """A fitted SetFit model that scores texts, with its dev metrics and cost.

    ``weights`` [K, D] and ``bias`` [K] are the head (see the module docstring); ``thresholds``
    [C] are the per-class decision thresholds tuned on dev (multi-label only).
    """

    body: object  # sentence_transformers.SentenceTransformer
    weights: np.ndarray
    bias: np.ndarray
    classes: list[str]
    multi_label: bool
    thresholds: np.ndarray | None
    dev_metrics: dict
    train_seconds: float
    steps: int
    recipe: dict
    spec: dict

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities [N, C] (rows sum to one for single-label data)."""
        embeddings = self.body.encode(  # type: ignore[attr-defined]
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return head_probabilities(np.asarray(embeddings, dtype=np.float64), self.weights, self.bias, self.multi_label)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Class indices [N] (single-label) or multi-hot decisions [N, C] at the dev thresholds."""
        probs = self.predict_proba(texts)
        if self.multi_label:
            return (probs >= self.thresholds).astype(np.int64)
        return probs.argmax(1)


def head_probabilities(embeddings: np.ndarray, weights: np.ndarray, bias: np.ndarray, multi_label: bool) -> np.ndarray:
    """Probabilities [N, C] of the logistic-regression head from embeddings [N, D] (module docstring)."""
    z = embeddings @ weights.T + bias  # [N, K]
    if multi_label:
        return expit(z)
    if weights.shape[0] == 1:
        positive = expit(z[:, 0])
        return np.stack([1.0 - positive, positive], axis=1)
    return softmax(z, axis=1)


def fit_setfit(
    encoder: str,
    train_texts: Sequence[str],
    train_labels,
    dev_texts: Sequence[str],
    dev_labels,
    *,
    classes: Sequence[str],
    multi_label: bool,
    max_steps: int,
    seed: int,
    out_dir: str | Path,
    batch_size: int = 16,
    show_progress: bool = True,
) -> SetFitResult:
    """Fine-tune ``encoder`` with SetFit for ``max_steps`` body steps, fit the head, score dev, save.

    Labels are class indices [N] or, with ``multi_label``, multi-hot [N, C]. When ``out_dir``
    already holds a finished fit of the same encoder, data and settings, it is loaded instead;
    one of other settings is refused (a ValueError naming what differs).
    """
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"SetFit needs at least two classes, got {list(classes)}")
    y_train = _check_labels("train", train_texts, train_labels, n_classes, multi_label)
    y_dev = _check_labels("dev", dev_texts, dev_labels, n_classes, multi_label)
    _check_train_classes(y_train, list(classes), multi_label)
    if max_steps < 1 or batch_size < 1:
        raise ValueError(f"max_steps and batch_size must be at least 1, got {max_steps} and {batch_size}")
    out_dir = Path(out_dir)
    spec = {
        "encoder": encoder,
        "classes": list(classes),
        "multi_label": multi_label,
        "max_steps": max_steps,
        "seed": seed,
        "batch_size": batch_size,
        "data": _data_hash(train_texts, y_train, dev_texts, y_dev),
    }
    if (out_dir / RESULT_FILE).is_file():
        result = load_setfit(out_dir)
        changed = sorted(k for k in spec if result.spec.get(k) != spec[k])
        if changed:
            raise ValueError(f"{out_dir} holds a SetFit fit with other {', '.join(changed)}; use another out_dir")
        return result

    with _quiet(not show_progress):
        result = _train(encoder, train_texts, y_train, classes, multi_label, spec, show_progress)
        dev_probs = result.predict_proba(dev_texts)
        if multi_label:
            result.thresholds = tune_thresholds(dev_probs, y_dev)
            result.dev_metrics = {
                "macro_f1": macro_f1_at_thresholds(dev_probs, y_dev, result.thresholds),
                "per_class_f1": multilabel_per_class_f1(dev_probs >= result.thresholds, y_dev),
            }
        else:
            result.dev_metrics = classification_metrics(dev_probs.argmax(1), y_dev, n_classes)
        save_setfit(result, out_dir)
    return result


def _train(encoder, texts, y: np.ndarray, classes, multi_label: bool, spec: dict, show_progress: bool) -> SetFitResult:
    """SetFit's two phases (body, then head) with its defaults; ``spec`` gives steps, batch size, seed."""
    import setfit
    import torch
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    body = _load_body(encoder)
    head = OneVsRestClassifier(LogisticRegression()) if multi_label else LogisticRegression()
    strategy = "one-vs-rest" if multi_label else None
    model = SetFitModel(model_body=body, model_head=head, multi_target_strategy=strategy)
    with tempfile.TemporaryDirectory() as scratch, _pair_order(len(texts)) as pair_order:
        args = TrainingArguments(
            batch_size=spec["batch_size"],
            max_steps=spec["max_steps"],
            seed=spec["seed"],
            show_progress_bar=show_progress,
            # harness settings, not the recipe: no reporting integrations, no checkpoints
            report_to="none",
            save_strategy="no",
            output_dir=scratch,
        )
        trainer = Trainer(model=model, args=args, train_dataset=_dataset(texts, y))
        trainer.st_trainer.args.dataloader_pin_memory = torch.cuda.is_available()
        if not show_progress:
            for callback in (ProgressCallback, PrinterCallback):
                trainer.remove_callback(callback)
        started = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - started
    weights, bias = _head_coefficients(head, multi_label)
    recipe = {
        **SETFIT_DEFAULTS,
        "batch_size": spec["batch_size"],
        "max_steps": spec["max_steps"],
        "seed": spec["seed"],
        "multi_target_strategy": strategy,
        "pair_order": pair_order,
        "versions": _versions(setfit.__version__),
    }
    steps = int(trainer.st_trainer.state.global_step)
    return SetFitResult(body, weights, bias, list(classes), multi_label, None, {}, train_seconds, steps, recipe, spec)


def save_setfit(result: SetFitResult, out_dir: str | Path) -> None:
    """Write ``body/``, ``head.safetensors`` and, last, ``setfit.json`` under ``out_dir``."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    body_tmp = temporary_beside(out_dir / BODY_DIR, folder=True)
    result.body.save(str(body_tmp), safe_serialization=True, create_model_card=False)  # type: ignore[attr-defined]
    if (out_dir / BODY_DIR).exists():
        shutil.rmtree(out_dir / BODY_DIR)
    os.replace(body_tmp, out_dir / BODY_DIR)
    head_tmp = temporary_beside(out_dir / HEAD_FILE, folder=False)
    save_file({"weights": result.weights, "bias": result.bias}, str(head_tmp))
    os.replace(head_tmp, out_dir / HEAD_FILE)
    record = {
        "classes": result.classes,
        "multi_label": result.multi_label,
        "thresholds": None if result.thresholds is None else result.thresholds.tolist(),
        "dev_metrics": result.dev_metrics,
        "train_seconds": result.train_seconds,
        "steps": result.steps,
        "recipe": result.recipe,
        "spec": result.spec,
    }
    write_text_atomic(out_dir / RESULT_FILE, json.dumps(record, indent=2) + "\n")


def load_setfit(out_dir: str | Path) -> SetFitResult:
    """Load what :func:`save_setfit` wrote (JSON and safetensors only; no code runs)."""
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    out_dir = Path(out_dir)
    record = read_json_object(out_dir / RESULT_FILE)
    check_model_folder(out_dir / BODY_DIR)
    shapes = check_safetensors(out_dir / HEAD_FILE)
    if set(shapes) != {"weights", "bias"}:
        raise ModelFolderError(out_dir / HEAD_FILE, f"expected the tensors weights and bias, found {sorted(shapes)}")
    try:
        classes, multi_label = list(record["classes"]), bool(record["multi_label"])
        thresholds = None if record["thresholds"] is None else np.asarray(record["thresholds"], dtype=np.float64)
        fields = (record["dev_metrics"], float(record["train_seconds"]), int(record["steps"]))
        recipe, spec = record["recipe"], record["spec"]
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFolderError(out_dir / RESULT_FILE, f"missing or malformed field {err}") from None
    head = load_file(str(out_dir / HEAD_FILE))
    body = SentenceTransformer(str(out_dir / BODY_DIR), local_files_only=True, trust_remote_code=False)
    return SetFitResult(body, head["weights"], head["bias"], classes, multi_label, thresholds, *fields, recipe, spec)


def _load_body(encoder: str):
    """The encoder as a sentence-transformers model: its own modules when it is one (modules.json),
    else the transformer with mean pooling (carl's default pooling)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    source = resolve_encoder(encoder)
    local = Path(source).is_dir()
    if local:
        check_model_folder(Path(source))
    if local and not (Path(source) / "modules.json").is_file():
        transformer = Transformer(source)
        pooling = Pooling(transformer.auto_model.config.hidden_size, pooling_mode="mean")
        return SentenceTransformer(modules=[transformer, pooling])
    return SentenceTransformer(source, local_files_only=local, trust_remote_code=False)


@contextlib.contextmanager
def _pair_order(n_texts: int):
    """setfit's own pair order up to :data:`EXACT_PAIR_LIMIT` pairs of ``n_texts`` texts, else
    :func:`_sampled_combinations` in its place; yields the name of the order used."""
    import setfit.sampler

    if n_texts * (n_texts + 1) // 2 <= EXACT_PAIR_LIMIT:
        yield "setfit: every pair listed, then shuffled"
        return
    listed = setfit.sampler.shuffle_combinations
    setfit.sampler.shuffle_combinations = _sampled_combinations
    try:
        yield "carl: pairs drawn uniformly at random, lazily (over 2^25 pairs)"
    finally:
        setfit.sampler.shuffle_combinations = listed


def _sampled_combinations(iterable: Sequence, replacement: bool = True):
    """Pairs (a, b) of ``iterable`` uniformly at random, like setfit's ``shuffle_combinations``
    (index pairs i <= j, or i < j without ``replacement``), without listing every pair first.

    Pairs are drawn with replacement, so a pair may repeat (rarely: setfit keeps at most
    max_steps x batch_size of ~n^2/2 pairs); the stream stops after as many draws as there are pairs.
    """
    n = len(iterable)
    shift = 0 if replacement else 1  # draws from n + 1 values map one-to-one onto i <= j pairs
    rng = np.random.RandomState(seed=42)
    for _ in range((n * (n + 1) // 2) // 4096 + 1):
        a, b = rng.randint(0, n + 1 - shift, size=(2, 4096))
        low, high = np.minimum(a, b), np.maximum(a, b)
        keep = low < high
        for i, j in zip(low[keep], high[keep] - 1 + shift):
            yield iterable[i], iterable[j]


def _dataset(texts: Sequence[str], labels: np.ndarray):
    from datasets import Dataset

    return Dataset.from_dict({"text": list(texts), "label": labels.tolist()})


def _head_coefficients(head, multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
    """W [K, D] and b [K] (float64) of the fitted sklearn head."""
    if multi_label:
        weights = np.concatenate([e.coef_ for e in head.estimators_])
        bias = np.concatenate([e.intercept_ for e in head.estimators_])
    else:
        weights, bias = head.coef_, head.intercept_
    return np.ascontiguousarray(weights, dtype=np.float64), np.ascontiguousarray(bias, dtype=np.float64)


def _check_labels(split: str, texts: Sequence[str], labels, n_classes: int, multi_label: bool) -> np.ndarray:
    """Labels as int64 [N] (class indices) or [N, C] (multi-hot), checked against ``texts``."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{split} texts must be a sequence of strings")
    if not texts:
        raise ValueError(f"{split}: no texts")
    y = np.asarray(labels)
    expected = f"[{len(texts)}, {n_classes}] multi-hot" if multi_label else f"[{len(texts)}] class indices"
    if y.shape != ((len(texts), n_classes) if multi_label else (len(texts),)):
        raise ValueError(f"{split}: {len(texts)} texts need labels of shape {expected}, got shape {y.shape}")
    if y.dtype.kind not in "biuf" or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        raise ValueError(f"{split} labels must be whole numbers ({expected}), got {y.dtype} values")
    y = y.astype(np.int64)
    low, high = (0, 1) if multi_label else (0, n_classes - 1)
    bad = np.flatnonzero(((y < low) | (y > high)).reshape(len(y), -1).any(1))
    if bad.size:
        raise ValueError(f"{split} example {bad[0]}: labels must lie in {low}..{high} ({expected})")
    return y


def _check_train_classes(y: np.ndarray, classes: list[str], multi_label: bool) -> None:
    """Every class needs a training example (and, multi-label, a training text without it)."""
    positives = y.sum(0) if multi_label else np.bincount(y, minlength=len(classes))
    for c, name in enumerate(classes):
        if positives[c] == 0:
            raise ValueError(f"train: class {name!r} (index {c}) has no example; SetFit's head needs every class")
        if multi_label and positives[c] == len(y):
            raise ValueError(f"train: class {name!r} (index {c}) is on every example; its head cannot be fitted")


def _data_hash(train_texts, y_train: np.ndarray, dev_texts, y_dev: np.ndarray) -> str:
    digest = hashlib.sha256()
    for texts, y in ((train_texts, y_train), (dev_texts, y_dev)):
        digest.update(json.dumps(list(texts)).encode())
        digest.update(y.tobytes())
    return digest.hexdigest()[:16]


def _versions(setfit_version: str) -> dict[str, str]:
    import sentence_transformers
    import sklearn
    import transformers

    return {
        "setfit": setfit_version,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "sklearn": sklearn.__version__,
    }


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Silence the info logs and progress bars of setfit, transformers, sentence-transformers and
    datasets while ``enabled``."""
    if not enabled:
        yield
        return
    import logging

    import datasets
    from setfit import logging as setfit_logging
    from transformers.utils import logging as hf_logging

    before = (setfit_logging.get_verbosity(), hf_logging.get_verbosity())
    st_logger = logging.getLogger("sentence_transformers")
    st_level = st_logger.level
    bars = (hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled())
    setfit_logging.set_verbosity_warning()
    hf_logging.set_verbosity_error()
    st_logger.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        setfit_logging.set_verbosity(before[0])
        hf_logging.set_verbosity(before[1])
        st_logger.setLevel(st_level)
        if bars[0]:
            hf_logging.enable_progress_bar()
        if bars[1]:
            datasets.enable_progress_bars()
