"""Benchmark cells on disk, shared by the probe and fine-tuning protocols.

A *cell* is one finished unit of a benchmark grid, stored as ``OUT/cells/<name>.json`` with the
``spec`` it was computed under and that spec's hash: :func:`load_cached` returns a cached cell
whose spec matches and refuses one computed under other settings (:class:`BenchmarkMismatch`).
:func:`new_record` starts a cell's record, :func:`save_cell` writes it atomically; :func:`dump_json` rounds the per-point arrays that
``results.json`` leaves out (:func:`without_points`). :func:`read_metrics` and
:func:`training_summary` condense a training run's ``metrics.jsonl`` for its cell.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import numpy as np

from carl.atomic import write_text_atomic

LOSS_KEYS = ("loss", "classify", "mcl", "mse", "ptd", "simcse", "preserve")


class BenchmarkMismatch(ValueError):
    """A cached cell was computed under other settings than the ones asked for now."""


def refuse_objective_override(overrides: tuple[str, ...]) -> None:
    """A grid's methods pick their objectives: ``--set objective.name=...`` would replace them all."""
    named = [o for o in overrides if o.split("=", 1)[0].strip() == "objective.name"]
    if named:
        raise ValueError(f"--set {named[0]} would train every method with one objective; choose them with --methods")


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# per-point arrays of a cell (test predictions and labels, the 2-D projection): kept in the cell
# file for the plots, left out of results.json; floats inside lists are rounded to POINT_DECIMALS
PER_POINT_KEYS = ("test_predictions", "test_labels", "emobank_test_2d")
# what a record read only for its metrics can leave out: the per-point arrays and the per-step loss curves
POINT_AND_CURVE_KEYS = (*PER_POINT_KEYS, "curves")
POINT_DECIMALS = 5


def _rounded(value, in_list: bool = False):
    """Floats inside lists rounded to POINT_DECIMALS; scalar metrics keep full precision."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v, True) for v in value]
    if in_list and isinstance(value, float):
        return round(value, POINT_DECIMALS)
    return value


def without_points(value, keys: tuple[str, ...] = PER_POINT_KEYS):
    """A copy of a cell without its per-point arrays, or without any of ``keys`` at any depth
    (what results.json keeps of each cell)."""
    if isinstance(value, dict):
        return {k: without_points(v, keys) for k, v in value.items() if k not in keys}
    return value


def dump_json(value, *, compact: bool = False) -> str:
    """JSON text of a cell (``compact``: no indentation) or of the results, floats in lists rounded."""
    if compact:
        return json.dumps(_rounded(value), separators=(",", ":"), default=_json_default)
    return json.dumps(_rounded(value), indent=1, default=_json_default)


def read_cell(path: Path) -> dict | None:
    """The cell record at ``path``; None when absent."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def mismatch(path: Path, cell: dict, spec: dict) -> BenchmarkMismatch:
    """The error for a cached ``cell`` computed under another spec than ``spec``."""
    return BenchmarkMismatch(
        f"{path} was computed under other settings (spec {cell.get('spec')}, now {spec}); "
        f"benchmark into a new --out, or delete that cell file to recompute it"
    )


def load_cached(path: Path, spec: dict) -> dict | None:
    """The finished cell at ``path`` when its spec matches; None when absent."""
    cell = read_cell(path)
    if cell is not None and cell.get("spec_hash") != spec_hash(spec):
        raise mismatch(path, cell, spec)
    return cell


def new_record(name: str, spec: dict, **fields) -> dict:
    """A cell record before its results: its name, identifying ``fields``, the spec and its hash."""
    return {"name": name, **fields, "spec": spec, "spec_hash": spec_hash(spec)}


def read_metrics(run_dir: Path) -> list[dict]:
    """The per-step lines of a run's metrics.jsonl (its dev evaluations, lines with ``dev``, left out)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [record for record in lines if "dev" not in record]


def loss_curves(records: list[dict], points: int = 200) -> dict[str, list[list[float]]]:
    """Per loss component, ``[step, mean value]`` over at most ``points`` equal step buckets."""
    curves = {}
    for key in LOSS_KEYS:
        rows = [(r["step"], r[key]) for r in records if key in r]
        if not rows:
            continue
        buckets = np.array_split(np.asarray(rows, dtype=np.float64), min(points, len(rows)))
        curves[key] = [[float(b[:, 0].mean()), float(b[:, 1].mean())] for b in buckets if len(b)]
    return curves


def training_summary(records: list[dict], wall_seconds: float) -> dict:
    """Steps, median/total step time, final loss components and the loss curves."""
    times = [r["step_time"] for r in records if "step_time" in r]
    last = records[-1] if records else {}
    return {
        "steps": int(last.get("step", 0)),
        "wall_seconds": wall_seconds,
        "median_step_seconds": statistics.median(times) if times else None,
        "train_seconds": float(sum(times)) if times else None,
        "final": {k: last[k] for k in LOSS_KEYS if k in last},
        "curves": loss_curves(records),
    }


def spent_seconds(record: dict) -> float:
    """At least the time a cell or first stage took: its last process's wall time, or where longer (a
    run resumed across processes) the summed time of all its optimizer steps."""
    training = record.get("training") or {}
    wall = record.get("wall_seconds", training.get("wall_seconds")) or 0.0
    return float(max(wall, training.get("train_seconds") or 0.0))


def save_cell(out: Path, name: str, record: dict) -> Path:
    """Write ``record`` atomically to ``OUT/cells/<name>.json`` (compact JSON)."""
    path = Path(out) / "cells" / f"{name}.json"
    write_text_atomic(path, dump_json(record, compact=True))
    return path
