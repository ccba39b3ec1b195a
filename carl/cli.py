"""The ``carl`` command: train, evaluate, embed, predict."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from carl.config import config_defaults, load_config

EPILOG_KEYS = "\n".join(f"  {key} (default {value!r})" for key, value in config_defaults().items())


def _add_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a carl model or run folder, an alias (minilm-l6) or a Hugging Face name")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")


def _add_input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", default="-",
                        help="plain text (one per line), .csv/.tsv or .jsonl file; '-' = stdin (default)")
    parser.add_argument("--column", default="text", help="text column for CSV/TSV/JSONL (default text)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carl", description="Emotion-aware text representations (CARL).")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="fine-tune an encoder with CARL (or an ablation)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train into OUTPUT (resumes from its last checkpoint if present). "
                    "OUTPUT/model is the exported sentence-transformers folder.",
        epilog="configuration keys for --set:\n" + EPILOG_KEYS)
    train.add_argument("--output", "-o", required=True, help="run folder (checkpoints, metrics, model)")
    train.add_argument("--config", "-c", help="TOML file with [data], [model], [objective], [train] tables")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key, e.g. --set objective.name=mcl (repeatable)")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")

    evaluate = sub.add_parser("evaluate", help="ridge probe of frozen embeddings on EmoBank (VA Pearson r)")
    _add_model_arg(evaluate)
    evaluate.add_argument("--output", "-o", help="write the metrics as JSON here")
    evaluate.add_argument("--limit", type=int, default=0, help="use the first N sentences of each split (0 = all)")
    evaluate.add_argument("--no-progress", action="store_true", help="hide progress bars")

    embed = sub.add_parser("embed", help="sentence embeddings for texts (.npy or JSONL)")
    _add_model_arg(embed)
    _add_input_args(embed)
    embed.add_argument("--output", "-o", default="-", help=".npy array or .jsonl rows; '-' = JSONL on stdout")
    embed.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")

    predict = sub.add_parser("predict", help="valence and arousal on the training data's scale")
    _add_model_arg(predict)
    _add_input_args(predict)
    predict.add_argument("--output", "-o", default="-", help=".jsonl or .csv; '-' = JSONL on stdout")
    return parser


def _train(args) -> int:
    from carl.training.trainer import CarlTrainer

    cfg = load_config(args.config, args.overrides)
    started = time.time()
    model_dir = CarlTrainer(cfg, args.output, show_progress=not args.no_progress).train()
    print(f"trained {cfg.objective.name} in {time.time() - started:.0f} s; model: {model_dir}")
    return 0


def _evaluate(args) -> int:
    from carl.evaluation.va_probe import evaluate_emobank
    from carl.inference import AffectEncoder

    encoder = AffectEncoder.load(args.model, device=args.device)
    result = evaluate_emobank(encoder, batch_size=args.batch_size, show_progress=not args.no_progress,
                              limit=args.limit)
    m = result.metrics
    print(f"\nEmoBank test, ridge probe on frozen embeddings of {args.model}")
    print("| dimension | Pearson r | Spearman rho | MSE (0-1 scale) | ridge alpha |")
    print("|---|---|---|---|---|")
    for name in ("valence", "arousal"):
        print(f"| {name} | {m[name + '_pearson']:.4f} | {m[name + '_spearman']:.4f} | "
              f"{m[name + '_mse']:.5f} | {result.alphas[name]:g} |")
    from carl.model.encoder import resolve_encoder
    from carl.model.export import record_metrics

    if record_metrics(resolve_encoder(args.model), {f"emobank_test_{k}": v for k, v in m.items()}):
        print(f"metrics recorded in the model card of {resolve_encoder(args.model)}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"model": args.model, "metrics": m, "alphas": result.alphas},
                                                indent=2), encoding="utf-8")
    return 0


def _embed(args) -> int:
    from carl.inference import AffectEncoder
    from carl.text_io import read_texts, write_embeddings

    texts = read_texts(args.input, args.column)
    encoder = AffectEncoder.load(args.model, device=args.device)
    write_embeddings(args.output, texts, encoder.encode(texts, batch_size=args.batch_size,
                                                        normalize=args.normalize, show_progress=True))
    return 0


def _predict(args) -> int:
    from carl.inference import AffectEncoder
    from carl.text_io import read_texts, write_rows

    texts = read_texts(args.input, args.column)
    encoder = AffectEncoder.load(args.model, device=args.device)
    valence, arousal = encoder.predict(texts, batch_size=args.batch_size, show_progress=True)
    write_rows(args.output, [{"text": t, "valence": round(float(v), 4), "arousal": round(float(a), 4)}
                             for t, v, a in zip(texts, valence, arousal)])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": _train, "evaluate": _evaluate, "embed": _embed, "predict": _predict}
    try:
        return handlers[args.command](args)
    except (ValueError, RuntimeError, OSError) as err:  # ConfigError and DataError are ValueErrors
        print(f"carl {args.command}: error: {err}", file=sys.stderr)
        return 1 if type(err).__name__ == "TrainingDiverged" else 2


if __name__ == "__main__":
    sys.exit(main())
