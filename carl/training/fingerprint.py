"""What a run trains on, as digests recorded in every checkpoint and compared on resume.

The data digest covers the training sentences and labels as loaded (after ``data.limit``), so
it holds for the bundled EmoBank and for user files alike; the encoder digest covers the files
of the encoder folder (weights, config, tokenizer), or its name when it is not a local folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from carl.data.readers import AffectDataset
from carl.model.encoder import resolve_encoder
from carl.training.manifest import sha256_file


def data_digest(data: AffectDataset) -> str:
    """sha256 of the texts and their ``[N, 2]`` labels (float32), in order, and of the class names
    and targets where the data has them."""
    digest = hashlib.sha256()
    for text in data.texts:
        encoded = text.encode()
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    digest.update(np.ascontiguousarray(data.labels, dtype=np.float32).tobytes())
    if data.targets is not None:
        digest.update("\0".join(data.classes).encode() + b"\1")
        digest.update(np.ascontiguousarray(data.targets, dtype=np.float32).tobytes())
    return digest.hexdigest()


def encoder_digest(encoder: str) -> str:
    """sha256 over the names and contents of the encoder folder's files, or of its name."""
    folder = Path(resolve_encoder(encoder))
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(encoder.encode())
        return digest.hexdigest()
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def run_fingerprint(data: AffectDataset, encoder: str) -> dict[str, str]:
    return {"data_sha256": data_digest(data), "encoder": encoder, "encoder_sha256": encoder_digest(encoder)}


def fingerprint_changes(saved: dict | None, now: dict[str, str]) -> list[str]:
    """Human lines for each way ``now`` differs from the checkpoint's ``saved`` fingerprint."""
    saved = saved or {}
    changes = []
    if saved.get("data_sha256") != now["data_sha256"]:
        changes.append(
            f"the training data changed since the checkpoint (sha256 {saved.get('data_sha256')} -> "
            f"{now['data_sha256']})"
        )
    if saved.get("encoder_sha256") != now["encoder_sha256"]:
        changes.append(
            f"the encoder {now['encoder']!r} changed since the checkpoint (its files' sha256 "
            f"{saved.get('encoder_sha256')} -> {now['encoder_sha256']})"
        )
    return changes
