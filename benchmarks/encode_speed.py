"""Encode throughput of every carl backend against sentence-transformers, on short and long texts,
1 and 2 threads, in one run.

    carl export-onnx runs/demo                     # the graphs (and parity.md) the backends load
    make st-peer-env                               # sentence-transformers' own onnx/openvino backends
    python benchmarks/encode_speed.py --model runs/demo [--n-short 1000] [--n-long 200] [--rounds 3]

Methods: carl ``AffectEncoder.encode`` on torch, onnx, onnx int8, openvino and openvino int8
(those whose graphs and packages are present); ``SentenceTransformer.encode`` on the same folder
with its torch backend, in this process; and sentence-transformers' own backends (torch, onnx,
onnx-o3, onnx-int8, openvino, openvino-int8: ``--st-backends``) in the peer environment ``--st-python``
(default ``.venv-st-peer/bin/python``; their optimum pins need an older transformers than carl's),
each one long-lived ``st_peer_worker.py`` process per (backend, threads) that loads once and
times ``encode`` on request (``st_peer.py``); openvino-int8 is calibrated on the 256 sentences
carl's int8 export uses.
Without that environment they are recorded as unavailable, with the reason. Texts: the first N
EmoBank sentences (short) and MR sentences joined to about 200 tokens each (long). For each thread
count every method is loaded with that many threads and each round times every method once per
text set, in rotating order (a busy neighbour on a shared CPU hurts all alike); the report gives
the median over rounds, the ratios to sentence-transformers' torch path in this process, and each
method's cosine to carl torch (unit vectors). Writes results.json and report.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from st_peer import ST_PEER_PYTHON, Encode, PeerWorker, peer_methods
from st_peer_worker import BACKENDS as ST_PEER_BACKENDS

LONG_TOKENS = 200
CARL_BACKENDS = (("torch", None), ("onnx", None), ("onnx", "int8"), ("openvino", None), ("openvino", "int8"))
CALIBRATION = 256  # sentences, as carl export-onnx's default


def emobank_sentences(n: int) -> list[str]:
    from carl.data.emobank import load_emobank

    texts = [t for split in ("train", "dev", "test") for t in load_emobank(split).texts]
    if n > len(texts):
        raise SystemExit(f"EmoBank has {len(texts)} sentences, asked for {n}")
    return texts[:n]


def long_texts(n: int, tokenizer) -> list[str]:
    """``n`` texts of about LONG_TOKENS tokens: consecutive MR sentences joined."""
    from carl.data.classification import load_mr

    sentences, texts, current = load_mr().texts, [], []
    for sentence in sentences:
        current.append(sentence)
        if len(tokenizer(" ".join(current))["input_ids"]) >= LONG_TOKENS:
            texts.append(" ".join(current))
            current = []
            if len(texts) == n:
                return texts
    raise SystemExit(f"MR gives only {len(texts)} texts of {LONG_TOKENS} tokens")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(encode: Callable[[list[str]], object]) -> Encode:
    """An in-process ``encode`` timed here."""

    def run(texts: list[str]) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        out = np.asarray(encode(texts))
        return out, time.perf_counter() - started

    return run


def methods_for(
    folder: str, threads: int, batch_size: int, peer: tuple[str | None, str, list[str]], scratch: Path
) -> tuple[dict[str, Encode], dict[str, str], list[PeerWorker]]:
    """``({name: encode}, {name: why it is missing}, peer workers to close)`` with ``threads``
    threads; ``peer`` is (the peer environment's python or None, why it is absent, its backends)."""
    from sentence_transformers import SentenceTransformer

    from carl.inference import AffectEncoder
    from carl.inference.graphs import calibration_texts

    torch.set_num_threads(threads)
    methods, missing = {}, {}
    info: dict = {}
    for backend, quantize in CARL_BACKENDS:
        name = f"carl {backend}{'-int8' if quantize else ''}"
        try:
            encoder = AffectEncoder.load(folder, backend=backend, quantize=quantize, num_threads=threads)
        except (RuntimeError, ValueError) as err:  # package or graph absent
            missing[name] = str(err)
            continue
        info = encoder.info or {}
        methods[name] = timed(lambda texts, e=encoder: e.encode(texts, batch_size=batch_size))
    st = SentenceTransformer(folder, device="cpu")
    methods["sentence-transformers torch"] = timed(lambda texts: st.encode(texts, batch_size=batch_size))
    calibration = scratch / "calibration.json"
    calibration.write_text(json.dumps(calibration_texts(info, CALIBRATION)[0]))
    peers, peers_missing, workers = peer_methods(*peer, folder, threads, batch_size, scratch, calibration)
    return {**methods, **peers}, {**missing, **peers_missing}, workers


def time_rounds(
    methods: dict[str, Encode], sets: dict[str, list[str]], rounds: int, batch_size: int, threads: int
) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], np.ndarray]]:
    """A warm-up call per method and text set, then ``rounds`` rounds that run every method once
    per set in rotating order: ``({(method, set): seconds per round}, {(method, set): last embeddings})``."""
    names = list(methods)
    for texts in sets.values():  # warm-up: allocators, kernels, graph compilation
        for name in names:
            methods[name](texts[:batch_size])
    times: dict[tuple[str, str], list[float]] = {(name, s): [] for name in names for s in sets}
    outputs: dict[tuple[str, str], np.ndarray] = {}
    for r in range(rounds):
        for set_name, texts in sets.items():
            for name in names[r % len(names) :] + names[: r % len(names)]:
                outputs[name, set_name], seconds = methods[name](texts)
                times[name, set_name].append(seconds)
                print(f"{threads} threads, round {r + 1}, {set_name}: {name} {seconds:.2f} s", flush=True)
    return times, outputs


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/demo", help="a model or run folder with exported graphs")
    parser.add_argument("--n-short", type=int, default=1000, help="EmoBank sentences (default 1000)")
    parser.add_argument("--n-long", type=int, default=200, help=f"texts of ~{LONG_TOKENS} tokens (default 200)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "encode_speed"))
    parser.add_argument(
        "--st-python",
        help="python of the environment with sentence-transformers' onnx/openvino backends "
        f"(default {ST_PEER_PYTHON.relative_to(ST_PEER_PYTHON.parents[2])} when it exists: make st-peer-env)",
    )
    parser.add_argument(
        "--st-backends",
        nargs="+",
        choices=ST_PEER_BACKENDS,
        default=list(ST_PEER_BACKENDS),
        help="sentence-transformers backends run in that environment (default: all)",
    )
    args = parser.parse_args(argv)
    if args.st_python and not Path(args.st_python).is_file():
        parser.error(f"--st-python {args.st_python}: no such file")
    st_python = args.st_python or (str(ST_PEER_PYTHON) if ST_PEER_PYTHON.is_file() else None)
    st_why_not = f"no {ST_PEER_PYTHON} (make st-peer-env builds it, or pass --st-python)"

    from transformers import AutoTokenizer

    from carl.model.encoder import resolve_encoder

    folder = resolve_encoder(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    sets = {"short": emobank_sentences(args.n_short), "long": long_texts(args.n_long, tokenizer)}
    tokens = {
        k: int(sum(len(ids) for ids in tokenizer(v, truncation=True, max_length=256)["input_ids"]))
        for k, v in sets.items()
    }
    load_before = os.getloadavg()
    results, missing, peers = [], {}, []
    for threads in args.threads:
        with tempfile.TemporaryDirectory(prefix="encode-speed-") as scratch:
            peer = (st_python, st_why_not, args.st_backends)
            methods, missing, workers = methods_for(folder, threads, args.batch_size, peer, Path(scratch))
            try:
                times, outputs = time_rounds(methods, sets, args.rounds, args.batch_size, threads)
            finally:
                for worker in workers:
                    worker.close()
        peers += [{"method": f"sentence-transformers {w.ready['backend']} (peer env)", **w.ready} for w in workers]
        names = list(methods)
        for set_name, texts in sets.items():
            reference = unit(outputs["carl torch", set_name])
            base = len(texts) / statistics.median(times["sentence-transformers torch", set_name])
            for name in names:
                median = statistics.median(times[name, set_name])
                cosine = (unit(outputs[name, set_name]) * reference).sum(axis=1)
                results.append(
                    {
                        "threads": threads,
                        "texts": set_name,
                        "method": name,
                        "median_s": median,
                        "min_s": min(times[name, set_name]),
                        "max_s": max(times[name, set_name]),
                        "texts_per_s": len(texts) / median,
                        "vs_sentence_transformers_torch": len(texts) / median / base,
                        "min_cosine_vs_carl_torch": float(cosine.min()),
                    }
                )
    load_after = os.getloadavg()
    result = {
        "model": args.model,
        "model_folder": folder,
        "n": {k: len(v) for k, v in sets.items()},
        "tokens": tokens,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before[0], load_after[0]],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "missing": missing,
        "sentence_transformers_peer": peers,
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# encode speed: {args.model}, every backend",
        "",
        f"{result['cpu']} ({result['cpu_count']} cores), torch {torch.__version__}, batch {args.batch_size}, "
        f"median of {args.rounds} interleaved rounds; short = {len(sets['short'])} EmoBank sentences "
        f"({tokens['short']} tokens), long = {len(sets['long'])} MR texts of ~{LONG_TOKENS} tokens "
        f"({tokens['long']} tokens); 1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        "| threads | texts | method | texts/s | x sentence-transformers torch | min-max s | min cosine vs carl torch |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['threads']} | {r['texts']} | {r['method']} | {r['texts_per_s']:.1f} | "
        f"{r['vs_sentence_transformers_torch']:.2f}x | {r['min_s']:.2f}-{r['max_s']:.2f} | "
        f"{r['min_cosine_vs_carl_torch']:.4f} |"
        for r in results
    ]
    if peers:
        versions = ", ".join(f"{k} {v}" for k, v in peers[0]["versions"].items())
        lines += ["", f"sentence-transformers (peer env) ran in {st_python}: {versions}."]
        lines += [f"- {p['method']}: {p['graph'] or 'torch weights'}, {p['config']}" for p in peers]
    if missing:
        lines += ["", "Not measured:"] + [f"- {name}: {why}" for name, why in missing.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
