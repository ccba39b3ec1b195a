"""Streaming input and output of ``carl embed``/``predict``/``explain``: formats, order, memory.

Inputs are read one line at a time and processed in chunks, and ``.npy`` output is appended
and its header fixed at the end, so memory is bounded by a chunk, not by the input: checked
with tracemalloc on a 200,000-line input (reading it whole would hold ~20 MB of strings).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from carl.cli import main
from carl.data.errors import DataError
from carl.inference import AffectEncoder
from carl.inference.streaming import embed_stream, run_chunks
from carl.inference.text_io import TextSource, read_texts
from carl.inference.writers import NPY_HEADER_BYTES, NpyStreamWriter, RowWriter

TEXTS = ["a serene morning", "they were furious, again", "tired", "the 'quoted' \"text\"", "é ü 漢字"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The same TEXTS as .txt, .csv (column 'body'), .tsv and .jsonl (with blank lines)."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "t.txt").write_text("\n".join(TEXTS[:2]) + "\n\n" + "\n".join(TEXTS[2:]) + "\n", encoding="utf-8")
    for name, delim in (("t.csv", ","), ("t.tsv", "\t")):
        with open(folder / name, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter=delim)
            w.writerow(["id", "body"])
            w.writerows(enumerate(TEXTS))
    (folder / "t.jsonl").write_text(
        "\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(TEXTS)) + "\n\n", encoding="utf-8"
    )
    return folder


@pytest.mark.parametrize("name, column", [("t.txt", "text"), ("t.csv", "body"), ("t.tsv", "body"), ("t.jsonl", "body")])
def test_every_format_streams_the_same_texts(inputs, name, column):
    source = TextSource(str(inputs / name), column)
    assert source.total_bytes == (inputs / name).stat().st_size and source.bytes_read() == 0
    # a blank line of plain text is a text (row i is line i); a blank JSONL line holds no record
    assert list(source) == (TEXTS[:2] + [""] + TEXTS[2:] if name == "t.txt" else TEXTS)
    assert source.bytes_read() == source.total_bytes


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\n\ntwo\r\n"))
    assert read_texts("-") == ["one", "", "two"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbfone\n  \ncaf\xc3\xa9\n")))
    assert read_texts("-") == ["one", "  ", "café"]  # read as bytes, BOM dropped, whitespace kept


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.csv", "id,text\n1,x\n", "no column 'body'"),
        ("bad.jsonl", '{"body": "ok"}\n{"body": 3}\n', "line 2, field 'body': expected a string"),
        ("bad2.jsonl", '{"body": "ok"}\nnot json\n', "line 2, field 'body': cannot read"),
    ],
)
def test_bad_input_names_file_line_and_field(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        list(TextSource(str(path), "body"))
    with pytest.raises(DataError, match="file not found"):
        TextSource(str(tmp_path / "missing.txt"))


def test_npy_writer_fixes_the_shape_at_close(tmp_path):
    path = tmp_path / "out.npy"
    writer = NpyStreamWriter(path)
    chunks = [np.random.default_rng(i).normal(size=(n, 7)).astype(np.float32) for i, n in enumerate((3, 0, 5, 1))]
    for c in chunks:
        writer.write(c)
    assert not path.exists()  # nothing at the final name until close
    writer.close()
    np.testing.assert_array_equal(np.load(path), np.concatenate(chunks))
    assert np.load(path, mmap_mode="r").shape == (9, 7)
    assert path.stat().st_size == NPY_HEADER_BYTES + 9 * 7 * 4
    w = NpyStreamWriter(tmp_path / "w.npy")
    w.write(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="width changed"):
        w.write(np.zeros((2, 4)))
    w.abort()


def test_aborted_writers_leave_nothing(tmp_path):
    for make, name in ((NpyStreamWriter, "a.npy"), (RowWriter, "a.jsonl"), (RowWriter, "a.csv")):
        writer = make(tmp_path / name)
        assert list(tmp_path.glob(".*.tmp"))
        writer.abort()
        assert not (tmp_path / name).exists() and not list(tmp_path.glob(".*.tmp"))


class ConstantEncoder:
    """Stands in for AffectEncoder in the memory test: row i of a chunk is [len(text)] * 16."""

    def encode(self, texts, batch_size=64, normalize=False):
        return np.repeat(np.array([[len(t)] for t in texts], dtype=np.float32), 16, axis=1)


def test_memory_is_bounded_by_the_chunk_not_the_input(tmp_path):
    n = 200_000
    src = tmp_path / "big.txt"
    with open(src, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"sentence number {i} about a serene morning by the quiet river\n")
    out = tmp_path / "big.npy"
    tracemalloc.start()
    try:
        count = embed_stream(ConstantEncoder(), TextSource(str(src)), str(out), chunk_size=1000, show_progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    emb = np.load(out, mmap_mode="r")
    assert emb.shape == (n, 16) and emb[0, 0] == len("sentence number 0 about a serene morning by the quiet river")
    assert emb[-1, 0] == len(f"sentence number {n - 1} about a serene morning by the quiet river")
    input_mb, output_mb = src.stat().st_size / 2**20, out.stat().st_size / 2**20
    assert peak / 2**20 < 2.0, f"peak {peak / 2**20:.1f} MiB for a {input_mb:.0f} MiB input, {output_mb:.0f} MiB output"


def test_run_chunks_rejects_empty_input():
    with pytest.raises(ValueError, match="no texts"):
        run_chunks(iter([]), lambda chunk: None, show_progress=False)


def test_cli_outputs_match_the_python_api(affect_model, inputs, tmp_path):
    """embed (.npy, .jsonl, .csv), predict (.jsonl, .csv, .npy) and explain (.jsonl, .csv) with
    chunks of 2 texts, so that chunk boundaries and length sorting must both keep the order.
    In-process (``carl.cli.main``) to save interpreter start-ups; stdin runs as a subprocess below."""
    encoder = AffectEncoder.load(str(affect_model))
    emb = encoder.encode(TEXTS)
    valence, arousal = encoder.predict(TEXTS)
    src, common = inputs / "t.csv", ["--column", "body", "--chunk-size", "2", "--no-progress", "--threads", "1"]
    outs = {
        name: tmp_path / name for name in ("e.npy", "e.jsonl", "e.csv", "p.jsonl", "p.csv", "p.npy", "x.jsonl", "x.csv")
    }
    for name, path in outs.items():
        command = {"e": "embed", "p": "predict", "x": "explain"}[name[0]]
        assert main([command, str(affect_model), "-i", str(src), "-o", str(path), *common]) == 0
    np.testing.assert_allclose(np.load(outs["e.npy"]), emb, atol=1e-5)
    rows = [json.loads(line) for line in outs["e.jsonl"].read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    np.testing.assert_allclose([r["embedding"] for r in rows], emb, atol=1e-5)
    with open(outs["e.csv"], encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["text"] for r in table] == TEXTS and len(table[0]) == 1 + emb.shape[1]
    np.testing.assert_allclose([[float(r[f"e{j}"]) for j in range(emb.shape[1])] for r in table], emb, atol=1e-5)
    rows = [json.loads(line) for line in outs["p.jsonl"].read_text(encoding="utf-8").splitlines()]
    np.testing.assert_allclose([r["valence"] for r in rows], valence, atol=1e-4)
    np.testing.assert_allclose(np.load(outs["p.npy"]), np.stack([valence, arousal], 1), atol=1e-5)
    with open(outs["p.csv"], encoding="utf-8", newline="") as f:
        assert [float(r["arousal"]) for r in csv.DictReader(f)] == pytest.approx(arousal, abs=1e-4)
    rows = [json.loads(line) for line in outs["x.jsonl"].read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS and rows[1]["words"] == ["they", "were", "furious", ",", "again"]
    with open(outs["x.csv"], encoding="utf-8", newline="") as f:
        words = list(csv.DictReader(f))
    assert [w["word"] for w in words if w["index"] == "1"] == rows[1]["words"]


def test_cli_reads_stdin_and_reports_bad_input(affect_model, tmp_path, capsys):
    import subprocess

    from conftest import cli_env

    result = subprocess.run(
        [sys.executable, "-m", "carl.cli", "predict", str(affect_model), "--no-progress", "--threads", "1"],
        input="a serene day\n\nfurious\n",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["a serene day", "", "furious"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n', encoding="utf-8")
    out = tmp_path / "never.npy"
    assert main(["embed", str(affect_model), "-i", str(bad), "-o", str(out), "--no-progress"]) == 2
    assert "bad.jsonl, line 2, field 'text'" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("command", ["embed", "predict", "explain", "serve", "export-onnx"])
def test_inference_subcommands_document_their_options(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: carl {command}")
    for flag in {
        "embed": ["--chunk-size", "--threads", "--dtype", "--normalize", "--errors", "blank"],
        "predict": ["--chunk-size", "--no-progress", "--errors"],
        "explain": ["--html", "--html-limit", "--errors"],
        "serve": ["--host", "--port", "--max-texts", "--max-chars", "--max-wait-ms", "--max-body-bytes"],
        "export-onnx": ["--output"],
    }[command]:
        assert flag in text


def run_cli_bytes(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """``python -m carl.cli`` with raw bytes on stdin; stdout and stderr decoded leniently."""
    from conftest import cli_env

    result = subprocess.run(
        [sys.executable, "-m", "carl.cli", *args, "--no-progress", "--threads", "1"],
        input=stdin,
        capture_output=True,
        env=cli_env(),
        timeout=120,
        check=False,
    )
    result.stdout, result.stderr = (x.decode("utf-8", "replace") for x in (result.stdout, result.stderr))
    return result


def test_invalid_utf8_names_the_line_or_is_replaced(affect_model, tmp_path):
    out = tmp_path / "o.jsonl"
    strict = run_cli_bytes("predict", str(affect_model), "-o", str(out), stdin=b"ok\ncaf\xe9\n")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "<stdin>, line 2: invalid UTF-8 (byte 0xe9 at byte 4 of the line)" in strict.stderr
    assert "--errors replace" in strict.stderr
    assert not out.exists() and not list(tmp_path.glob(".*"))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"id,text\n1,fine\n2,na\xefve\n")
    with pytest.raises(DataError, match=r"bad.csv, line 3: invalid UTF-8 \(byte 0xef at byte 5"):
        list(TextSource(str(bad)))
    assert list(TextSource(str(bad), errors="replace")) == ["fine", "na\ufffdve"]
    assert (
        main(["predict", str(affect_model), "-i", str(bad), "-o", str(out), "--errors", "replace", "--no-progress"])
        == 0
    )
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == ["fine", "na\ufffdve"]
    with pytest.raises(ValueError, match="unknown decoding policy 'ignore'"):
        TextSource(str(bad), errors="ignore")


def test_blank_lines_keep_their_rows(affect_model, tmp_path):
    """Row i of the .npy is line i of the input: blank and whitespace-only lines are embedded
    like the empty string, never dropped."""
    src, out = tmp_path / "t.txt", tmp_path / "e.npy"
    src.write_text("a serene day\n\n   \nfurious\n", encoding="utf-8")
    assert main(["embed", str(affect_model), "-i", str(src), "-o", str(out), "--no-progress", "--chunk-size", "2"]) == 0
    emb = np.load(out)
    encoder = AffectEncoder.load(str(affect_model))
    assert emb.shape == (4, encoder.dim)
    np.testing.assert_allclose(emb, encoder.encode(["a serene day", "", "   ", "furious"]), atol=1e-5)
    np.testing.assert_allclose(emb[1], encoder.encode(""), atol=1e-5)


def test_outputs_are_checked_before_any_work(tmp_path, capsys):
    """The model argument does not exist: each error below must come before it is looked at."""
    missing_model = str(tmp_path / "no-model")
    src = tmp_path / "t.txt"
    src.write_text("a serene day\n", encoding="utf-8")
    (tmp_path / "folder.npy").mkdir()
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    cases = [
        (
            ["embed", "-o", str(tmp_path / "emb.parquet")],
            "unknown output format '.parquet'; name a .npy, .jsonl, .csv file or '-' for stdout",
        ),
        (["predict", "-o", str(tmp_path / "noext")], "unknown output format '(no extension)'"),
        (["explain", "-o", str(tmp_path / "x.npy")], "unknown output format '.npy'; name a .jsonl, .csv"),
        (["explain", "--html", str(tmp_path / "page.txt")], "name a .html, .htm file"),
        (["embed", "-o", str(tmp_path / "folder.npy")], "folder.npy: is a folder"),
        (["predict", "-o", str(tmp_path / "afile" / "p.csv")], "afile is a file, not a folder"),
        (["export-onnx", "-o", str(tmp_path / "m.bin")], "name a .onnx file"),
    ]
    for args, message in cases:
        command, rest = args[0], args[1:]
        extra = ["-i", str(src), "--no-progress"] if command != "export-onnx" else []
        assert main([command, missing_model, *rest, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "no-model" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder.npy", "t.txt"]  # nothing written
    for output, message in (
        (tmp_path / "emb.parquet", "unknown output format '.parquet'"),
        (tmp_path / "folder.npy", "folder.npy: is a folder"),
    ):
        result = run_cli_bytes("embed", missing_model, "-o", str(output), stdin=b"a day\n")
        assert result.returncode == 2 and "Traceback" not in result.stderr and message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder.npy", "t.txt"]


def test_a_failed_rename_leaves_no_temporary(tmp_path):
    writer = RowWriter(tmp_path / "out.jsonl")
    writer.write([{"text": "x"}])
    (tmp_path / "out.jsonl").mkdir()  # appears while the run works: the final rename fails
    with pytest.raises(OSError):
        writer.close()
    assert not list(tmp_path.glob(".*.tmp"))
