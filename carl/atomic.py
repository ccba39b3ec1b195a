"""The one atomic writer: a file appears whole or not at all (temporary file, fsync, rename).

Large outputs written in place of a whole folder or file (a model folder, an ONNX graph) take a
temporary from :func:`temporary_beside`, which also clears what killed writers left behind.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a hidden temporary file beside it and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# Temporaries beside a target are named ``.NAME.PID.RANDOM.tmp``: the writer's process id lets a
# later run tell a temporary left by a killed writer (its process is gone) from one in use.
_PROCESS_STARTED = time.time()


def temporary_beside(target: str | Path, *, folder: bool) -> Path:
    """A new, empty hidden file or folder beside ``target`` for writing it whole, then renaming.

    Temporaries of ``target`` left by killed writers (SIGKILL, power loss) are removed first:
    only names of this form, of a process that no longer runs, older than this process.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    prefix, suffix = f".{target.name}.{os.getpid()}.", ".tmp"
    if folder:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    os.close(handle)
    return Path(name)


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the temporaries of ``target`` whose writer died (see :func:`temporary_beside`)."""
    target = Path(target)
    removed = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.*.tmp"):
        pid = path.name[len(target.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or _process_runs(int(pid)) or path.lstat().st_mtime >= _PROCESS_STARTED:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True
