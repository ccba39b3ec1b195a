"""Atomic, resumable checkpoints on top of ``Accelerator.save_state``.

Layout of ``<run>/checkpoints/``: ``step-<N>/`` folders (accelerate state plus
``trainer_state.json``) and a ``latest`` file naming the newest complete one. A folder is
written under a temporary name and renamed only when complete, and ``latest`` is replaced
atomically, so a kill at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from accelerate import Accelerator

from carl.atomic import write_text_atomic


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict, keep: int) -> Path:
    """Save model, optimizer, scheduler and RNG state plus ``state`` as ``step-<N>``."""
    root = run_dir / "checkpoints"
    final = root / f"step-{state['step']}"
    tmp = root / f".step-{state['step']}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank's files are in tmp before it is renamed
    if accelerator.is_main_process:
        write_text_atomic(tmp / "trainer_state.json", json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text_atomic(root / "latest", final.name)
        _prune(root, keep)
    accelerator.wait_for_everyone()
    return final


def _prune(root: Path, keep: int) -> None:
    steps = sorted((int(p.name.split("-")[1]), p) for p in root.glob("step-*") if p.is_dir())
    for _, path in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text(encoding="utf-8").strip()
    return path if (path / "trainer_state.json").is_file() else None


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict:
    """Restore accelerate state from ``path`` and return its trainer state."""
    accelerator.load_state(str(path))
    return json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
