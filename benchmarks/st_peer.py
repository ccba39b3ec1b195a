"""The carl side of sentence-transformers' peer backends: each backend one long-lived
``st_peer_worker.py`` process, run by the peer environment's python (``make st-peer-env``), spoken
to over JSON lines on stdin/stdout (the protocol is in that file's docstring)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

ST_PEER_PYTHON = Path(__file__).resolve().parents[1] / ".venv-st-peer" / "bin" / "python"
ST_PEER_WORKER = Path(__file__).with_name("st_peer_worker.py")
Encode = Callable[[list[str]], tuple[np.ndarray, float]]  # texts -> (embeddings [N, H], seconds)


class PeerWorker:
    """One ``st_peer_worker.py`` process (run by ``python``, the peer environment's) holding
    sentence-transformers on ``backend`` with ``threads`` threads. ``encode`` sends texts and gets
    back the embeddings [N, H] and the seconds that ``encode`` took, timed inside the worker.
    Raises RuntimeError with the worker's reason when the backend cannot be built."""

    def __init__(
        self,
        python: str,
        folder: str,
        backend: str,
        threads: int,
        scratch: Path,
        batch_size: int,
        calibration: Path | None = None,
        worker: Path = ST_PEER_WORKER,
    ) -> None:
        self.scratch, self.batch_size = scratch, batch_size
        scratch.mkdir(parents=True, exist_ok=True)
        self.log_path = scratch / "worker.log"
        self.log = self.log_path.open("w")
        command = [python, str(worker), "--model", folder, "--backend", backend, "--threads", str(threads)]
        command += ["--scratch", str(scratch / "graphs")]
        command += ["--calibration", str(calibration)] if calibration else []
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
        try:
            self.ready = self._receive()
        except RuntimeError:
            self.close()
            raise

    def _receive(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            tail = self.log_path.read_text().strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"st_peer_worker exited with {self.process.returncode}: {tail[0]}")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"{message['error']} (log: {self.log_path})")
        return message

    def encode(self, texts: list[str]) -> tuple[np.ndarray, float]:
        assert self.process.stdin is not None
        texts_path, out = self.scratch / "texts.json", self.scratch / "embeddings.npy"
        texts_path.write_text(json.dumps(texts))
        request = {"texts": str(texts_path), "batch_size": self.batch_size, "repeat": 1, "embeddings": str(out)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        seconds = self._receive()["seconds"][0]
        return np.load(out, allow_pickle=False), seconds

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a worker stuck in a request
            self.process.kill()
            self.process.wait()
        self.log.close()


def peer_methods(
    python: str | None,
    why_not: str,
    backends: list[str],
    folder: str,
    threads: int,
    batch_size: int,
    scratch: Path,
    calibration: Path | None = None,
    worker: Path = ST_PEER_WORKER,
) -> tuple[dict[str, Encode], dict[str, str], list[PeerWorker]]:
    """sentence-transformers' own ``backends``, one :class:`PeerWorker` each (none when ``python``
    is None: each is missing for ``why_not``): ``({name: encode}, {name: why missing}, workers)``."""
    methods: dict[str, Encode] = {}
    missing, workers = {}, []
    for backend in backends:
        name = f"sentence-transformers {backend} (peer env)"
        if python is None:
            missing[name] = why_not
            continue
        try:
            peer = PeerWorker(
                python,
                folder,
                backend,
                threads,
                scratch / f"{backend}-{threads}t",
                batch_size,
                calibration=calibration if backend == "openvino-int8" else None,
                worker=worker,
            )
        except RuntimeError as err:
            missing[name] = str(err)
            continue
        workers.append(peer)
        methods[name] = peer.encode
    return methods, missing, workers
