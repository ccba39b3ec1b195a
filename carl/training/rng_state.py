"""Every random generator a process draws from, as plain JSON (no pickle) for exact resumes.

Python's ``random``, NumPy's global ``RandomState``, torch's CPU generator and, when present,
each CUDA device's generator. One file per process: ranks draw different dropout masks.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from carl.atomic import write_text_atomic


def rng_file_name(rank: int) -> str:
    return f"rng-rank{rank}.json"


def save_rng_state(path: Path) -> None:
    """Write this process's generator states to ``path``."""
    version, mt, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": {"version": version, "state": list(mt), "gauss_next": gauss},
        "numpy": {
            "bit_generator": name,
            "key": np.asarray(key).tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    write_text_atomic(path, json.dumps(state))


def load_rng_state(path: Path) -> list[str]:
    """Restore the generators from ``path``; return the generators it lacks (CUDA on a CPU-saved run).

    Raises ValueError, KeyError or TypeError on a malformed file.
    """
    state = json.loads(path.read_text(encoding="utf-8"))
    py, npy = state["python"], state["numpy"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    np.random.set_state(
        (
            str(npy["bit_generator"]),
            np.asarray(npy["key"], dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if not torch.cuda.is_available():
        return []
    cuda = state.get("cuda") or []
    if len(cuda) != torch.cuda.device_count():
        return [f"CUDA generators ({len(cuda)} saved, {torch.cuda.device_count()} devices now)"]
    torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in cuda])
    return []
