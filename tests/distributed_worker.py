"""Run under ``torchrun --nproc_per_node 2``: train briefly, then compare per-rank state.

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py OUT_JSON RUN_DIR KEY=VALUE...
Rank 0 writes whether the queues, queue labels, momentum encoders (and teacher embeddings, with a
preservation term) are identical on all ranks,
which sentences each rank's loader yields in one epoch, and each rank's last step and model selection
state.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from carl.config import load_config
from carl.training.trainer import CarlTrainer


def main() -> None:
    out_json, run_dir, *overrides = sys.argv[1:]
    trainer = CarlTrainer(load_config(None, overrides), run_dir, show_progress=False)
    trainer.train()
    core = trainer.accelerator.unwrap_model(trainer.model)
    local = {
        "queue_keys": core.queue.keys.detach().clone(),
        "queue_labels": core.queue.labels.detach().clone(),
        "key_encoder": torch.cat([p.detach().flatten() for p in core.key_encoder.parameters()]),
        "query_encoder": torch.cat([p.detach().flatten() for p in core.backbone.parameters()]),
    }
    if hasattr(trainer, "teacher"):  # the preservation term's teacher embeddings [N, H]
        local["teacher"] = trainer.teacher.detach().clone()
    report = {"world_size": dist.get_world_size(), "filled": int(core.queue.filled)}
    trainer.sampler.set_epoch(0)  # one epoch of this rank's batches, as the loop draws them
    batches = [b["index"].tolist() for b in trainer.loader]
    per_rank: list = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, batches)
    report["epoch_batches_per_rank"] = [len(b) for b in per_rank]
    report["epoch_indices"] = sorted(i for rank in per_rank for batch in rank for i in batch)
    report["train_size"] = len(trainer.train_data)
    for name, value in (("step", trainer.step), ("selection", trainer.selection and trainer.selection.to_dict())):
        per_rank = [None] * dist.get_world_size()
        dist.all_gather_object(per_rank, value)
        report[f"{name}_per_rank"] = per_rank
    for name, tensor in local.items():
        gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor)
        report[f"{name}_max_diff"] = max(float((g - gathered[0]).abs().max()) for g in gathered)
    if dist.get_rank() == 0:
        with open(out_json, "w", encoding="utf-8") as f:
            json.dump(report, f)
    trainer.close()


if __name__ == "__main__":
    main()
