"""The CARL training loop on accelerate: one code path for CPU, one GPU and several processes.

The loop trains the terms of ``objective.name`` (``carl.config.OBJECTIVE_TERMS``), each with its
resolved weight; it never decodes the objective's name. One optimizer step (objective ``carl``):
  1. clean pass: query embeddings, momentum keys, MCL (+ auxiliary MSE) loss; backward, which
     also leaves dL/d(word embeddings) -- the saliency -- at no extra pass;
  2. perturbed pass: the most salient words are replaced (hotflip by default) and the token
     head learns to detect them (BCE); backward;
  3. clip, AdamW step, LR schedule, EMA update of the key encoder, enqueue the gathered keys.
A classification term (``classify``) adds CE/BCE on the clean pass, so PTD's saliency comes from
the total clean loss; before export the classifier's temperature (and multi-label thresholds) are
fitted on dev (``carl/training/calibrate.py``). The variants under study (``objective.ptd.*``
switches, ``objective.ptd_schedule``, ``train.dropout``; docs/method.md) change steps 1-2: a
saliency of the affect terms alone or perturbed keys in the contrast take the saliency before the
clean backward; an ``embedding`` replacement shifts word embeddings instead of replacing tokens.
A preservation term (``preserve``) adds, on the clean pass, a pull toward the starting encoder: its embeddings of the training sentences (one inference
pass per run, cached: ``carl/training/teacher.py``) or its weights (L2-SP).
"""

from __future__ import annotations

import gc
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from carl.atomic import write_text_atomic
from carl.config import CarlConfig, ConfigError, Term, flatten, load_config
from carl.data.batching import LengthGroupedBatchSampler, PaddingCollator, TokenizedDataset
from carl.data.sources import describe_data, load_training_data
from carl.model.carl_model import CarlModel, CarlOutput
from carl.model.encoder import load_backbone, position_limit, resolve_encoder
from carl.model.export import export_model
from carl.model.momentum import gather_across_processes
from carl.objectives import (
    MomentumContrastiveLoss,
    MultiLabelClassificationLoss,
    ObjectiveOutput,
    PerturbedTokenDetection,
    PreservationLoss,
    SimCSELoss,
    SingleLabelClassificationLoss,
    VARegressionLoss,
)
from carl.objectives.classification import balanced_class_weights, positive_class_weights
from carl.objectives.embedding_perturbation import adversarial_shift, consistency_loss
from carl.objectives.perturbed_token_detection import sample_sentences, schedule_factor
from carl.objectives.rank_n_contrast import RankNContrastLoss
from carl.training.calibrate import classifier_metadata
from carl.training.checkpoint import TrainingState, latest_checkpoint, resume_checkpoint, save_checkpoint
from carl.training.errors import CheckpointError, TrainingDiverged
from carl.training.fingerprint import fingerprint_changes, run_fingerprint
from carl.training.run_info import environment_info
from carl.training.selection import (
    DEV_BATCH_SIZE,
    DEV_METRICS,
    Selection,
    dev_metrics,
    load_best,
    predict_dev,
    prune_best,
    save_best,
    selection_metric,
    verify_best,
)
from carl.training.teacher import TEACHER_FILE, source_weights, teacher_embeddings, teacher_key

# the query-encoder heads each term trains; every term but ``ptd`` reads the clean query pass
TERM_HEADS: dict[str, tuple[str, ...]] = {
    "mcl": ("query",),
    "mse": ("va",),
    "simcse": (),
    "ptd": ("token_logits",),
    "classify": ("class_logits",),
    "preserve": (),  # the sentence embedding, which every clean pass computes
}
PERTURBED_PASS_TERMS = ("ptd",)
# the terms whose loss is the affect loss: PTD's saliency_source = affect, the embedding perturbation
AFFECT_TERMS = ("mse", "classify")
# query-pass views of each sentence a term needs (SimCSE: two dropout views)
VIEWS = {"simcse": 2}
# settings that may change between a run and its resumption (they do not alter the maths)
RESUMABLE_CHANGES = ("train.num_threads", "train.checkpoint_every", "train.keep_checkpoints", "train.resume_mismatch")


@dataclass
class PerturbedView:
    """The B' sentences PTD perturbed: their batch ``rows`` [B'], ``attention_mask`` and
    ``input_ids`` [B', T'] (tokens replaced), ``positions`` [B', T'] bool, and for an embedding
    perturbation the shift ``delta`` [B', T', H] of the word embeddings (None otherwise)."""

    rows: torch.Tensor
    attention_mask: torch.Tensor
    input_ids: torch.Tensor
    positions: torch.Tensor
    delta: torch.Tensor | None = None


class CarlTrainer:
    """Train CARL (or an ablation) into ``output_dir``; resumes from its last checkpoint.

    ``on_step_end`` callbacks run after each optimizer step (and its checkpoint), given the trainer.
    """

    def __init__(
        self,
        config: CarlConfig,
        output_dir: str | Path,
        *,
        show_progress: bool = True,
        on_step_end: list[Callable[[CarlTrainer], None]] | None = None,
    ):
        self.cfg = config
        self.out = Path(output_dir)
        self.show_progress = show_progress
        self.on_step_end = list(on_step_end or [])
        self.terms = config.objective.terms()
        clean_pass = {
            "mcl": self._mcl_term,
            "mse": self._mse_term,
            "simcse": self._simcse_term,
            "classify": self._classify_term,
            "preserve": self._preserve_term,
        }
        self.clean_terms = {name: clean_pass[name] for name in self.terms if name not in PERTURBED_PASS_TERMS}
        self.views = max(VIEWS.get(name, 1) for name in self.terms)
        if config.train.num_threads > 0:
            torch.set_num_threads(config.train.num_threads)
        self.accelerator = Accelerator(
            # without a GPU, accelerate needs cpu=True to form a gloo group under torchrun
            cpu=not torch.cuda.is_available(),
            mixed_precision=config.train.mixed_precision,
            gradient_accumulation_steps=config.train.gradient_accumulation_steps,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        set_seed(config.train.seed)
        self._build()

    # ----------------------------------------------------------------- set-up
    def _build(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        va = bool({"mcl", "mse"} & set(self.terms))  # the terms that read VA labels
        self.select_metric, select_note = selection_metric(cfg, self._trained_heads())
        self.train_data, self.dev_data = load_training_data(
            cfg.data, verbose=acc.is_main_process, va=va, hold_out=self.select_metric is not None
        )
        if select_note:
            acc.print(select_note)
        self._check_queue_size(len(self.train_data))
        backbone, self.tokenizer = load_backbone(cfg.model.encoder)
        classify = "classify" in self.terms
        self.model = CarlModel(
            backbone,
            pooling=cfg.model.pooling,
            projection_dim=cfg.model.projection_dim,
            momentum=cfg.objective.mcl.momentum,
            queue_size=cfg.objective.mcl.queue_size,
            detector_hidden=cfg.objective.ptd.detector_hidden,
            use_key_encoder="mcl" in self.terms,
            num_classes=len(self.train_data.classes) if classify else 0,
        )
        if self.views > 1:
            # the views differ only by dropout, which a backbone loaded by from_pretrained has off
            # (the other terms train in that eval mode unless train.dropout = true)
            backbone.train()
        if cfg.train.dropout:  # every module, the momentum key encoder too: its keys are dropout views
            self.model.train()
        labels = torch.as_tensor(self.train_data.labels, dtype=torch.float32)
        if va:  # else the labels may be NaN (classes alone), and the statistics stay 0 and 1
            self.model.set_label_statistics(labels)
        self.losses = {name: self._build_loss(term, labels) for name, term in self.terms.items()}

        dataset = TokenizedDataset(
            self.train_data.texts,
            self.train_data.labels,
            self.tokenizer,
            cfg.data.max_length,
            targets=self.train_data.targets if classify else None,
        )
        # every process draws the same global batches and takes its slice of each (the sampler
        # shards, not accelerate, whose even_batches would repeat sentences to fill a short batch)
        self.sampler = LengthGroupedBatchSampler(
            dataset.lengths(),
            self._global_batch(),
            seed=cfg.train.seed,
            num_shards=acc.num_processes,
            shard=acc.process_index,
        )
        # the loader's own generator keeps iterator creation from consuming the global RNG,
        # so that a resumed run draws the same dropout masks as an uninterrupted one
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            collate_fn=PaddingCollator(self.tokenizer.pad_token_id),
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )
        optimizer = torch.optim.AdamW(self._parameter_groups(), lr=cfg.train.learning_rate)
        self.model, self.optimizer = acc.prepare(self.model, optimizer)
        self.steps_per_epoch = max(1, len(self.loader) // cfg.train.gradient_accumulation_steps)
        self.total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * self.steps_per_epoch)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(cfg.train.warmup_ratio * self.total_steps), self.total_steps
        )
        self._build_selection()

    def _trained_heads(self) -> tuple[str, ...]:
        """The query-encoder heads this run's terms train (the ones exported)."""
        return tuple(head for name in self.terms for head in TERM_HEADS[name])

    def _build_selection(self) -> None:
        """Dev batches (longest first) and targets for model selection; ``self.selection`` is None without."""
        cfg, acc = self.cfg, self.accelerator
        self.selection: Selection | None = None
        metric = self.select_metric
        if metric is None:
            return
        if self.dev_data is None:
            acc.print(
                "dev: no dev data (data.dev_path empty, data.dev_fraction 0): no model selection, the last "
                "step is exported; give data.dev_path or data.dev_fraction > 0 to select on dev"
            )
            return
        trained = set(self._trained_heads())
        self.dev_heads = tuple(sorted(trained & {m.head for m in DEV_METRICS.values()}))
        dev = TokenizedDataset(self.dev_data.texts, self.dev_data.labels, self.tokenizer, cfg.data.max_length)
        order = sorted(range(len(dev)), key=lambda i: -len(dev.input_ids[i]))
        collate = PaddingCollator(self.tokenizer.pad_token_id)
        self.dev_batches = [
            collate([dev[i] for i in order[start : start + DEV_BATCH_SIZE]])
            for start in range(0, len(order), DEV_BATCH_SIZE)
        ]
        self.dev_targets = {"va": self.dev_data.labels[order]}
        if self.dev_data.targets is not None:
            self.dev_targets["class_logits"] = self.dev_data.targets[order]
        self.selection = Selection(metric.name)
        acc.print(
            f"dev: {len(dev)} sentences; selecting the step with the best {metric.name}, evaluated "
            + (f"every {cfg.train.eval_every} steps" if cfg.train.eval_every else "at the end of each epoch")
            + " and at the last step"
        )

    def _build_loss(self, term: Term, labels: torch.Tensor) -> torch.nn.Module:
        """The loss module of one term (mcl, mse, simcse, classify, else ptd); ``labels`` [N, 2] are
        the raw training labels."""
        o = self.cfg.objective
        if term.loss == "classify":
            return self._classification_loss().to(self.accelerator.device)
        if term.loss == "mcl" and term.targets == "rank":
            return RankNContrastLoss(temperature=o.mcl.temperature)
        if term.loss == "mcl":
            return MomentumContrastiveLoss(
                temperature=o.mcl.temperature,
                label_temperature=o.mcl.label_temperature,
                hard_bin_edges=self._hard_bin_edges(labels) if term.targets == "hard" else None,
            )
        if term.loss == "mse":
            return VARegressionLoss()
        if term.loss == "simcse":
            return SimCSELoss(temperature=o.simcse.temperature)
        if term.loss == "preserve":
            # L2-SP's reference: the encoder source's weights, never a (possibly trained) checkpoint
            start = (
                source_weights(self.cfg.model.encoder, self.accelerator.device) if o.preserve.kind == "l2sp" else None
            )
            return PreservationLoss(o.preserve.kind, start=start)
        return PerturbedTokenDetection(
            ratio=o.ptd.ratio,
            sentence_fraction=o.ptd.sentence_fraction,
            selection=o.ptd.selection,
            replacement=o.ptd.replacement,
            special_ids=self.tokenizer.all_special_ids,
            mask_token_id=self.tokenizer.mask_token_id,
            vocab_size=self.model.backbone.get_input_embeddings().weight.shape[0],
        ).to(self.accelerator.device)

    def _classification_loss(self) -> torch.nn.Module:
        """CE (single-label) or BCE (multi-label, by the data), with ``objective.class_weights``."""
        data = self.train_data
        balanced = self.cfg.objective.class_weights == "balanced"
        try:
            if data.multi_label:
                return MultiLabelClassificationLoss(
                    positive_weights=positive_class_weights(data.targets) if balanced else None
                )
            return SingleLabelClassificationLoss(
                class_weights=balanced_class_weights(data.targets, len(data.classes)) if balanced else None
            )
        except ValueError as err:  # a class without (positive) training examples
            raise ConfigError(f"objective.class_weights = balanced: {err}") from None

    def _check_queue_size(self, n_train: int) -> None:
        """Refuse a queue that could hold a sentence's own key from its previous visit."""
        queue = self.cfg.objective.mcl.queue_size
        if "mcl" not in self.terms or queue == 0:
            return
        t = self.cfg.train
        per_step = (
            t.batch_size * t.gradient_accumulation_steps * (1 if t.split_batches else self.accelerator.num_processes)
        )
        if queue > n_train - per_step:
            raise ConfigError(
                f"objective.mcl.queue_size = {queue} is too large for {n_train} training sentences: "
                f"a sentence's own stale key from the previous epoch would still sit in the queue. "
                f"Use at most {max(0, n_train - per_step)} (or 0 for in-batch keys only)."
            )

    def _hard_bin_edges(self, labels: torch.Tensor) -> torch.Tensor:
        """Quantile edges [2, b-1] of standardised training labels for ``supcon-hard``."""
        bins = self.cfg.objective.mcl.hard_bins
        z = self.model.standardise(labels)
        q = torch.linspace(0, 1, bins + 1)[1:-1]
        return torch.stack([torch.quantile(z[:, d], q) for d in range(2)])

    def _parameter_groups(self) -> list[dict]:
        """AdamW groups: no weight decay on biases and norms; heads at their own LR."""
        cfg = self.cfg.train
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim < 2 or "norm" in name.lower()
            is_head = not name.startswith("backbone.")
            groups.setdefault((no_decay, is_head), []).append(param)
        return [
            {
                "params": params,
                "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                "lr": cfg.head_learning_rate if is_head else cfg.learning_rate,
            }
            for (no_decay, is_head), params in groups.items()
        ]

    # --------------------------------------------------------------- one step
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        """Forward, backward (clean and, with a ``ptd`` term, perturbed pass); returns the values to
        log, left on the device (``_log`` reads a step's values in one transfer)."""
        acc = self.accelerator
        core = acc.unwrap_model(self.model)
        labels = core.standardise(batch["labels"])
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if self.views > 1:  # the views of a sentence differ only in their dropout masks
            ids, mask = ids.repeat(self.views, 1), mask.repeat(self.views, 1)
        with acc.autocast():
            heads = tuple(head for name in self.clean_terms for head in TERM_HEADS[name])
            out = self.model(ids, mask, heads=heads, track_input_grad="ptd" in self.terms)
        logs: dict[str, torch.Tensor | float] = {}
        weighted = {}  # w_term * L_term of each clean term
        for name, compute in self.clean_terms.items():
            term = compute(batch, out, labels)
            weighted[name] = self.terms[name].weight * term.loss
            logs.update({name: term.loss.detach()}, **term.diagnostics)
        clean_loss = sum(weighted.values(), out.embedding.new_zeros((), dtype=torch.float32))
        ptd_cfg, view = self.cfg.objective.ptd, None
        if "ptd" in self.terms and (ptd_cfg.saliency_source == "affect" or ptd_cfg.as_negative):
            # saliency before the clean backward: of the affect terms alone, or for perturbed keys
            # that join this backward's contrast
            affect = sum(weighted[name] for name in AFFECT_TERMS if name in weighted)
            source = affect if ptd_cfg.saliency_source == "affect" else clean_loss
            view = self._perturbed_view(batch, out, labels, core.input_gradient_of(source))
            if ptd_cfg.as_negative:
                negative = self._mcl_with_negatives(out, labels, view)
                weighted["mcl"] = self.terms["mcl"].weight * negative.loss
                logs.update(mcl=negative.loss.detach(), **negative.diagnostics)
                clean_loss = sum(weighted.values(), out.embedding.new_zeros((), dtype=torch.float32))
        acc.backward(clean_loss)
        total = clean_loss.detach()
        if "ptd" in self.terms:
            if view is None:
                view = self._perturbed_view(batch, out, labels, core.input_gradient())
            weight = self.terms["ptd"].weight
            if self.cfg.objective.ptd_schedule != "constant":
                weight *= schedule_factor(
                    self.cfg.objective.ptd_schedule,
                    self.step,
                    self.total_steps,
                    self.cfg.objective.ptd_schedule_fraction,
                )
                logs["ptd_weight"] = weight
            loss, ptd_logs = self._detection_pass(view, batch, out, labels)
            acc.backward(weight * loss)
            total = total + weight * loss.detach()
            logs.update(ptd_logs)
        logs["loss"] = total
        return logs

    def _perturbed_view(self, batch, out, labels, saliency: torch.Tensor) -> PerturbedView:
        """Sample the share of sentences PTD perturbs and perturb their most salient words
        (``saliency``: dL/d(word embeddings) [B, T, H]): their tokens, or their embeddings."""
        ptd = self.losses["ptd"]
        core = self.accelerator.unwrap_model(self.model)
        rows = torch.arange(saliency.shape[0], device=saliency.device)[:, None].expand(saliency.shape[:2])
        mask, ids, words, rows, grad = sample_sentences(
            ptd.sentence_fraction, batch["attention_mask"], batch["input_ids"], batch["word_index"], rows, saliency
        )
        rows = rows[:, 0]  # [B'] the sampled sentences
        if ptd.replacement != "embedding":
            embedding_matrix = core.backbone.get_input_embeddings().weight.detach()
            perturbed, positions = ptd.perturb(ids, words, grad, embedding_matrix)
            return PerturbedView(rows, mask, perturbed, positions)
        positions = ptd.positions(words, grad)
        sub_batch, sub_labels = self._rows(batch, rows), labels[rows]

        def affect_loss(delta):  # the unwrapped model: a gradient for delta only, no DDP bookkeeping
            with self.accelerator.autocast():
                o = core(ids, mask, heads=self._affect_heads(), input_delta=delta)
            return self._affect_loss(sub_batch, o, sub_labels)

        cfg = self.cfg.objective.ptd
        shape = (*ids.shape, grad.shape[-1])
        delta = adversarial_shift(affect_loss, positions, shape, epsilon=cfg.epsilon, steps=cfg.ascent_steps)
        return PerturbedView(rows, mask, ids, positions, delta)

    def _detection_pass(self, view: PerturbedView, batch, out, labels) -> tuple[torch.Tensor, dict]:
        """The detector on the perturbed view: BCE (+ the consistency term of an embedding
        perturbation). Returns the loss before the PTD weight, and the values to log."""
        heads = ("token_logits",) if view.delta is None else ("token_logits", *self._affect_heads())
        kwargs = {} if view.delta is None else {"input_delta": view.delta}
        with self.accelerator.autocast():
            out_p = self.model(view.input_ids, view.attention_mask, heads=heads, **kwargs)
        det = self.losses["ptd"](out_p.token_logits, view.positions, view.attention_mask)
        logs = dict(ptd=det.loss.detach(), ptd_sentences=float(view.attention_mask.shape[0]), **det.diagnostics)
        if view.delta is None:
            return det.loss, logs
        sub_batch, sub_labels = self._rows(batch, view.rows), labels[view.rows]
        clean = CarlOutput(**{head: out[head][view.rows].detach() for head in self._affect_heads()})
        with torch.no_grad():  # how much the shift raised the affect loss of these sentences
            logs["ptd_affect_increase"] = self._affect_loss(sub_batch, out_p, sub_labels) - self._affect_loss(
                sub_batch, clean, sub_labels
            )
        weight = self.cfg.objective.ptd.consistency_weight
        if weight == 0:
            return det.loss, logs
        kinds = {"va": "va", "class_logits": "multi" if self.train_data.multi_label else "single"}
        consistency = sum(consistency_loss(clean[h], out_p[h], kinds[h]) for h in self._affect_heads())
        logs["ptd_consistency"] = consistency.detach()
        return det.loss + weight * consistency, logs

    def _affect_heads(self) -> tuple[str, ...]:
        """The heads of the affect terms (VA regression, classification) this run trains."""
        return tuple(head for name in AFFECT_TERMS if name in self.terms for head in TERM_HEADS[name])

    def _affect_loss(self, batch, out, labels) -> torch.Tensor:
        """sum of w_term L_term over the affect terms, on ``out``'s affect heads."""
        return sum(
            self.terms[name].weight * self.clean_terms[name](batch, out, labels).loss
            for name in AFFECT_TERMS
            if name in self.terms
        )

    @staticmethod
    def _rows(batch: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-sentence entries of ``batch`` the affect terms read (class targets), at ``rows``."""
        return {key: batch[key][rows] for key in ("targets",) if key in batch}

    def _mcl_with_negatives(self, out, labels, view: PerturbedView) -> ObjectiveOutput:
        """MCL of this step's queries and key set plus the perturbed sentences' momentum keys
        (gathered from every process) as unlabelled negatives."""
        core = self.accelerator.unwrap_model(self.model)
        with self.accelerator.autocast():
            keys = core.encode_keys(view.input_ids, view.attention_mask, input_delta=view.delta).float()
        negatives, _ = gather_across_processes(keys)
        key_set, key_labels, own = self._key_set
        return self.losses["mcl"](out.query, key_set, labels, key_labels, own, negatives=negatives)

    def _mcl_term(self, batch, out, labels) -> ObjectiveOutput:
        """Queries [B, P] against the gathered batch keys and the queue; the keys wait for enqueueing."""
        core = self.accelerator.unwrap_model(self.model)
        with self.accelerator.autocast():
            keys = core.encode_keys(batch["input_ids"], batch["attention_mask"]).float()
        batch_keys, batch_labels, own = self._gather_batch_keys(keys, batch["labels"])
        queue_keys, queue_labels = core.queue.contents()
        key_labels = core.standardise(torch.cat([batch_labels, queue_labels]))
        self._pending_enqueue = (batch_keys, batch_labels)
        self._key_set = (torch.cat([batch_keys, queue_keys]), key_labels, own)  # for as_negative's second contrast
        return self.losses["mcl"](out.query, self._key_set[0], labels, key_labels, own)

    def _mse_term(self, batch, out, labels) -> ObjectiveOutput:
        return self.losses["mse"](out.va, labels)

    def _classify_term(self, batch, out, labels) -> ObjectiveOutput:
        return self.losses["classify"](out.class_logits, batch["targets"])

    def _preserve_term(self, batch, out, labels) -> ObjectiveOutput:
        """Pull toward the starting encoder: this batch's embeddings [B, H] (the first view) against
        the cached teacher rows of its sentences, or (l2sp) the backbone weights against their start."""
        loss = self.losses["preserve"]
        if loss.kind == "l2sp":
            return loss(parameters=self.accelerator.unwrap_model(self.model).backbone.named_parameters())
        index = batch["index"]
        return loss(out.embedding[: index.shape[0]], self.teacher[index])

    def _simcse_term(self, batch, out, labels) -> ObjectiveOutput:
        first, second = out.embedding.chunk(2)  # [B, H] each: the two dropout views
        return self.losses["simcse"](first, second)

    def _gather_batch_keys(self, keys, labels):
        """Keys [B, P] and raw labels [B, 2] from every process; own-key columns [B] of this rank.

        Keys and labels travel as one [B, P + 2] tensor: one gather per step."""
        rows, offset = gather_across_processes(torch.cat([keys, labels.to(keys.dtype)], dim=1))
        own = offset + torch.arange(keys.shape[0], device=keys.device)
        return rows[:, : keys.shape[1]], rows[:, keys.shape[1] :], own

    def close(self) -> None:
        """Release the (DDP-wrapped) model and optimizer, then leave the process group.

        In this order: a DDP reducer that outlives its process group can hang at teardown, and a
        group left to interpreter shutdown can abort the process. No-op state on one process.
        """
        self.model = self.optimizer = self.scheduler = None
        self.accelerator.free_memory()
        gc.collect()
        self.accelerator.end_training()

    # ------------------------------------------------------------------ loop
    def train(self) -> Path:
        """Run (or resume) training, then export the model to ``<output>/model``."""
        acc, cfg = self.accelerator, self.cfg
        self._check_max_length()
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.fingerprint = run_fingerprint(self.train_data, cfg.model.encoder)
        if "preserve" in self.terms and cfg.objective.preserve.kind != "l2sp":
            self.teacher = teacher_embeddings(  # [N, H] on every process
                self.accelerator,
                self.out / TEACHER_FILE,
                teacher_key(self.fingerprint, cfg.data.max_length, cfg.model.pooling),
                cfg.model.encoder,
                self.loader.dataset.input_ids,
                self.accelerator.unwrap_model(self.model).backbone.config.hidden_size,
                cfg.model.pooling,
            )
        resumed = self._resume()
        self._start_run_folder(resumed=resumed)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"train {cfg.objective.name}",
            unit="step",
            disable=not (self.show_progress and acc.is_local_main_process),
            dynamic_ncols=True,
        )
        while self.step < self.total_steps and not self._stopped():
            self.train_one_epoch(bar)
        bar.close()
        last = latest_checkpoint(self.out)
        if last is None or last.name != f"step-{self.step}":
            self._save()
        self._restore_best()
        return self._export()

    def train_one_epoch(self, bar: tqdm) -> None:
        """Iterate the rest of the current epoch (skipping batches already done on resume)."""
        acc, cfg = self.accelerator, self.cfg
        self.sampler.set_epoch(self.epoch)
        loader = acc.skip_first_batches(self.loader, self.batch_in_epoch) if self.batch_in_epoch else self.loader
        started, pending = time.perf_counter(), []
        for batch in loader:
            batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
            self.batch_in_epoch += 1
            with acc.accumulate(self.model):
                pending.append(self.training_step(batch))
                if acc.sync_gradients:
                    grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.train.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self._enqueue()
            if not acc.sync_gradients:
                continue
            self.scheduler.step()
            self.accelerator.unwrap_model(self.model).momentum_update()
            self.step += 1
            loss = self._log(pending, grad_norm, started)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            started, pending = time.perf_counter(), []
            if self.selection is not None and self._evaluation_due():
                started_dev = time.perf_counter()
                self._select(self._evaluate_dev(), time.perf_counter() - started_dev)
            if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0:
                self._save()
            for callback in self.on_step_end:
                callback(self)
            if self.step >= self.total_steps or self._stopped():
                return
        self.epoch += 1
        self.batch_in_epoch = 0

    def _enqueue(self) -> None:
        pending = getattr(self, "_pending_enqueue", None)
        if pending is not None:
            self.accelerator.unwrap_model(self.model).queue.enqueue(*pending)
            self._pending_enqueue = None

    # -------------------------------------------------------- model selection
    def _evaluation_due(self) -> bool:
        """Evaluate at the last step, every ``train.eval_every`` steps, or (0) at each epoch's last step."""
        every = self.cfg.train.eval_every
        if self.step >= self.total_steps:
            return True
        if every:
            return self.step % every == 0
        # no further optimizer step fits in this epoch's remaining micro-batches
        return len(self.loader) - self.batch_in_epoch < self.cfg.train.gradient_accumulation_steps

    def _evaluate_dev(self) -> dict[str, float]:
        """Every dev metric of the trained heads; computed on rank 0, the same values on every rank."""
        acc = self.accelerator
        values = torch.zeros(len(DEV_METRICS), dtype=torch.float64, device=acc.device)
        if acc.is_main_process:
            core = acc.unwrap_model(self.model)
            predictions = predict_dev(core, self.dev_batches, self.dev_heads, acc.device, acc.autocast)
            computed = dev_metrics(predictions, self.dev_targets)
            values[: len(computed)] = torch.tensor(list(computed.values()), dtype=torch.float64)
        names = [name for name, m in DEV_METRICS.items() if m.head in self.dev_heads]
        values = broadcast(values, from_process=0).tolist()  # every rank then takes the same decision
        return dict(zip(names, values))

    def _select(self, values: dict[str, float], dev_time: float) -> None:
        """Update the best-so-far state; keep the weights of a new best; log a ``dev`` line."""
        acc, sel = self.accelerator, self.selection
        improved = sel.update(self.step, values)
        if acc.is_main_process:
            if improved:
                save_best(self.out, acc.unwrap_model(self.model), self.step)
                prune_best(self.out, sel.best_step)
            record = {
                "step": self.step,
                "epoch": self.epoch,
                "dev": values,
                "improved": improved,
                "best_step": sel.best_step,
                "best": sel.best_value,
                "dev_time": dev_time,
            }
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        acc.wait_for_everyone()
        if self._stopped():
            acc.print(
                f"early stopping at step {self.step}: {sel.evaluations_since_best} evaluations without a better "
                f"{sel.metric} than {sel.best_value} (step {sel.best_step})"
            )

    def _stopped(self) -> bool:
        return self.selection is not None and self.selection.exhausted(self.cfg.train.early_stopping_patience)

    def _restore_selection(self, state: dict, checkpoint: Path) -> None:
        """Take the checkpoint's best-so-far state; check that the best weights it names are intact."""
        saved = state.get("selection")
        if saved is None or self.selection is None:  # None: this run has no dev data to select on
            return
        try:
            self.selection = Selection.from_dict(saved, self.selection.metric)
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{checkpoint / 'trainer_state.json'}: bad selection state: {err}") from err
        if self.selection.best_step is not None:
            verify_best(self.out, self.selection.best_step)

    def _restore_best(self) -> None:
        """Load the best dev step's weights into the model (before export)."""
        sel = self.selection
        if sel is None:
            return
        if sel.best_step is None:
            self.accelerator.print(f"dev: {sel.metric} was never finite; exporting the last step")
            return
        load_best(self.out, self.accelerator.unwrap_model(self.model), sel.best_step)
        self.accelerator.print(
            f"dev: exporting step {sel.best_step} of {self.step}, best {sel.metric} = {sel.best_value:.4f}"
        )

    def _selection_card(self) -> dict:
        """What the model card records about the selection (empty without one)."""
        sel = self.selection
        if sel is None:
            return {}
        return {
            "selection": {
                "metric": sel.metric,
                "best_step": sel.best_step,
                "dev": sel.best_dev,
                "eval_every": self.cfg.train.eval_every,
                "steps_trained": self.step,
                "stopped_early": self._stopped(),
            }
        }

    # ------------------------------------------------------------ bookkeeping
    def _log(self, micro_logs: list[dict], grad_norm, started: float) -> float:
        """Average the step's values over micro-batches and processes in the step's one read from
        the device (its time runs from ``started`` to that read); stop on a non-finite loss on any
        process; rank 0 appends a line. Returns the loss."""
        keys = list(micro_logs[0])
        device = self.accelerator.device

        def on_device(value) -> torch.Tensor:  # a Python number is filled in on the device, not copied
            if torch.is_tensor(value):
                return value.detach().to(device, torch.float64).reshape(())
            return torch.full((), value, dtype=torch.float64, device=device)

        local = torch.stack([torch.stack([on_device(m[k]) for k in keys]) for m in micro_logs]).mean(0)
        local = torch.cat([local, on_device(grad_norm).reshape(1)])
        *values, grad_norm = self.accelerator.reduce(local, reduction="mean").tolist()
        elapsed = time.perf_counter() - started
        record = dict(zip(keys, values))
        if not math.isfinite(record["loss"]):
            last = latest_checkpoint(self.out)
            raise TrainingDiverged(
                f"non-finite loss at step {self.step} (components: {record}); stopping. "
                f"The last good checkpoint is {last or 'none yet'}. Check the data, or train into a "
                f"new --output with a lower train.learning_rate."
            )
        if self.accelerator.is_main_process:
            record = {"step": self.step, "epoch": self.epoch, **record}
            record.update(
                lr=self.scheduler.get_last_lr()[0],
                grad_norm=grad_norm,
                step_time=elapsed,
                samples_per_s=self._global_batch() * len(micro_logs) / max(elapsed, 1e-9),
            )
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        return record["loss"]

    def _global_batch(self) -> int:
        t = self.cfg.train
        return t.batch_size * (1 if t.split_batches else self.accelerator.num_processes)

    def _check_max_length(self) -> None:
        """Refuse a ``data.max_length`` beyond the positions the encoder embeds."""
        limit = position_limit(self.accelerator.unwrap_model(self.model).backbone)
        if limit is not None and self.cfg.data.max_length > limit:
            raise ConfigError(
                f"data.max_length = {self.cfg.data.max_length} exceeds the {limit} positions of the "
                f"encoder {self.cfg.model.encoder!r}; set data.max_length to at most {limit}"
            )

    def _training_state(self) -> TrainingState:
        return TrainingState(self.accelerator.unwrap_model(self.model), self.optimizer, self.scheduler)

    def _resume(self) -> bool:
        """Restore the newest good checkpoint, if any; refuse (or warn, by ``train.resume_mismatch``)
        when the data or encoder changed or a process's RNG state is missing."""
        acc = self.accelerator
        if (self.out / "checkpoints").is_dir():
            self._check_resume_config()
        resumed = resume_checkpoint(acc, self.out, self._training_state())
        if resumed is None:
            return False
        problems = [
            f"{path} is missing: this process would draw other random numbers than the uninterrupted run"
            for path in resumed.missing_rng
        ]
        problems += fingerprint_changes(resumed.state.get("fingerprint"), self.fingerprint)
        if problems and self.cfg.train.resume_mismatch == "error":
            raise ConfigError(
                f"refusing to resume from {resumed.path}: {'; '.join(problems)}. Resume anyway with "
                f"--set train.resume_mismatch=warn, or train into a new --output"
            )
        for problem in problems if acc.is_main_process else []:
            print(f"carl: warning: resuming from {resumed.path} although {problem}", file=sys.stderr, flush=True)
        state = resumed.state
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        if self.selection is not None:
            self._restore_selection(state, resumed.path)
        acc.step = state["accelerator_step"]
        acc.print(f"resuming from {resumed.path} (step {self.step}/{self.total_steps})")
        acc.wait_for_everyone()
        return True

    def _save(self) -> None:
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "accelerator_step": self.accelerator.step,
            "num_processes": self.accelerator.num_processes,
            "fingerprint": self.fingerprint,
        }
        if self.selection is not None:
            state["selection"] = self.selection.to_dict()
        save_checkpoint(self.accelerator, self.out, self._training_state(), state, self.cfg.train.keep_checkpoints)
        if self.selection is not None and self.accelerator.is_main_process:
            prune_best(self.out, self.selection.best_step)

    def _check_resume_config(self) -> None:
        """Refuse to resume a run folder under settings other than those it was started with."""
        saved_file = self.out / "config.toml"
        if not saved_file.is_file():
            return
        saved = flatten(load_config(saved_file).to_dict())
        now = flatten(self.cfg.to_dict())
        changed = [
            f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]
        ]
        if changed:
            raise ConfigError(
                f"{self.out} holds a run started with other settings ({'; '.join(changed)}); "
                f"resume it with the settings of its config.toml, or train into a new --output"
            )

    def _start_run_folder(self, resumed: bool) -> None:
        """Write config and environment; on resume drop metric lines past the checkpoint."""
        if not self.accelerator.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "config.toml", self.cfg.to_toml())
        info = environment_info(self.accelerator.device)
        info["num_processes"] = self.accelerator.num_processes
        write_text_atomic(self.out / "environment.json", json.dumps(info, indent=2))
        metrics = self.out / "metrics.jsonl"
        if metrics.exists():
            lines = metrics.read_text(encoding="utf-8").splitlines()
            keep = [l for l in lines if l.strip() and json.loads(l)["step"] <= self.step] if resumed else []
            write_text_atomic(metrics, "".join(l + "\n" for l in keep))

    def _export(self) -> Path:
        acc = self.accelerator
        path = self.out / "model"
        if acc.is_main_process:
            core = acc.unwrap_model(self.model)
            classifier = {}
            if "classify" in self.terms:
                classifier, note = classifier_metadata(
                    core, self.tokenizer, self.train_data, self.dev_data, max_length=self.cfg.data.max_length
                )
                print(note, flush=True)
            export_model(
                core,
                self.tokenizer,
                path,
                max_length=self.cfg.data.max_length,
                heads=self._trained_heads(),
                metadata={
                    "objective": self.cfg.objective.name,
                    "base_encoder": self.cfg.model.encoder,
                    "base_encoder_path": resolve_encoder(self.cfg.model.encoder),
                    "scale": [self.train_data.scale.low, self.train_data.scale.high],
                    "data": describe_data(self.cfg.data),
                    "config": self.cfg.to_dict(),
                    "steps": self.step,
                    **classifier,
                    **self._selection_card(),
                },
            )
        acc.wait_for_everyone()
        return path
