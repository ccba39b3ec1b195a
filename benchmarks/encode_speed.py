"""Encode throughput: carl's ``AffectEncoder.encode`` vs ``SentenceTransformer.encode`` vs a naive
Hugging Face loop, on the same model, texts, batch size and threads, in one run.

    python benchmarks/encode_speed.py [--model minilm-l6] [--n 2000] [--batch-size 64] [--rounds 3]

The texts are the first N EmoBank sentences (all splits, in corpus order). The naive loop is the
recipe of a model card: batches in input order, ``tokenizer(..., padding=True)``, ``torch.no_grad``,
mean pooling. Each round times every method once, in rotating order (so that a busy neighbour
on a shared CPU hurts all three alike); the report gives the median over rounds, the spread, and
checks that the three produce the same embeddings (compared after L2 normalisation, because the
MiniLM folder's sentence-transformers pipeline ends with a Normalize module). Writes results.json and report.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch


def emobank_sentences(n: int) -> list[str]:
    from carl.data.emobank import load_emobank

    texts = [t for split in ("train", "dev", "test") for t in load_emobank(split).texts]
    if n > len(texts):
        raise SystemExit(f"EmoBank has {len(texts)} sentences, asked for {n}")
    return texts[:n]


def naive_encoder(folder: str, max_length: int):
    """The textbook loop: input order, pad per batch, no_grad, mean pooling."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            with torch.no_grad():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy())
        return np.concatenate(out)

    return encode


def padded_tokens(lengths: np.ndarray, order: np.ndarray, batch_size: int) -> int:
    """Tokens the model processes (real + padding) when batches follow ``order``."""
    ordered = lengths[order]
    return int(sum(len(ordered[i:i + batch_size]) * ordered[i:i + batch_size].max()
                   for i in range(0, len(ordered), batch_size)))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--n", type=int, default=2000, help="EmoBank sentences (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "encode_speed"))
    args = parser.parse_args(argv)

    from sentence_transformers import SentenceTransformer

    from carl.inference import AffectEncoder
    from carl.model.encoder import resolve_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = emobank_sentences(args.n)
    folder = resolve_encoder(args.model)
    carl_enc = AffectEncoder.load(args.model)
    st = SentenceTransformer(folder, device="cpu")
    naive = naive_encoder(folder, carl_enc.max_length)
    methods = {
        "carl AffectEncoder.encode": lambda: carl_enc.encode(texts, batch_size=args.batch_size),
        "sentence-transformers encode": lambda: st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True),
        "naive HF loop": lambda: naive(texts, args.batch_size),
    }
    warm = texts[:args.batch_size]  # warm-up: allocator, kernels
    carl_enc.encode(warm, batch_size=args.batch_size)
    st.encode(warm, batch_size=args.batch_size)
    naive(warm, args.batch_size)

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in methods}
    outputs: dict[str, np.ndarray] = {}
    names = list(methods)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            started = time.perf_counter()
            outputs[name] = np.asarray(methods[name]())
            times[name].append(time.perf_counter() - started)
            print(f"round {r + 1} {name}: {times[name][-1]:.2f} s", flush=True)
    load_after = os.getloadavg()

    def unit(x: np.ndarray) -> np.ndarray:  # the MiniLM folder's sentence-transformers pipeline normalises
        return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)

    reference = unit(outputs["carl AffectEncoder.encode"])
    token_ids = carl_enc.tokenizer(texts, truncation=True, max_length=carl_enc.max_length)["input_ids"]
    lengths = np.array([len(ids) for ids in token_ids])
    orders = {names[0]: np.argsort(-lengths, kind="stable"),  # token count, as carl sorts
              names[1]: np.argsort([-len(t) for t in texts]),  # characters, as sentence-transformers sorts
              names[2]: np.arange(len(texts))}  # input order
    rows = []
    for name in names:
        median = statistics.median(times[name])
        rows.append({"method": name, "median_s": median, "min_s": min(times[name]), "max_s": max(times[name]),
                     "sentences_per_s": args.n / median,
                     "max_abs_diff_vs_carl": float(np.abs(unit(outputs[name]) - reference).max()),
                     "padded_tokens": padded_tokens(lengths, orders[name], args.batch_size)})
    speed = {row["method"]: row["sentences_per_s"] for row in rows}
    ratios = {"carl / sentence-transformers": speed[names[0]] / speed[names[1]],
              "carl / naive HF loop": speed[names[0]] / speed[names[2]],
              "sentence-transformers / naive HF loop": speed[names[1]] / speed[names[2]]}
    result = {"model": args.model, "model_folder": folder, "n_sentences": args.n, "batch_size": args.batch_size,
              "real_tokens": int(lengths.sum()),
              "rounds": args.rounds, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
              "cpu": cpu_name(), "cpu_count": os.cpu_count(),
              "load_average_before_after": [load_before[0], load_after[0]],
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "results": rows, "ratios": ratios}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [f"# encode speed: {args.model}, {args.n} EmoBank sentences, batch {args.batch_size}", "",
             f"{result['cpu']} ({result['cpu_count']} cores), torch {torch.__version__}, "
             f"{result['torch_threads']} threads, median of {args.rounds} interleaved rounds; "
             f"1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.", "",
             "| method | sentences/s | median s | min-max s | tokens incl. padding | max abs diff vs carl (unit vectors) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['sentences_per_s']:.1f} | {r['median_s']:.2f} | "
              f"{r['min_s']:.2f}-{r['max_s']:.2f} | {r['padded_tokens']} | {r['max_abs_diff_vs_carl']:.1e} |"
              for r in rows]
    lines += ["", f"Real tokens: {int(lengths.sum())} (the rest of each row's count is padding)."]
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.2f}x |" for k, v in ratios.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
