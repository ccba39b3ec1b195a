"""One typed configuration for a CARL run: defaults, TOML loading, ``--set`` overrides.

Every section is a dataclass; ``load_config`` merges a TOML file and ``key=value``
overrides into the defaults, rejecting unknown keys with a suggestion and checking types.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

POOLINGS = ("mean", "cls")
SELECTIONS = ("saliency", "random")
REPLACEMENTS = ("hotflip", "random", "mask", "embedding")
SALIENCY_SOURCES = ("total", "affect")
PTD_SCHEDULES = ("constant", "warmup", "decay")
RESUME_MISMATCH = ("error", "warn")
CLASS_WEIGHTS = ("none", "balanced")
PRESERVE_KINDS = ("distill", "relational", "l2sp")


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


@dataclass(frozen=True)
class Term:
    """One component ``weight * L`` of an objective's total loss.

    ``loss`` names the loss (``carl/objectives``: classify, mcl, mse, preserve, ptd, simcse); ``weight_key`` is the
    ``ObjectiveConfig`` key holding its weight (empty: the fixed ``weight``); ``targets`` says what
    the loss contrasts against (mcl: ``soft`` VA-distance targets, ``hard`` binned VA classes, or
    ``rank``: Rank-N-Contrast, the keys at least as far in VA as the positive are its negatives).
    ``ObjectiveConfig.terms`` fills in ``weight``.
    """

    loss: str
    weight_key: str = ""
    targets: str = ""
    weight: float = 1.0


# keeps the trained encoder near its starting point (objective.preserve.kind, weight 0.3 by default;
# docs/method.md, "Choosing the weight"); weight 0: absent
PRESERVE = Term("preserve", "preserve_weight")
# every objective as its terms; adding an objective is one row here (plus its loss file)
OBJECTIVE_TERMS: dict[str, tuple[Term, ...]] = {
    "carl": (Term("mcl", "mcl_weight", "soft"), Term("mse", "mse_weight"), Term("ptd", "ptd_weight"), PRESERVE),
    "mcl": (Term("mcl", "mcl_weight", "soft"), Term("mse", "mse_weight"), PRESERVE),
    "supcon-hard": (Term("mcl", "mcl_weight", "hard"), Term("mse", "mse_weight"), PRESERVE),
    "mse": (Term("mse", "mse_weight"), PRESERVE),
    "simcse": (Term("simcse"), PRESERVE),
    # emotion classes (CE or BCE by data.multi_label); VA regression only with objective.va_weight > 0
    "classify": (Term("classify", "classify_weight"), Term("mse", "va_weight"), PRESERVE),
    "mcl-classify": (
        Term("classify", "classify_weight"),
        Term("mcl", "mcl_weight", "soft"),
        Term("mse", "va_weight"),
        PRESERVE,
    ),
    "carl-classify": (
        Term("classify", "classify_weight"),
        Term("mcl", "mcl_weight", "soft"),
        Term("ptd", "ptd_weight"),
        Term("mse", "va_weight"),
        PRESERVE,
    ),
    # Rank-N-Contrast instead of soft targets (docs/method.md, "Variants under study")
    "mcl-rank": (Term("mcl", "mcl_weight", "rank"), Term("mse", "mse_weight"), PRESERVE),
    "mcl-rank-classify": (
        Term("classify", "classify_weight"),
        Term("mcl", "mcl_weight", "rank"),
        Term("mse", "va_weight"),
        PRESERVE,
    ),
    "carl-rank": (Term("mcl", "mcl_weight", "rank"), Term("mse", "mse_weight"), Term("ptd", "ptd_weight"), PRESERVE),
    "carl-rank-classify": (
        Term("classify", "classify_weight"),
        Term("mcl", "mcl_weight", "rank"),
        Term("ptd", "ptd_weight"),
        Term("mse", "va_weight"),
        PRESERVE,
    ),
}
OBJECTIVES = tuple(OBJECTIVE_TERMS)


def describe_objectives() -> str:
    """One line per objective: its terms and weights, e.g. ``mcl (soft) x objective.mcl_weight``."""

    def term(t: Term) -> str:
        weight = f"objective.{t.weight_key}" if t.weight_key else f"{t.weight:g}"
        return f"{t.loss}{f' ({t.targets})' if t.targets else ''} x {weight}"

    return "\n".join(f"  {name} = {' + '.join(map(term, terms))}" for name, terms in OBJECTIVE_TERMS.items())


@dataclass
class DataConfig:
    """Where the training sentences, their VA labels and their emotion classes come from.

    ``path`` empty means the bundled EmoBank (official split). A user file is CSV, TSV or
    JSONL with a text column and continuous VA columns on ``scale``, a categorical
    ``label_column``, or both (multi-task). A labelled row's VA comes from its VA columns when
    the file has them, else from ``label_mapping``; its classes come from the label column,
    whose label set is read from the training file.
    """

    path: str = ""
    dev_path: str = ""
    file_format: str = ""
    text_column: str = "text"
    valence_column: str = "valence"
    arousal_column: str = "arousal"
    scale: str = "1-5"
    label_column: str = ""
    label_mapping: str = "goemotions"
    max_length: int = 128
    limit: int = 0  # use only the first N training sentences (0 = all); for smoke runs
    multi_label: bool = False  # several labels per text (multi-hot targets); needs label_column
    label_delimiter: str = ""  # multi-label: the one character between labels in a cell ("": JSON lists only)
    # no dev_path and a run that selects on dev: hold out this stratified share of train as dev (0: none)
    dev_fraction: float = 0.1
    dev_seed: int = 0  # seed of the held-out dev split

    def check(self) -> None:
        """Check the label and dev-split keys; raise ConfigError naming the key."""
        if not (math.isfinite(self.dev_fraction) and 0.0 <= self.dev_fraction < 1.0):
            raise ConfigError(f"data.dev_fraction = {self.dev_fraction!r} must lie in [0, 1)")
        if self.multi_label and not self.label_column:
            raise ConfigError("data.multi_label = true needs data.label_column (the column holding the labels)")
        if self.label_delimiter and not self.multi_label:
            raise ConfigError(f"data.label_delimiter = {self.label_delimiter!r} needs data.multi_label = true")
        if self.label_delimiter and (len(self.label_delimiter) != 1 or self.label_delimiter in '"\r\n'):
            raise ConfigError(
                f"data.label_delimiter = {self.label_delimiter!r} must be one character, not a quote or a line break"
            )


@dataclass
class ModelConfig:
    """The encoder: a Hugging Face name, a local path or an alias such as ``minilm-l6``."""

    encoder: str = "minilm-l6"
    pooling: str = "mean"
    projection_dim: int = 128  # 0: no projection MLP, the contrast acts on the sentence embedding


@dataclass
class MCLConfig:
    """Momentum continuous-label contrastive learning."""

    momentum: float = 0.999
    queue_size: int = 4096
    temperature: float = 0.1  # tau on query-key cosine similarities
    label_temperature: float = 0.5  # sigma on squared distances of standardised VA labels
    hard_bins: int = 3  # supcon-hard: quantile bins per VA dimension


@dataclass
class SimCSEConfig:
    """Unsupervised SimCSE: two dropout views of each sentence, in-batch InfoNCE."""

    temperature: float = 0.05


@dataclass
class PTDConfig:
    """Gradient-saliency perturbed token detection."""

    ratio: float = 0.15
    sentence_fraction: float = 0.5  # share of each batch's sentences perturbed and detected
    selection: str = "saliency"
    replacement: str = "hotflip"
    detector_hidden: int = 0  # 0: a linear token head; >0: one hidden layer of this size
    # variants under study (docs/method.md); the defaults are CARL as reconstructed
    saliency_source: str = "total"  # total: gradient of the whole clean loss | affect: of the VA/class terms alone
    epsilon: float = 1.0  # replacement = embedding: L2 radius of each perturbed token's embedding shift
    ascent_steps: int = 1  # replacement = embedding: normalised gradient-ascent steps on the affect loss
    consistency_weight: float = 0.0  # replacement = embedding: clean vs perturbed affect predictions (MSE / sym. KL)
    as_negative: bool = False  # the perturbed sentences' momentum keys join the contrast as negatives


@dataclass
class PreserveConfig:
    """The preservation term (weight ``objective.preserve_weight``; see carl/objectives/preservation.py)."""

    kind: str = "distill"  # distill | relational (toward the frozen encoder's embeddings) | l2sp (weights)


@dataclass
class ObjectiveConfig:
    """Which objective (one of ``OBJECTIVE_TERMS``) and the weights of its total loss ``sum_i w_i L_i``."""

    # mcl by the variant study's pre-registered rule (docs/method.md, "Deciding on dev"); carl is a named option
    name: str = "mcl"
    mcl_weight: float = 1.0
    ptd_weight: float = 1.0
    mse_weight: float = 1.0
    classify_weight: float = 1.0  # the classification term of classify, mcl-classify, carl-classify
    va_weight: float = 0.0  # the classification objectives' VA regression term (0: no VA head)
    preserve_weight: float = 0.3  # the preservation term of every objective (0: absent)
    class_weights: str = "none"  # none | balanced (CE: N / (C n_c); BCE: positives weigh (N - n_c) / n_c)
    ptd_schedule: str = "constant"  # constant | warmup (0 -> ptd_weight) | decay (ptd_weight -> 0)
    ptd_schedule_fraction: float = 0.5  # the share of training over which warmup/decay is linear
    mcl: MCLConfig = field(default_factory=MCLConfig)
    ptd: PTDConfig = field(default_factory=PTDConfig)
    simcse: SimCSEConfig = field(default_factory=SimCSEConfig)
    preserve: PreserveConfig = field(default_factory=PreserveConfig)

    def terms(self) -> dict[str, Term]:
        """The objective's terms by loss name, weights resolved to numbers; zero-weight terms dropped."""
        terms = {}
        for term in OBJECTIVE_TERMS[self.name]:
            weight = getattr(self, term.weight_key) if term.weight_key else term.weight
            if weight > 0:
                terms[term.loss] = dataclasses.replace(term, weight=weight)
        if not set(terms) - {PRESERVE.loss}:  # preservation alone would train nothing new
            keys = ", ".join(
                f"objective.{t.weight_key}" for t in OBJECTIVE_TERMS[self.name] if t.weight_key and t != PRESERVE
            )
            raise ConfigError(f"objective {self.name!r} has no term with a positive weight: raise {keys}")
        return terms


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    epochs: float = 2.0
    max_steps: int = 0  # >0 overrides epochs
    batch_size: int = 32  # per process, or global with split_batches
    split_batches: bool = False  # True: batch_size is global and each batch is split over processes
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16
    seed: int = 42
    checkpoint_every: int = 100  # 0: only at the end
    keep_checkpoints: int = 2  # >= 1: the newest checkpoints kept in <run>/checkpoints
    num_threads: int = 0  # 0: torch's default
    dropout: bool = False  # true: the trained modules in train mode (dropout on); false: the eval mode
    # from_pretrained leaves them in (simcse switches dropout on for its two views either way)
    # model selection on dev (see carl.training.selection): evaluate every eval_every steps (0: at the end
    # of each epoch; always at the last step), export the step best on select_metric ("": no dev
    # evaluation, the last step is exported); stop after early_stopping_patience evaluations without
    # improvement (0: never)
    eval_every: int = 0
    select_metric: str = "va_pearson_mean"
    early_stopping_patience: int = 0
    # resuming when the training data or encoder changed, or a process's RNG state is missing:
    # error (refuse) or warn (resume anyway; the run no longer reproduces an uninterrupted one)
    resume_mismatch: str = "error"


@dataclass
class CarlConfig:
    """The whole run configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> CarlConfig:
        """Check enumerations and ranges; raise ConfigError naming the key."""
        self.data.check()
        checks = [
            ("objective.name", self.objective.name, OBJECTIVES),
            ("model.pooling", self.model.pooling, POOLINGS),
            ("objective.ptd.selection", self.objective.ptd.selection, SELECTIONS),
            ("objective.ptd.replacement", self.objective.ptd.replacement, REPLACEMENTS),
            ("train.mixed_precision", self.train.mixed_precision, ("no", "bf16", "fp16")),
            ("train.resume_mismatch", self.train.resume_mismatch, RESUME_MISMATCH),
            ("objective.class_weights", self.objective.class_weights, CLASS_WEIGHTS),
            ("objective.ptd.saliency_source", self.objective.ptd.saliency_source, SALIENCY_SOURCES),
            ("objective.ptd_schedule", self.objective.ptd_schedule, PTD_SCHEDULES),
            ("objective.preserve.kind", self.objective.preserve.kind, PRESERVE_KINDS),
        ]
        for key, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"{key} = {value!r}: choose one of {', '.join(allowed)}")
        self.objective.terms()
        if not 0.0 <= self.objective.mcl.momentum < 1.0:
            raise ConfigError("objective.mcl.momentum must lie in [0, 1)")
        for key in ("objective.ptd.ratio", "objective.ptd.sentence_fraction", "objective.ptd_schedule_fraction"):
            if not 0.0 < _get(self, key) <= 1.0:
                raise ConfigError(f"{key} must lie in (0, 1]")
        for key in (
            "objective.mcl.temperature",
            "objective.mcl.label_temperature",
            "train.epochs",
            "train.batch_size",
            "train.learning_rate",
            "train.gradient_accumulation_steps",
            "data.max_length",
            "objective.mcl.hard_bins",
            "objective.simcse.temperature",
            "objective.ptd.epsilon",
            "objective.ptd.ascent_steps",
        ):
            value = _get(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key} = {value!r} must be a positive finite number")
        if "classify" in self.objective.terms() and not self.data.label_column:
            raise ConfigError(
                f"objective.name = {self.objective.name!r} trains a classifier: set data.label_column "
                "(the column holding each text's emotion label)"
            )
        for key in (
            "objective.mcl.queue_size",
            "objective.mcl_weight",
            "objective.ptd_weight",
            "objective.mse_weight",
            "objective.classify_weight",
            "objective.va_weight",
            "objective.preserve_weight",
            "train.max_steps",
            "train.weight_decay",
            "train.warmup_ratio",
            "train.head_learning_rate",
            "train.max_grad_norm",
            "data.limit",
            "data.dev_seed",
            "model.projection_dim",
            "objective.ptd.detector_hidden",
            "objective.ptd.consistency_weight",
        ):
            value = _get(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{key} = {value!r} must be a non-negative finite number")
        for key, low, high in (
            ("train.warmup_ratio", 0, 1),
            ("train.keep_checkpoints", 1, None),
            ("train.checkpoint_every", 0, None),
            ("train.num_threads", 0, None),
            ("train.eval_every", 0, None),
            ("train.early_stopping_patience", 0, None),
            ("train.seed", 0, 2**32 - 1),
        ):
            value = _get(self, key)
            if value < low or (high is not None and value > high):
                bound = f"lie in [{low}, {high}]" if high is not None else f"be at least {low}"
                raise ConfigError(f"{key} = {value!r} must {bound}")
        self._check_variants()
        if self.train.select_metric:
            from carl.training.selection import DEV_METRICS  # torch and scipy: only when selecting

            if self.train.select_metric not in DEV_METRICS:
                raise ConfigError(
                    f"train.select_metric = {self.train.select_metric!r}: choose one of "
                    f'{", ".join(DEV_METRICS)}, or "" for no dev evaluation'
                )
        return self

    def _check_variants(self) -> None:
        """The PTD variants need what they act on: a ptd term, an affect term, an mcl term."""
        o, terms = self.objective, self.objective.terms()
        affect = {"mse", "classify"} & set(terms)
        needs = [
            ("objective.ptd.saliency_source", o.ptd.saliency_source != "total", "affect"),
            ("objective.ptd.replacement", o.ptd.replacement == "embedding", "affect"),
            ("objective.ptd.as_negative", o.ptd.as_negative, "mcl"),
            ("objective.ptd_schedule", o.ptd_schedule != "constant", ""),
        ]
        for key, on, also in needs:
            if on and "ptd" not in terms:
                raise ConfigError(f"{key} acts on the ptd term, which objective {o.name!r} does not have")
            if on and also == "affect" and not affect:
                raise ConfigError(
                    f"{key} = {_get(self, key)!r} needs an affect term (VA regression or classification): "
                    f"objective {o.name!r} has none with a positive weight"
                )
            if on and also == "mcl" and "mcl" not in terms:
                raise ConfigError(f"{key} = true needs the mcl term, which objective {o.name!r} does not have")
        if o.ptd.consistency_weight > 0 and o.ptd.replacement != "embedding":
            raise ConfigError(
                "objective.ptd.consistency_weight > 0 needs objective.ptd.replacement = embedding "
                "(a token substitution changes the affect it would keep consistent)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """Serialise as TOML (nested tables) that ``load_config`` reads back."""
        return _dict_to_toml(self.to_dict())


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _dict_to_toml(d: dict[str, Any], prefix: str = "") -> str:
    scalars = [f"{k} = {json.dumps(v)}" for k, v in d.items() if not isinstance(v, dict)]
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(_dict_to_toml(v, f"{prefix}.{k}" if prefix else k))
    return "\n".join(line for line in out if line) + "\n"


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(key: str, value: Any, target: Any) -> Any:
    """Convert ``value`` (from TOML or a ``--set`` string) to ``target`` or raise."""
    if isinstance(target, types.UnionType):  # e.g. ``str | None``
        target = next(t for t in target.__args__ if t is not type(None))
    if isinstance(value, str) and target is not str:
        try:
            value = json.loads(value.lower() if target is bool else value)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{key}: {value!r} is not a valid {target.__name__}") from err
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, target) or (target is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {target.__name__}, got {value!r}")
    return value


def _set(cfg: Any, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    obj = cfg
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            here = ".".join(parts[:depth])
            options = [f"{here}.{n}" if here else n for n in names]
            guess = difflib.get_close_matches(dotted, _all_keys(cfg) if depth == 0 else options, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else f"; known: {', '.join(options)}"
            raise ConfigError(f"unknown config key {dotted!r}{hint}")
        if depth == len(parts) - 1:
            target = _field_type(type(obj), part)
            if dataclasses.is_dataclass(target):
                raise ConfigError(f"{dotted!r} is a section; set one of its keys")
            setattr(obj, part, _coerce(dotted, value, target))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{'.'.join(parts[: depth + 1])!r} is not a section")


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        keys += _all_keys(value, name + ".") if dataclasses.is_dataclass(value) else [name]
    return keys


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"section.key": value}``."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CarlConfig:
    """Defaults, then the TOML file at ``path``, then ``key=value`` overrides; validated."""
    cfg = CarlConfig()
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: {err}") from err
        for key, value in flatten(data).items():
            try:
                _set(cfg, key, value)
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}") from err
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        _set(cfg, key.strip(), value.strip())
    return cfg.validate()


def config_defaults() -> dict[str, Any]:
    """Every settable dotted key with its default, for ``--help``."""
    cfg = CarlConfig()
    return {key: _get(cfg, key) for key in _all_keys(cfg)}
