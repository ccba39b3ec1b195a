"""Chunked embed / predict / explain over a text stream of any size, with a progress bar.

The input is read ``chunk_size`` texts at a time (:class:`carl.inference.text_io.TextSource` never holds
more than a line), each chunk is length-sorted and batched by :class:`carl.AffectEncoder`, and its
results go straight to a streaming writer (:mod:`carl.inference.writers`). Peak memory is one chunk of texts
and results, independent of the input's size; output rows keep the input order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from carl.atomic import write_text_atomic
from carl.inference.encoder import AffectEncoder
from carl.inference.text_io import TextSource, chunked
from carl.inference.writers import (
    EMBED_OUTPUTS,
    EXPLAIN_OUTPUTS,
    HTML_OUTPUTS,
    NpyStreamWriter,
    RowWriter,
    check_output,
    is_npy,
)

DEFAULT_CHUNK = 4096


def run_chunks(
    source: Iterable[str],
    handle: Callable[[list[str]], None],
    *,
    chunk_size: int = DEFAULT_CHUNK,
    show_progress: bool = True,
    desc: str = "texts",
) -> int:
    """Call ``handle`` on consecutive chunks of ``source``; returns the number of texts.

    The progress bar counts bytes of the input file when known (``TextSource``), else texts.
    """
    total_bytes = getattr(source, "total_bytes", None)
    by_bytes = total_bytes is not None
    bar = tqdm(
        total=total_bytes, unit="B" if by_bytes else "text", unit_scale=by_bytes, desc=desc, disable=not show_progress
    )
    count = 0
    try:
        for chunk in chunked(source, chunk_size):
            handle(chunk)
            count += len(chunk)
            if by_bytes:
                bar.update(source.bytes_read() - bar.n)
                bar.set_postfix(texts=count, refresh=False)
            else:
                bar.update(len(chunk))
    finally:
        bar.close()
    if count == 0:
        raise ValueError("no texts in the input")
    return count


def _writer(output: str | None):
    return NpyStreamWriter(output) if is_npy(output) else RowWriter(output)


def _finish(writer, run: Callable[[], int]) -> int:
    try:
        count = run()
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return count


def embed_stream(
    encoder: AffectEncoder,
    source: Iterable[str],
    output: str | None,
    *,
    batch_size: int = 64,
    chunk_size: int = DEFAULT_CHUNK,
    normalize: bool = False,
    show_progress: bool = True,
) -> int:
    """Embeddings to ``.npy`` [N, H], JSONL ``{"text", "embedding"}`` or CSV ``text,e0..e{H-1}``."""
    check_output(output, EMBED_OUTPUTS)
    writer = _writer(output)

    def handle(texts: list[str]) -> None:
        emb = encoder.encode(texts, batch_size=batch_size, normalize=normalize)
        if isinstance(writer, NpyStreamWriter):
            writer.write(emb)
        elif writer.csv:
            writer.write(
                [{"text": t, **{f"e{j}": round(float(x), 6) for j, x in enumerate(e)}} for t, e in zip(texts, emb)]
            )
        else:
            writer.write([{"text": t, "embedding": [round(float(x), 6) for x in e]} for t, e in zip(texts, emb)])

    return _finish(
        writer, lambda: run_chunks(source, handle, chunk_size=chunk_size, show_progress=show_progress, desc="embed")
    )


def predict_stream(
    encoder: AffectEncoder,
    source: Iterable[str],
    output: str | None,
    *,
    batch_size: int = 64,
    chunk_size: int = DEFAULT_CHUNK,
    show_progress: bool = True,
    classes: bool = False,
) -> int:
    """What the model's heads give, one pass per chunk: valence and arousal (a VA head) and the
    top label(s) with calibrated class probabilities (a classifier; ``classes`` demands one).

    JSONL: ``{"text", "valence", "arousal", "labels": [...], "probabilities": {class: p}}``; CSV:
    ``text,valence,arousal,labels,p_<class>...`` (``labels`` a JSON list). ``.npy`` holds one
    array: VA [N, 2] when the model has a VA head and ``classes`` is off, else the probabilities
    [N, C] in the model's class order (said on stderr).
    """
    if classes:
        encoder.require_classifier("predict --classes")
    with_classes = encoder.classifier is not None
    with_va = encoder.has_heads
    if not with_classes:
        encoder.require_heads("predict")
    check_output(output, EMBED_OUTPUTS)
    npy_probabilities = is_npy(output) and with_classes and (classes or not with_va)
    writer = _writer(output)

    def handle(texts: list[str]) -> None:
        if not with_classes:
            valence, arousal = encoder.predict(texts, batch_size=batch_size)
            if isinstance(writer, NpyStreamWriter):
                writer.write(np.stack([valence, arousal], axis=1))
            else:
                writer.write(
                    [
                        {"text": t, "valence": round(float(v), 4), "arousal": round(float(a), 4)}
                        for t, v, a in zip(texts, valence, arousal)
                    ]
                )
            return
        logits, z = encoder.class_logits(texts, batch_size=batch_size, with_va=with_va)
        result = encoder.classifier.classify(logits)
        if isinstance(writer, NpyStreamWriter):
            writer.write(result.probabilities if npy_probabilities else np.stack(encoder.to_scale(z), axis=1))
            return
        rows = [{"text": t} for t in texts]
        if with_va:
            valence, arousal = encoder.to_scale(z)
            for row, v, a in zip(rows, valence, arousal):
                row.update(valence=round(float(v), 4), arousal=round(float(a), 4))
        for row, classified in zip(rows, result.rows()):
            if writer.csv:
                row["labels"] = json.dumps(classified["labels"], ensure_ascii=False)
                row.update({f"p_{c}": p for c, p in classified["probabilities"].items()})
            else:
                row.update(classified)
        writer.write(rows)

    if is_npy(output) and with_classes:
        what = (
            (
                f"calibrated class probabilities [N, {len(encoder.classifier.classes)}] in the order "
                f"{', '.join(encoder.classifier.classes)}"
            )
            if npy_probabilities
            else "valence, arousal [N, 2]"
        )
        print(f"carl predict: {output} holds {what}", file=sys.stderr)
    return _finish(
        writer, lambda: run_chunks(source, handle, chunk_size=chunk_size, show_progress=show_progress, desc="predict")
    )


def explain_stream(
    encoder: AffectEncoder,
    source: Iterable[str],
    output: str | None,
    *,
    html: str | None = None,
    html_limit: int = 200,
    batch_size: int = 16,
    chunk_size: int = 256,
    show_progress: bool = True,
    target: str | None = None,
) -> int:
    """Explanations to JSONL (one object per text), CSV (one row per word) and/or an HTML page.

    ``target``: attributions of that class's calibrated log-odds instead of valence and
    arousal (CSV column ``attribution``). The HTML page shows the first ``html_limit`` texts (a
    page for millions of texts is no use).
    """
    from carl.inference.explain import check_target, explain_class
    from carl.inference.explain_html import render_html

    if target is None:
        encoder.require_heads("explain")
    else:
        check_target(encoder, target)
    check_output(output, EXPLAIN_OUTPUTS)
    check_output(html, HTML_OUTPUTS)
    writer = RowWriter(output) if output is not None or html is None else None
    shown: list = []
    seen = [0]

    def handle(texts: list[str]) -> None:
        explanations = (
            encoder.explain_batch(texts, batch_size=batch_size)
            if target is None
            else explain_class(encoder, texts, target, batch_size=batch_size)
        )
        if len(shown) < html_limit:
            shown.extend(explanations[: html_limit - len(shown)])
        if writer is not None and writer.csv and target is not None:
            writer.write(
                [
                    {"index": seen[0] + k, "word": w, "target": target, "attribution": round(a, 6)}
                    for k, e in enumerate(explanations)
                    for w, a in zip(e.words, e.scores)
                ]
            )
        elif writer is not None and writer.csv:
            writer.write(
                [
                    {
                        "index": seen[0] + k,
                        "word": w,
                        "valence_attribution": round(v, 6),
                        "arousal_attribution": round(a, 6),
                    }
                    for k, e in enumerate(explanations)
                    for w, v, a in zip(e.words, e.valence_scores, e.arousal_scores)
                ]
            )
        elif writer is not None:
            writer.write([e.to_dict() for e in explanations])
        seen[0] += len(texts)

    def run() -> int:
        count = run_chunks(source, handle, chunk_size=chunk_size, show_progress=show_progress, desc="explain")
        if html is not None:
            Path(html).parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(Path(html), render_html(shown, title=f"carl explain: {encoder.source}", total=count))
        return count

    if writer is None:
        return run()
    return _finish(writer, run)


def open_source(path: str | None, column: str = "text", errors: str = "strict") -> TextSource:
    """:class:`TextSource` for a CLI ``--input`` (``-`` = stdin)."""
    return TextSource(path, column, errors)
