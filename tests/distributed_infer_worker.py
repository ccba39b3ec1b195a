"""Run under ``torchrun --nproc_per_node N``: sharded ``AffectEncoder.infer`` (and ``class_logits``
of a model with a classifier) vs one process.

Usage: python -m torch.distributed.run --nproc_per_node N tests/distributed_infer_worker.py MODEL N_TEXTS OUT_DIR
Every rank writes OUT_DIR/rank<r>.npz with the gathered embeddings and VA predictions (and class
logits) and the texts it embedded itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

from carl.inference import AffectEncoder
from carl.testing import synthetic_affect_corpus


def main() -> None:
    model, n, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    dist.init_process_group("gloo")
    texts, _ = synthetic_affect_corpus(n, seed=5)
    encoder = AffectEncoder.load(model)
    local_texts = []
    run_local = encoder._outputs_local

    def counting(share, heads, **kwargs):  # records the share this rank embedded itself
        local_texts.extend(share)
        return run_local(share, heads, **kwargs)

    encoder._outputs_local = counting
    embeddings, va = encoder.infer(texts, batch_size=3, with_va=True)
    arrays = dict(embeddings=embeddings, va=va)
    if encoder.classifier is not None:
        arrays["logits"], arrays["logits_va"] = encoder.class_logits(texts, batch_size=3, with_va=True)
    np.savez(out / f"rank{dist.get_rank()}.npz", local=np.array(local_texts, dtype=str), **arrays)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
