"""Atomic, verified, pickle-free checkpoints of a training run.

Layout of ``<run>/checkpoints/``: ``step-<N>/`` folders and a ``latest`` file naming the newest
complete one. A folder is written under a temporary name and renamed only when complete, and
``latest`` is replaced atomically, so a kill at any moment leaves the previous checkpoint usable.
Each ``step-<N>/`` holds:

- ``model.safetensors``: the model's state dict (query and key encoders, heads, momentum queue);
- ``optimizer.safetensors`` (tensors, keyed ``state.<param>.<name>``) and ``optimizer.json``
  (parameter groups and any non-tensor state);
- ``scheduler.json`` (LR schedule) and, for fp16 runs, ``scaler.json`` (gradient scaler);
- ``rng-rank<r>.json``: the random generators of process ``r`` (see ``rng_state``);
- ``trainer_state.json``: step, epoch, batches done in the epoch, and the run's fingerprint;
- ``manifest.json``: size and sha256 of every file above, written last (see ``manifest``).

Loading reads safetensors and JSON only, so no file in a run folder can run code; every file is
checked against the manifest first, and a bad newest checkpoint gives way to the newest good one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from carl.atomic import write_text_atomic
from carl.training.errors import CheckpointError
from carl.training.manifest import MANIFEST, verify_manifest, write_manifest
from carl.training.rng_state import load_rng_state, rng_file_name, save_rng_state

STATE = "trainer_state.json"
STATE_KEYS = ("step", "epoch", "batch_in_epoch", "accelerator_step")
STEP_FOLDER = re.compile(r"step-(\d+)")


@dataclass
class TrainingState:
    """What a checkpoint restores besides the RNG: the unwrapped model, optimizer, LR schedule."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


@dataclass
class Resumed:
    """A loaded checkpoint: its folder, trainer state, and the RNG files it lacks for this world."""

    path: Path
    state: dict
    missing_rng: list[Path]


# ------------------------------------------------------------------------- writing
def save_checkpoint(accelerator: Accelerator, run_dir: Path, parts: TrainingState, state: dict, keep: int) -> Path:
    """Write ``parts``, every process's RNG state and ``state`` as ``step-<N>``; keep the newest ``keep``."""
    root = run_dir / "checkpoints"
    final = root / f"step-{state['step']}"
    tmp = root / f".step-{state['step']}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_rng_state(tmp / rng_file_name(accelerator.process_index))
    if accelerator.is_main_process:
        save_model(parts.model, str(tmp / "model.safetensors"))
        _save_optimizer(parts.optimizer, tmp)
        write_text_atomic(tmp / "scheduler.json", json.dumps(parts.scheduler.state_dict()))
        if accelerator.scaler is not None:
            write_text_atomic(tmp / "scaler.json", json.dumps(accelerator.scaler.state_dict()))
        write_text_atomic(tmp / STATE, json.dumps(state, indent=2))
    accelerator.wait_for_everyone()  # every rank's files are in tmp before the manifest lists them
    if accelerator.is_main_process:
        write_manifest(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text_atomic(root / "latest", final.name)
        _prune(root, keep, newest=state["step"])
    accelerator.wait_for_everyone()
    return final


def _save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    saved = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for param, values in saved["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state.{param}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param), {})[name] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    write_text_atomic(
        folder / "optimizer.json", json.dumps({"param_groups": saved["param_groups"], "scalars": scalars})
    )


def _prune(root: Path, keep: int, newest: int) -> None:
    """Delete all but the ``keep`` newest checkpoints up to step ``newest``.

    Folders past ``newest`` are left alone: they can only be leftovers of a checkpoint that failed
    to load (which the run will overwrite when it gets there).
    """
    steps = sorted(step for step in _step_folders(root) if step <= newest)
    for step in steps[:-keep]:
        shutil.rmtree(root / f"step-{step}", ignore_errors=True)


# ------------------------------------------------------------------------- reading
def _step_folders(root: Path) -> dict[int, Path]:
    if not root.is_dir():
        return {}
    return {int(m.group(1)): p for p in root.iterdir() if p.is_dir() and (m := STEP_FOLDER.fullmatch(p.name))}


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint folder ``latest`` names, if it is complete (holds a manifest); else None."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text(encoding="utf-8").strip()
    return path if (path / MANIFEST).is_file() else None


def resume_checkpoint(accelerator: Accelerator, run_dir: Path, parts: TrainingState) -> Resumed | None:
    """Load the checkpoint ``latest`` names or, when it is missing or bad, the newest good one.

    Returns None when the run has no checkpoint. Says (on stderr) which file made a checkpoint
    unusable; raises CheckpointError when checkpoints exist but none is usable.
    """
    root = run_dir / "checkpoints"
    folders = _step_folders(root)
    pointer = root / "latest"
    named = pointer.read_text(encoding="utf-8", errors="replace").strip() if pointer.is_file() else None
    if not folders:
        if named is None:
            return None
        raise CheckpointError(
            f"{pointer} names {named!r} but {root} holds no checkpoint folder: nothing to "
            f"resume from. Move {root} away to start afresh, or train into a new --output"
        )
    target = root / named if named is not None else None
    if target not in folders.values():
        _say(
            accelerator,
            f"{pointer} "
            + (f"names {named!r}, which does not exist" if named is not None else "is missing")
            + "; looking for the newest good checkpoint",
        )
        target = None
    order = ([target] if target else []) + [p for _, p in sorted(folders.items(), reverse=True) if p != target]
    failures = []
    for folder in order:
        try:
            resumed = _load(accelerator, folder, parts)
        except CheckpointError as err:
            failures.append(f"{folder.name}: {err}")
            _say(accelerator, f"checkpoint {folder.name} is unusable: {err}")
            continue
        if folder != target:
            _say(accelerator, f"falling back to {folder}, the newest good checkpoint")
        return resumed
    raise CheckpointError(
        f"no usable checkpoint in {root} ({'; '.join(failures)}). Move {root} away to start "
        f"afresh, or train into a new --output"
    )


def _say(accelerator: Accelerator, message: str) -> None:
    if accelerator.is_main_process:
        print(f"carl: {message}", file=sys.stderr, flush=True)


@contextmanager
def _reading(path: Path):
    """Turn any failure to read or apply ``path`` into a CheckpointError naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except FileNotFoundError as err:
        raise CheckpointError(f"{path} is missing") from err
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"{path} is unreadable or malformed: {err}") from err


def _load(accelerator: Accelerator, folder: Path, parts: TrainingState) -> Resumed:
    """Verify ``folder`` against its manifest, then restore ``parts`` and this process's RNG."""
    verify_manifest(folder, may_be_missing=lambda name: name.startswith("rng-rank"))
    with _reading(folder / STATE):
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
        for key in STATE_KEYS:
            if not (isinstance(state[key], int) and state[key] >= 0):
                raise ValueError(f"{key} = {state[key]!r} is not a non-negative integer")
    with _reading(folder / "model.safetensors"):
        load_model(parts.model, str(folder / "model.safetensors"), strict=True)
    with _reading(folder / "optimizer.safetensors"):
        tensors = load_file(str(folder / "optimizer.safetensors"))
    with _reading(folder / "optimizer.json"):
        _load_optimizer(parts.optimizer, tensors, json.loads((folder / "optimizer.json").read_text(encoding="utf-8")))
    with _reading(folder / "scheduler.json"):
        parts.scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text(encoding="utf-8")))
    if accelerator.scaler is not None:
        with _reading(folder / "scaler.json"):
            accelerator.scaler.load_state_dict(json.loads((folder / "scaler.json").read_text(encoding="utf-8")))
    rng_files = [folder / rng_file_name(rank) for rank in range(accelerator.num_processes)]
    missing = [f for f in rng_files if not f.is_file()]
    own = rng_files[accelerator.process_index]
    if own.is_file():
        with _reading(own):
            missing += [Path(f"{own} ({part})") for part in load_rng_state(own)]
    return Resumed(folder, state, missing)


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, tensor in tensors.items():
        _, param, name = key.split(".", 2)
        state.setdefault(int(param), {})[name] = tensor
    for param, values in meta["scalars"].items():
        state.setdefault(int(param), {}).update(values)
    groups = meta["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(f"{len(groups)} parameter groups saved, the optimizer has {len(optimizer.param_groups)}")
    for saved, current in zip(groups, optimizer.param_groups):  # JSON has no tuples (e.g. AdamW betas)
        for key, value in current.items():
            if isinstance(value, tuple) and isinstance(saved.get(key), list):
                saved[key] = tuple(saved[key])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
