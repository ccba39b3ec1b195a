"""The ``carl`` command: train, evaluate, embed, predict, explain, serve, export-onnx."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from carl.config import config_defaults, describe_objectives, load_config
from carl.training.errors import TrainingDiverged

EPILOG_KEYS = "\n".join(f"  {key} (default {value!r})" for key, value in config_defaults().items())


def _add_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a carl model or run folder, an alias (minilm-l6) or a Hugging Face name")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights/activations dtype; auto = bfloat16 on CUDA, float32 on CPU",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _add_backend_args(parser: argparse.ArgumentParser, auto: str = "") -> None:
    parser.add_argument(
        "--backend",
        default="auto" if auto else "torch",
        choices=["torch", "onnx", "openvino"] + (["auto"] if auto else []),
        help="what runs the forward pass; onnx and openvino use the graphs carl export-onnx "
        "wrote into the model folder (default %(default)s" + (f"; {auto})" if auto else ")"),
    )
    parser.add_argument(
        "--quantize",
        default=None,
        choices=["int8"],
        help="run the int8 graph of --backend onnx or openvino (see the folder's parity.md)",
    )


def _add_input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        "-i",
        default="-",
        help="plain text (one per line; a blank line is a text too, embedded as the empty string "
        "is, so output row i is line i), .csv/.tsv or .jsonl file; '-' = stdin (default)",
    )
    parser.add_argument(
        "--errors",
        default="strict",
        choices=["strict", "replace"],
        help="input that is not valid UTF-8: strict stops naming the line (default), "
        "replace reads each invalid byte as U+FFFD",
    )
    parser.add_argument("--column", default="text", help="text column for CSV/TSV/JSONL (default text)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=4096,
        help="texts read, processed and written at a time (bounds memory; default %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carl", description="Emotion-aware text representations (CARL).")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="fine-tune an encoder with CARL (or an ablation)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train into OUTPUT (resumes from its last checkpoint if present). "
        "OUTPUT/model is the exported sentence-transformers folder.",
        epilog="objectives (objective.name) and their terms:\n"
        + describe_objectives()
        + "\n\nconfiguration keys for --set:\n"
        + EPILOG_KEYS,
    )
    train.add_argument("--output", "-o", required=True, help="run folder (checkpoints, metrics, model)")
    train.add_argument("--config", "-c", help="TOML file with [data], [model], [objective], [train] tables")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set objective.name=mcl (repeatable)",
    )
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")

    evaluate = sub.add_parser(
        "evaluate",
        help="ridge probe of frozen embeddings on EmoBank (VA Pearson r), and SICK-R",
        description="Ridge probe of frozen embeddings on EmoBank, and SICK-R (cosine Spearman x100, no "
        "training: is the encoder's general semantics kept?). Under torchrun or accelerate launch the "
        "texts are sharded over the processes and the embeddings gathered (each once); the main "
        "process prints and writes.",
    )
    _add_model_arg(evaluate)
    _add_backend_args(evaluate)
    evaluate.add_argument("--output", "-o", help="write the metrics as JSON here")
    evaluate.add_argument("--limit", type=int, default=0, help="use the first N sentences of each split (0 = all)")
    evaluate.add_argument("--no-progress", action="store_true", help="hide progress bars")

    embed = sub.add_parser("embed", help="sentence embeddings for texts (.npy or JSONL)")
    _add_model_arg(embed)
    _add_backend_args(embed)
    _add_input_args(embed)
    embed.add_argument("--output", "-o", default="-", help=".npy array, .jsonl or .csv rows; '-' = JSONL on stdout")
    embed.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")

    predict = sub.add_parser(
        "predict",
        help="valence and arousal on the training data's scale, emotion classes with calibrated probabilities",
    )
    _add_model_arg(predict)
    _add_backend_args(predict)
    _add_input_args(predict)
    predict.add_argument(
        "--output",
        "-o",
        default="-",
        help=".jsonl, .csv or .npy (VA [N, 2], or with --classes or without a VA head the class "
        "probabilities [N, C]); '-' = JSONL on stdout",
    )
    predict.add_argument(
        "--classes",
        action="store_true",
        help="the emotion classes (top label(s) and calibrated probabilities); an error for a "
        "model without a classification head. Written whenever the model has one",
    )

    explain = sub.add_parser(
        "explain", help="per-word valence/arousal (or one class's) attributions (JSONL, CSV, HTML page)"
    )
    _add_model_arg(explain)
    _add_backend_args(explain)
    _add_input_args(explain)
    explain.set_defaults(batch_size=16, chunk_size=256)
    explain.add_argument(
        "--target",
        metavar="CLASS",
        help="attribute the log-odds of this emotion class's calibrated probability (a model "
        "with a classification head) instead of valence and arousal",
    )
    explain.add_argument(
        "--output",
        "-o",
        default=None,
        help=".jsonl (one object per text) or .csv (one row per word); '-' = JSONL on "
        "stdout (the default unless --html is given)",
    )
    explain.add_argument("--html", help="write a page highlighting words by their contribution")
    explain.add_argument("--html-limit", type=int, default=200, help="texts shown on the HTML page (default 200)")

    serve = sub.add_parser("serve", help="HTTP service: /embed, /predict, /classify, /explain, /health (FastAPI)")
    _add_model_arg(serve)
    _add_backend_args(
        serve,
        auto="auto: on CPU in float32, the fastest backend that passed the quality guard "
        "in the folder's parity.md, else torch",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--max-texts", type=int, default=64, help="texts per /embed, /predict or /classify request (default 64)"
    )
    serve.add_argument("--max-chars", type=int, default=2000, help="characters per text (default 2000)")
    serve.add_argument("--max-explain-texts", type=int, default=8, help="texts per /explain request (default 8)")
    serve.add_argument("--max-body-bytes", type=int, default=1_000_000, help="request body limit (default 1000000)")
    serve.add_argument(
        "--max-batch-texts",
        type=int,
        default=128,
        help="texts merged from concurrent requests into one forward (default 128)",
    )
    serve.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long to wait for more requests to merge (default 5 ms)"
    )
    serve.add_argument(
        "--max-concurrency", type=int, default=256, help="requests handled at once; more get 503 (default 256)"
    )
    serve.add_argument(
        "--max-connections", type=int, default=1000, help="open connections; more are closed at once (default 1000)"
    )
    serve.add_argument(
        "--timeout-header",
        type=float,
        default=5.0,
        help="seconds for a request's line and headers to arrive; else 408 (default 5)",
    )
    serve.add_argument(
        "--timeout-body",
        type=float,
        default=30.0,
        help="seconds for a request's body to arrive after its headers; else 408 (default 30)",
    )
    serve.add_argument("--log-level", default="info", help="uvicorn log level (default info)")

    export_onnx = sub.add_parser(
        "export-onnx",
        help="write the onnx and openvino graphs (float32, int8) into the model folder",
        description="Write MODEL/onnx/model.onnx, onnx/model_int8.onnx and, with openvino installed, "
        "openvino/model.xml and model_int8.xml into the model folder, then measure each against "
        "torch float32 (parity.json, parity.md): what --backend and --quantize load.",
    )
    export_onnx.add_argument("model", help="a carl model or run folder, or a plain encoder folder (written into)")
    export_onnx.add_argument(
        "--output",
        "-o",
        default=None,
        help="also write the plain float32 graph (any ONNX runtime runs it) to this .onnx file",
    )
    export_onnx.add_argument("--threads", type=int, default=None, help="CPU threads (default: the library's choice)")
    export_onnx.add_argument(
        "--limit",
        type=int,
        default=0,
        help="parity set and probe: the first N sentences of each EmoBank split (0 = all)",
    )
    export_onnx.add_argument(
        "--calibration", type=int, default=256, help="training sentences that calibrate int8 (default %(default)s)"
    )

    from carl.evaluation.benchmark_cli import DESCRIPTION, add_benchmark_arguments

    benchmark = sub.add_parser(
        "benchmark",
        help="compare CARL with baselines and ablations on every task",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_benchmark_arguments(benchmark)
    return parser


def _train(args) -> int:
    from carl.training.trainer import CarlTrainer

    cfg = load_config(args.config, args.overrides)
    started = time.time()
    trainer = CarlTrainer(cfg, args.output, show_progress=not args.no_progress)
    try:
        model_dir = trainer.train()
    finally:
        trainer.close()
    trainer.accelerator.print(f"trained {cfg.objective.name} in {time.time() - started:.0f} s; model: {model_dir}")
    return 0


@contextmanager
def _launched_processes(args):
    """Under ``torchrun``/``accelerate launch`` (WORLD_SIZE > 1): join the process group (gloo for
    ``--device cpu``, else NCCL with this rank's GPU) so that inference is sharded over the ranks,
    and leave it at the end. Yields whether this process is the main one (the only one that
    prints and writes)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield True
        return
    from accelerate import PartialState

    state = PartialState(cpu=args.device == "cpu")
    if args.device != "cpu":
        args.device = str(state.device)
    try:
        yield state.is_main_process
    finally:
        state.destroy_process_group()


def _evaluate(args) -> int:
    with _launched_processes(args) as main_process:
        return _evaluate_here(args, main_process)


def _evaluate_here(args, main_process: bool) -> int:
    from carl.data.similarity import load_sick
    from carl.evaluation.features import embed_table
    from carl.evaluation.tasks import relatedness_metrics
    from carl.evaluation.va_probe import evaluate_emobank

    encoder = _load_encoder(args)
    progress = not args.no_progress and main_process
    result = evaluate_emobank(encoder, batch_size=args.batch_size, show_progress=progress, limit=args.limit)
    pairs = load_sick()
    if args.limit:
        pairs = pairs.subset(range(min(args.limit, len(pairs))))
    sick = relatedness_metrics(
        embed_table(encoder, [pairs.texts], batch_size=args.batch_size, show_progress=progress), pairs
    )
    if not main_process:
        return 0
    m = result.metrics
    print(f"\nEmoBank test, ridge probe on frozen embeddings of {args.model}")
    print("| dimension | Pearson r | Spearman rho | MSE (0-1 scale) | ridge alpha |")
    print("|---|---|---|---|---|")
    for name in ("valence", "arousal"):
        print(
            f"| {name} | {m[name + '_pearson']:.4f} | {m[name + '_spearman']:.4f} | "
            f"{m[name + '_mse']:.5f} | {result.alphas[name]:g} |"
        )
    print(
        f"\nSICK-R test ({len(pairs)} pairs), cosine of the two embeddings vs relatedness (no training): "
        f"Spearman rho x100 {sick['spearman']:.2f}, Pearson r x100 {sick['pearson']:.2f}"
    )
    from carl.model.encoder import resolve_encoder
    from carl.model.export import record_metrics

    reference = args.backend == "torch"  # the model card holds the torch model's own figures
    card = {f"emobank_test_{k}": v for k, v in m.items()} | {f"sickr_test_{k}": v for k, v in sick.items()}
    if reference and record_metrics(resolve_encoder(args.model), card):
        print(f"metrics recorded in the model card of {resolve_encoder(args.model)}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(
            json.dumps({"model": args.model, "metrics": m, "alphas": result.alphas, "sickr": sick}, indent=2),
            encoding="utf-8",
        )
    return 0


def _load_encoder(args):
    from carl.inference import AffectEncoder

    return AffectEncoder.load(
        args.model,
        device=args.device,
        dtype=args.dtype,
        num_threads=args.threads,
        backend=getattr(args, "backend", "torch"),
        quantize=getattr(args, "quantize", None),
    )


def _embed(args) -> int:
    from carl.inference.streaming import embed_stream, open_source
    from carl.inference.writers import EMBED_OUTPUTS, check_output

    source = open_source(args.input, args.column, args.errors)
    check_output(args.output, EMBED_OUTPUTS)
    embed_stream(
        _load_encoder(args),
        source,
        args.output,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        normalize=args.normalize,
        show_progress=not args.no_progress,
    )
    return 0


def _predict(args) -> int:
    from carl.inference.streaming import open_source, predict_stream
    from carl.inference.writers import EMBED_OUTPUTS, check_output

    source = open_source(args.input, args.column, args.errors)
    check_output(args.output, EMBED_OUTPUTS)
    predict_stream(
        _load_encoder(args),
        source,
        args.output,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        show_progress=not args.no_progress,
        classes=args.classes,
    )
    return 0


def _explain(args) -> int:
    from carl.inference.streaming import explain_stream, open_source
    from carl.inference.writers import EXPLAIN_OUTPUTS, HTML_OUTPUTS, check_output

    if args.backend != "torch" or args.quantize:
        raise ValueError(
            f"explain needs gradients, which only the torch backend gives: drop --backend {args.backend}"
            + (" --quantize int8" if args.quantize else "")
        )
    source = open_source(args.input, args.column, args.errors)
    check_output(args.output, EXPLAIN_OUTPUTS)
    check_output(args.html, HTML_OUTPUTS)
    explain_stream(
        _load_encoder(args),
        source,
        args.output,
        html=args.html,
        html_limit=args.html_limit,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        show_progress=not args.no_progress,
        target=args.target,
    )
    return 0


def _serve(args) -> int:
    from carl.serve.schemas import ServeLimits
    from carl.serve.server import serve

    if args.backend == "auto":
        from carl.model.encoder import resolve_encoder

        args.backend = "torch"
        folder = Path(resolve_encoder(args.model))
        if args.device == "cpu" and args.dtype in ("auto", "float32") and not args.quantize and folder.is_dir():
            from carl.inference.backends import best_backend

            args.backend, args.quantize = best_backend(folder)
        print(
            f"backend {args.backend}{' int8' if args.quantize else ''} (--backend auto: the fastest that passed "
            "the quality guard in the folder's parity.md, else torch)",
            flush=True,
        )

    limits = ServeLimits(
        max_texts=args.max_texts,
        max_chars=args.max_chars,
        max_explain_texts=args.max_explain_texts,
        max_body_bytes=args.max_body_bytes,
        max_batch_texts=args.max_batch_texts,
        max_wait_ms=args.max_wait_ms,
        batch_size=args.batch_size,
        max_concurrency=args.max_concurrency,
        max_connections=args.max_connections,
        timeout_header_s=args.timeout_header,
        timeout_body_s=args.timeout_body,
    )
    serve(
        args.model,
        host=args.host,
        port=args.port,
        limits=limits,
        device=args.device,
        dtype=args.dtype,
        num_threads=args.threads,
        log_level=args.log_level,
        backend=args.backend,
        quantize=args.quantize,
    )
    return 0


def _export_onnx(args) -> int:
    from carl.inference.graphs import export_graphs, parity_markdown
    from carl.inference.writers import check_output

    if args.output:
        check_output(args.output, (".onnx",))
    report = export_graphs(
        args.model,
        num_threads=args.threads,
        limit=args.limit,
        calibration_size=args.calibration,
        plain_output=args.output,
    )
    print(parity_markdown(report))
    return 0


def _benchmark(args) -> int:
    from carl.evaluation.benchmark_cli import run_from_args

    return run_from_args(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "train": _train,
        "evaluate": _evaluate,
        "embed": _embed,
        "predict": _predict,
        "explain": _explain,
        "serve": _serve,
        "export-onnx": _export_onnx,
    }
    handlers["benchmark"] = _benchmark
    try:
        return handlers[args.command](args)
    except TrainingDiverged as err:  # the run stopped itself; its last good checkpoint is kept
        print(f"carl {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as err:  # ConfigError and DataError are ValueErrors
        print(f"carl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
