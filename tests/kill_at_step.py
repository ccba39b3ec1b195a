"""Run the carl CLI and SIGKILL this process right after optimizer step N (after its checkpoint).

Usage: python tests/kill_at_step.py N train --output RUN [--set KEY=VALUE ...]
(also as the script of ``torchrun``: every rank kills itself after step N). The kill is attached
from here, as an ``on_step_end`` callback of every ``CarlTrainer``; the library knows nothing of it.
"""

from __future__ import annotations

import os
import signal
import sys

from carl.cli import main
from carl.training.trainer import CarlTrainer


def kill_at(step: int):
    """An ``on_step_end`` callback that sends SIGKILL to this process once ``trainer.step == step``."""

    def callback(trainer: CarlTrainer) -> None:
        if trainer.step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return callback


def attach_to_every_trainer(callback) -> None:
    build = CarlTrainer.__init__

    def init(self, *args, **kwargs):
        build(self, *args, **kwargs)
        self.on_step_end.append(callback)

    CarlTrainer.__init__ = init


if __name__ == "__main__":
    attach_to_every_trainer(kill_at(int(sys.argv[1])))
    sys.exit(main(sys.argv[2:]))
