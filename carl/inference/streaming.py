"""Chunked embed / predict / explain over a text stream of any size, with a progress bar.

The input is read ``chunk_size`` texts at a time (:class:`carl.inference.text_io.TextSource` never holds
more than a line), each chunk is length-sorted and batched by :class:`carl.AffectEncoder`, and its
results go straight to a streaming writer (:mod:`carl.inference.writers`). Peak memory is one chunk of texts
and results, independent of the input's size; output rows keep the input order.
"""

from __future__ import annotations

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


def run_chunks(source: Iterable[str], handle: Callable[[list[str]], None], *, chunk_size: int = DEFAULT_CHUNK,
               show_progress: bool = True, desc: str = "texts") -> int:
    """Call ``handle`` on consecutive chunks of ``source``; returns the number of texts.

    The progress bar counts bytes of the input file when known (``TextSource``), else texts.
    """
    total_bytes = getattr(source, "total_bytes", None)
    by_bytes = total_bytes is not None
    bar = tqdm(total=total_bytes, unit="B" if by_bytes else "text", unit_scale=by_bytes, desc=desc,
               disable=not show_progress)
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


def embed_stream(encoder: AffectEncoder, source: Iterable[str], output: str | None, *, batch_size: int = 64,
                 chunk_size: int = DEFAULT_CHUNK, normalize: bool = False, show_progress: bool = True) -> int:
    """Embeddings to ``.npy`` [N, H], JSONL ``{"text", "embedding"}`` or CSV ``text,e0..e{H-1}``."""
    check_output(output, EMBED_OUTPUTS)
    writer = _writer(output)

    def handle(texts: list[str]) -> None:
        emb = encoder.encode(texts, batch_size=batch_size, normalize=normalize)
        if isinstance(writer, NpyStreamWriter):
            writer.write(emb)
        elif writer.csv:
            writer.write([{"text": t, **{f"e{j}": round(float(x), 6) for j, x in enumerate(e)}}
                          for t, e in zip(texts, emb)])
        else:
            writer.write([{"text": t, "embedding": [round(float(x), 6) for x in e]} for t, e in zip(texts, emb)])

    return _finish(writer, lambda: run_chunks(source, handle, chunk_size=chunk_size,
                                              show_progress=show_progress, desc="embed"))


def predict_stream(encoder: AffectEncoder, source: Iterable[str], output: str | None, *, batch_size: int = 64,
                   chunk_size: int = DEFAULT_CHUNK, show_progress: bool = True) -> int:
    """Valence and arousal to JSONL/CSV rows ``text,valence,arousal`` or ``.npy`` [N, 2]."""
    encoder.require_heads("predict")
    check_output(output, EMBED_OUTPUTS)
    writer = _writer(output)

    def handle(texts: list[str]) -> None:
        valence, arousal = encoder.predict(texts, batch_size=batch_size)
        if isinstance(writer, NpyStreamWriter):
            writer.write(np.stack([valence, arousal], axis=1))
        else:
            writer.write([{"text": t, "valence": round(float(v), 4), "arousal": round(float(a), 4)}
                          for t, v, a in zip(texts, valence, arousal)])

    return _finish(writer, lambda: run_chunks(source, handle, chunk_size=chunk_size,
                                              show_progress=show_progress, desc="predict"))


def explain_stream(encoder: AffectEncoder, source: Iterable[str], output: str | None, *, html: str | None = None,
                   html_limit: int = 200, batch_size: int = 16, chunk_size: int = 256,
                   show_progress: bool = True) -> int:
    """Explanations to JSONL (one object per text), CSV (one row per word) and/or an HTML page.

    The HTML page shows the first ``html_limit`` texts (a page for millions of texts is no use).
    """
    from carl.inference.explain_html import render_html

    encoder.require_heads("explain")
    check_output(output, EXPLAIN_OUTPUTS)
    check_output(html, HTML_OUTPUTS)
    writer = RowWriter(output) if output is not None or html is None else None
    shown: list = []
    seen = [0]

    def handle(texts: list[str]) -> None:
        explanations = encoder.explain_batch(texts, batch_size=batch_size)
        if len(shown) < html_limit:
            shown.extend(explanations[: html_limit - len(shown)])
        if writer is not None and writer.csv:
            writer.write([{"index": seen[0] + k, "word": w, "valence_attribution": round(v, 6),
                           "arousal_attribution": round(a, 6)}
                          for k, e in enumerate(explanations)
                          for w, v, a in zip(e.words, e.valence_scores, e.arousal_scores)])
        elif writer is not None:
            writer.write([e.to_dict() for e in explanations])
        seen[0] += len(texts)

    def run() -> int:
        count = run_chunks(source, handle, chunk_size=chunk_size, show_progress=show_progress, desc="explain")
        if html is not None:
            Path(html).parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(Path(html), render_html(shown, title=f"carl explain: {encoder.source}",
                                                      total=count))
        return count

    if writer is None:
        return run()
    return _finish(writer, run)


def open_source(path: str | None, column: str = "text", errors: str = "strict") -> TextSource:
    """:class:`TextSource` for a CLI ``--input`` (``-`` = stdin)."""
    return TextSource(path, column, errors)
