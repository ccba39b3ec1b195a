"""What one training step asks of the device: host reads, attention kernels."""

from __future__ import annotations

import traceback
from collections import Counter

import pytest
import torch
from torch.overrides import TorchFunctionMode

from carl.config import load_config
from carl.training.trainer import CarlTrainer

# Tensor methods that copy a value to the host, waiting for the device to finish its queue
HOST_READS = {"item", "__int__", "__float__", "__bool__", "__index__", "tolist", "nonzero", "any", "all"}


class HostReadCounter(TorchFunctionMode):
    """Counts host reads whose nearest caller outside torch is carl's own code, by call site."""

    def __init__(self):
        super().__init__()
        self.sites: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            caller = next(
                f
                for f in reversed(traceback.extract_stack()[:-1])
                if "/torch/" not in f.filename and f.filename != __file__
            )
            if "/carl/" in caller.filename and "/tests/" not in caller.filename:
                self.sites[(caller.filename.split("/carl/")[-1], caller.name)] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "objective, allowed",
    [
        ("mse", {("training/trainer.py", "_log")}),
        # the perturbed pass needs three sizes on the host: its length, the word count, the perturbed tokens
        (
            "carl",
            {
                ("training/trainer.py", "_log"),
                ("objectives/perturbed_token_detection.py", "sample_sentences"),
                ("objectives/perturbed_token_detection.py", "_scatter_words"),
                ("objectives/perturbed_token_detection.py", "perturb"),
            },
        ),
    ],
)
def test_a_step_reads_the_device_once_besides_the_sizes_it_needs(tmp_path, tiny_overrides, objective, allowed):
    steps = 3
    cfg = load_config(
        None, tiny_overrides + [f"objective.name={objective}", f"train.max_steps={steps}", "train.checkpoint_every=0"]
    )
    trainer = CarlTrainer(cfg, tmp_path, show_progress=False)
    counter = HostReadCounter()

    def counted(fn):
        def wrapped(*args):
            with counter:
                return fn(*args)

        return wrapped

    trainer.training_step, trainer._log = counted(trainer.training_step), counted(trainer._log)
    trainer.train()
    assert set(counter.sites) == allowed, counter.sites
    assert all(n == steps for n in counter.sites.values()), counter.sites  # once per step each


def test_encoder_passes_exclude_cudnn_attention(tmp_path, tiny_overrides):
    """Training (query, key and perturbed passes) and inference run without cuDNN's attention."""
    from carl import AffectEncoder

    trainer = CarlTrainer(
        load_config(None, tiny_overrides + ["train.max_steps=2", "train.checkpoint_every=0"]),
        tmp_path,
        show_progress=False,
    )
    seen = []
    record = lambda module, args: seen.append(torch.backends.cuda.cudnn_sdp_enabled())  # noqa: E731
    core = trainer.accelerator.unwrap_model(trainer.model)
    hooks = [m.register_forward_pre_hook(record) for m in (core.backbone, core.key_encoder.parts["backbone"])]
    before = torch.backends.cuda.cudnn_sdp_enabled()
    path = trainer.train()
    assert len(seen) == 2 * 3 and not any(seen)  # per step: query, key, perturbed pass
    for h in hooks:
        h.remove()
    encoder = AffectEncoder.load(str(path))
    seen.clear()
    encoder.model.backbone.register_forward_pre_hook(record)
    encoder.encode(["a short text", "and a somewhat longer one"])
    assert seen == [False]
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
