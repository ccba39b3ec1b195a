"""Model selection on dev: the dev metrics, the best-so-far state, and the best weights on disk.

Every ``train.eval_every`` steps (0: at the end of each epoch), and always at the last step, the
trainer scores the model's own head predictions on the dev split with every metric of
:data:`DEV_METRICS` whose head the run trains. The model is *better* when the selection metric
``train.select_metric`` strictly improves in the metric's direction (a NaN never improves);
its weights then go to ``<run>/selection/step-<N>/`` and, at the end, the best step is exported.
``train.early_stopping_patience = P > 0`` stops training after P evaluations in a row without
improvement.

``selection/step-<N>/`` holds ``model.safetensors`` (the query encoder and heads: the momentum
key encoder and queue are training state, not part of the exported model) and ``manifest.json``
(size and sha256, see ``manifest``), written under a temporary name and renamed when complete.
The :class:`Selection` state (best step, value, dev metrics, evaluations since the best) travels
in every checkpoint's ``trainer_state.json``, so a resumed run continues with the best-so-far state
of its checkpoint; ``selection/`` keeps the best weights that the current state or any kept
checkpoint names.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from carl.evaluation.metrics import pearson, per_class_f1
from carl.evaluation.thresholds import macro_f1_at_thresholds, tune_thresholds
from carl.training.errors import CheckpointError
from carl.training.manifest import verify_manifest, write_manifest

if TYPE_CHECKING:
    from carl.config import CarlConfig

SELECTION_DIR = "selection"
DEV_BATCH_SIZE = 64  # sentences per dev forward pass (no gradients: larger than a training batch is fine)
WEIGHTS = "model.safetensors"
# training state, not part of the exported model: left out of the best weights
TRAINING_ONLY = ("key_encoder.", "queue.")


@dataclass(frozen=True)
class DevMetric:
    """One dev metric: the head whose predictions it scores, its direction, and how to compute it.

    ``compute(predictions, targets)`` takes the head's dev predictions and the dev targets
    (for ``va``: standardised VA [N, 2] and labels [N, 2]; for ``class_logits``: logits [N, C] and
    classes [N] or multi-hot targets [N, C]) and returns a float.
    """

    name: str
    head: str
    higher_is_better: bool
    compute: Callable[[np.ndarray, np.ndarray], float]


def class_macro_f1(logits: np.ndarray, targets: np.ndarray) -> float:
    """Macro-F1 of the classifier's decisions: argmax for classes [N]; for multi-hot targets [N, C]
    each class at the per-class threshold tuned on these dev predictions, i.e. the metric the
    exported model is scored with (a fixed 0.5 is a weak proxy: rare labels rarely reach it)."""
    if targets.ndim == 2:
        probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        return macro_f1_at_thresholds(probs, targets, tune_thresholds(probs, targets))
    return float(np.mean(per_class_f1(logits.argmax(1), targets, logits.shape[1])))


DEV_METRICS: dict[str, DevMetric] = {
    m.name: m
    for m in (
        DevMetric("va_pearson_valence", "va", True, lambda pred, true: pearson(pred[:, 0], true[:, 0])),
        DevMetric("va_pearson_arousal", "va", True, lambda pred, true: pearson(pred[:, 1], true[:, 1])),
        DevMetric(
            "va_pearson_mean",
            "va",
            True,
            lambda pred, true: (pearson(pred[:, 0], true[:, 0]) + pearson(pred[:, 1], true[:, 1])) / 2,
        ),
        DevMetric("class_macro_f1", "class_logits", True, class_macro_f1),
    )
}


def dev_metrics(predictions: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> dict[str, float]:
    """Every registered metric whose head has predictions: ``{name: value}`` in registry order."""
    return {
        name: m.compute(predictions[m.head], targets[m.head])
        for name, m in DEV_METRICS.items()
        if m.head in predictions
    }


def selection_metric(cfg: CarlConfig, trained_heads: Iterable[str]) -> tuple[DevMetric | None, str]:
    """The dev metric a run selects on (None: it exports the last step), and a log line when the
    default metric does not apply.

    The default ``train.select_metric`` becomes ``class_macro_f1`` for a run that trains a
    classifier; a default metric whose head the run does not train means no selection; an explicit
    one raises :class:`~carl.config.ConfigError`.
    """
    from carl.config import ConfigError, TrainConfig

    if not cfg.train.select_metric:
        return None, ""
    trained = set(trained_heads)
    default = cfg.train.select_metric == TrainConfig.select_metric
    metric = DEV_METRICS["class_macro_f1" if default and "class_logits" in trained else cfg.train.select_metric]
    if metric.head in trained:
        return metric, ""
    if default:
        return None, (
            f"dev: objective {cfg.objective.name!r} trains no {metric.head} head, which the default "
            f"train.select_metric scores: no model selection, the last step is exported"
        )
    raise ConfigError(
        f"train.select_metric = {metric.name!r} scores the {metric.head} head, which this run "
        f"does not train (objective {cfg.objective.name!r}, objective.mse_weight = "
        f'{cfg.objective.mse_weight}); set train.select_metric = "" to export the last step'
    )


@dataclass
class Selection:
    """The best-so-far state of a run's model selection (JSON-serialisable, in every checkpoint)."""

    metric: str
    best_step: int | None = None
    best_value: float | None = None
    best_dev: dict[str, float] = field(default_factory=dict)
    evaluations_since_best: int = 0

    def update(self, step: int, values: dict[str, float]) -> bool:
        """Record the evaluation ``values`` at ``step``; True when it is the new best."""
        value = values[self.metric]
        higher = DEV_METRICS[self.metric].higher_is_better
        better = math.isfinite(value) and (
            self.best_value is None or (value > self.best_value if higher else value < self.best_value)
        )
        if better:
            self.best_step, self.best_value, self.best_dev = step, value, dict(values)
            self.evaluations_since_best = 0
        else:
            self.evaluations_since_best += 1
        return better

    def exhausted(self, patience: int) -> bool:
        """True when ``patience`` > 0 evaluations in a row brought no improvement."""
        return patience > 0 and self.evaluations_since_best >= patience

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict, metric: str) -> Selection:
        """The state saved by :meth:`to_dict`; ValueError when it is malformed or for another metric."""
        if not isinstance(saved, dict) or saved.get("metric") != metric:
            raise ValueError(f"selection state {saved!r} is not one for the metric {metric!r}")
        state = cls(
            metric, saved["best_step"], saved["best_value"], dict(saved["best_dev"]), saved["evaluations_since_best"]
        )
        if not (isinstance(state.evaluations_since_best, int) and state.evaluations_since_best >= 0):
            raise ValueError(f"evaluations_since_best = {state.evaluations_since_best!r} is not a count")
        if (state.best_step is None) != (state.best_value is None) or not (
            state.best_step is None or (isinstance(state.best_step, int) and state.best_step >= 0)
        ):
            raise ValueError(f"best_step = {state.best_step!r} and best_value = {state.best_value!r} do not agree")
        return state


# ----------------------------------------------------------------------- dev predictions
@torch.no_grad()
def predict_dev(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    heads: tuple[str, ...],
    device: torch.device,
    autocast,
) -> dict[str, np.ndarray]:
    """The model's ``heads`` outputs over the dev ``batches`` (in batch order), dropout off.

    ``model`` is the unwrapped CarlModel; its train/eval mode is restored afterwards and no random
    number is drawn, so an evaluation leaves the training trajectory unchanged.
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    outputs: dict[str, list[np.ndarray]] = {head: [] for head in heads}
    try:
        for batch in batches:
            with autocast():
                out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), heads=heads)
            for head in heads:
                outputs[head].append(out[head].float().cpu().numpy())
    finally:
        for module, training in modes.items():
            module.train(training)
    return {head: np.concatenate(parts) for head, parts in outputs.items()}


# --------------------------------------------------------------------------- best weights
def best_folder(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / SELECTION_DIR / f"step-{step}"


def exported_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors that the exported model holds (everything but the key encoder and queue)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith(TRAINING_ONLY)}


def save_best(run_dir: Path, model: torch.nn.Module, step: int) -> Path:
    """Write the model's exported tensors to ``selection/step-<step>/`` atomically, with a manifest."""
    final = best_folder(run_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(exported_state(model), str(tmp / WEIGHTS))
    write_manifest(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def verify_best(run_dir: Path, step: int) -> None:
    """Raise CheckpointError unless ``selection/step-<step>/`` is complete and matches its manifest."""
    folder = best_folder(run_dir, step)
    if WEIGHTS not in verify_manifest(folder):
        raise CheckpointError(f"{folder / 'manifest.json'} does not list {WEIGHTS}")


def load_best(run_dir: Path, model: torch.nn.Module, step: int) -> None:
    """Verify, then load the best weights of ``step`` into ``model`` (its key encoder and queue untouched)."""
    verify_best(run_dir, step)
    path = best_folder(run_dir, step) / WEIGHTS
    try:
        tensors = load_file(str(path))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except (OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path} does not fit the model: {err}") from err
    missing = [k for k in missing if not k.startswith(TRAINING_ONLY)]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def prune_best(run_dir: Path, current: int | None) -> None:
    """Delete best weights that neither the ``current`` best step nor any kept checkpoint names."""
    root = Path(run_dir) / SELECTION_DIR
    if not root.is_dir():
        return
    keep = {current}
    for state_file in (Path(run_dir) / "checkpoints").glob("step-*/trainer_state.json"):
        try:
            keep.add(json.loads(state_file.read_text(encoding="utf-8"))["selection"]["best_step"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable checkpoint cannot be resumed from; its best need not be kept
    for folder in root.iterdir():
        name = folder.name.removeprefix(".").removesuffix(".tmp")
        if not (name.startswith("step-") and name[5:].isdigit()):
            continue
        if folder.name != name or int(name[5:]) not in keep:
            shutil.rmtree(folder, ignore_errors=True)
