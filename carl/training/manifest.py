"""A checkpoint's manifest: every file's size and sha256, written last, checked before loading.

``manifest.json`` is the last file written into a checkpoint folder (atomically, once every
process has written its files), so a folder without one is incomplete, and a file whose size
or digest differs from its entry has been truncated or changed since.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from carl.atomic import write_text_atomic
from carl.training.errors import CheckpointError

MANIFEST = "manifest.json"
FORMAT = "carl-checkpoint/1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """List every file of ``folder`` (size, sha256) in ``folder/manifest.json``."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    write_text_atomic(folder / MANIFEST, json.dumps({"format": FORMAT, "files": files}, indent=2))


def verify_manifest(folder: Path, may_be_missing=lambda name: False) -> list[str]:
    """Check every file listed in ``folder``'s manifest; return the listed names.

    A listed file for which ``may_be_missing(name)`` holds may be absent (the caller decides what
    its absence means). Raises CheckpointError naming the first bad file.
    """
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete or was not written by this carl")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"not a {FORMAT} manifest")
        entries = {name: (int(e["bytes"]), str(e["sha256"])) for name, e in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path} is malformed: {err}") from err
    for name, (size, digest) in entries.items():
        file = folder / name
        if Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{path} lists {name!r}, which is not a file name in the checkpoint folder")
        if not file.is_file():
            if may_be_missing(name):
                continue
            raise CheckpointError(f"{file} is missing (listed in {MANIFEST})")
        if file.stat().st_size != size:
            raise CheckpointError(
                f"{file} has {file.stat().st_size} bytes, {MANIFEST} says {size}: truncated or changed"
            )
        if sha256_file(file) != digest:
            raise CheckpointError(f"{file} does not match its sha256 in {MANIFEST}: corrupted or changed")
    return list(entries)
