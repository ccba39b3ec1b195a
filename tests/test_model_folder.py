"""Model folders that fail safe: every broken, missing or inconsistent file is one
``ModelFolderError`` naming it (one line from the CLI, no traceback); a local path never
reaches the Hugging Face Hub; loading reads safetensors and JSON only (nothing is unpickled)."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from carl.inference import AffectEncoder
from carl.model.folder import ModelFolderError, check_safetensors, looks_local


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _widen_regression_head(folder: Path) -> None:
    """Rewrite carl/heads.safetensors with a VA head one input wider than the encoder."""
    from safetensors.torch import load_file, save_file

    path = folder / "carl" / "heads.safetensors"
    tensors = load_file(str(path))
    weight = tensors["regression.linear.weight"]
    tensors["regression.linear.weight"] = torch.cat([weight, weight[:, :1]], dim=1)
    save_file(tensors, str(path))


def _edit_info(folder: Path, **changes) -> None:
    path = folder / "carl" / "carl.json"
    info = json.loads(path.read_text(encoding="utf-8"))
    info.update(changes)
    path.write_text(json.dumps({k: v for k, v in info.items() if v != "DROP"}), encoding="utf-8")


BREAKAGES = {
    "truncated weights": (
        lambda d: _truncate(d / "model.safetensors"),
        r"model\.safetensors: truncated: \d+ bytes, the header describes \d+",
    ),
    "truncated heads": (lambda d: _truncate(d / "carl" / "heads.safetensors"), r"carl/heads\.safetensors: truncated"),
    "garbage heads": (
        lambda d: (d / "carl" / "heads.safetensors").write_bytes(b"not a tensor file"),
        r"carl/heads\.safetensors: truncated or not a safetensors file",
    ),
    "carl.json without scale": (lambda d: _edit_info(d, scale="DROP"), r"carl/carl\.json: no 'scale'"),
    "carl.json with a bad scale": (lambda d: _edit_info(d, scale=[5, 1]), r"carl\.json: 'scale' must be \[low, high\]"),
    "carl.json not JSON": (
        lambda d: (d / "carl" / "carl.json").write_text('{"pooling": ', encoding="utf-8"),
        r"carl/carl\.json: not valid JSON",
    ),
    "carl.json bad pooling": (lambda d: _edit_info(d, pooling="max"), r"'pooling' must be one of mean, cls"),
    "heads missing": (lambda d: (d / "carl" / "heads.safetensors").unlink(), r"carl/heads\.safetensors: missing"),
    "head sizes inconsistent": (
        lambda d: _widen_regression_head(d),
        r"tensor 'regression\.linear\.weight' has shape \[2, 33\], the model needs \[2, 32\]",
    ),
    "untrained head listed": (
        lambda d: _edit_info(d, heads=["va", "query"]),
        r"tensors do not match carl/carl\.json's heads: missing \['projection\.",
    ),
    "pickled weights only": (
        lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"),
        r"pytorch_model\.bin: weights only as a PyTorch pickle",
    ),
    "no config.json": (lambda d: (d / "config.json").unlink(), r"config\.json: missing: not a model folder"),
    "broken tokenizer": (
        lambda d: (d / "tokenizer.json").write_text("{}", encoding="utf-8"),
        r": cannot load the tokenizer \(",
    ),
    "bad max_seq_length": (
        lambda d: (d / "sentence_bert_config.json").write_text('{"max_seq_length": "long"}'),
        r"sentence_bert_config\.json: 'max_seq_length' must be a positive integer",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_model_folder_is_one_named_error(affect_model, tmp_path, breakage):
    folder = tmp_path / "model"
    shutil.copytree(affect_model, folder)
    AffectEncoder.load(str(folder))  # the copy loads before it is broken
    breaks, message = BREAKAGES[breakage]
    breaks(folder)
    with pytest.raises(ModelFolderError, match=message) as err:
        AffectEncoder.load(str(folder))
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_missing_or_empty_folders_never_reach_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.toml").write_text("", encoding="utf-8")
    cases = {
        "empty": "empty/config.json: missing",
        "./nope": "nope: no such model folder",
        "runs/a/b": "runs/a/b: no such model folder",
        "~/carl-no-such-model": "no such model folder",
        "run": "a carl run folder without an exported model/",
        str(tmp_path / "absent"): "no such model folder",
    }
    for name, message in cases.items():
        assert looks_local(name)
        with pytest.raises(ModelFolderError, match=message):
            AffectEncoder.load(name)
    assert not looks_local("sentence-transformers/all-MiniLM-L6-v2") and not looks_local("bert-base-uncased")


def test_a_model_without_a_va_scale_has_no_heads(affect_model, tmp_path):
    """``"scale": null`` in carl.json: a carl folder whose VA head was not trained (embeddings only)."""
    folder = tmp_path / "model"
    shutil.copytree(affect_model, folder)
    _edit_info(folder, scale=None)
    encoder = AffectEncoder.load(str(folder))
    assert not encoder.has_heads and encoder.scale is None
    assert encoder.encode(["a serene day"]).shape == (1, encoder.dim)
    with pytest.raises(RuntimeError, match="no VA regression head"):
        encoder.predict(["a serene day"])


def test_safetensors_header_check(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(3, 4), "b": torch.ones(2)}, str(path))
    assert check_safetensors(path) == {"a": (3, 4), "b": (2,)}
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelFolderError, match="longer than its header says"):
        check_safetensors(path)


def test_loading_unpickles_nothing(affect_model, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the load path unpickled something")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    encoder = AffectEncoder.load(str(affect_model))
    assert encoder.has_heads and encoder.predict("a serene day").valence == pytest.approx(
        encoder.predict(["a serene day"]).valence[0]
    )


def test_cli_and_service_report_a_broken_folder_in_one_line(affect_model, tmp_path):
    from conftest import cli_env

    truncated, unscaled, empty = tmp_path / "truncated", tmp_path / "unscaled", tmp_path / "empty"
    for folder in (truncated, unscaled):
        shutil.copytree(affect_model, folder)
    _truncate(truncated / "carl" / "heads.safetensors")
    _edit_info(unscaled, scale="DROP")
    empty.mkdir()
    cases = [
        (["predict", str(truncated), "--no-progress"], f"{truncated}/carl/heads.safetensors: truncated"),
        (["serve", str(unscaled), "--port", "0"], f"{unscaled}/carl/carl.json: no 'scale'"),
        (["embed", str(empty), "--no-progress"], f"{empty}/config.json: missing: not a model folder"),
    ]
    for args, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "carl.cli", *args],
            input="a serene day\n",
            text=True,
            capture_output=True,
            env=cli_env(),
            timeout=120,
            check=False,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("carl ")]
        assert len(errors) == 1 and errors[0].startswith(f"carl {args[0]}: error: {message}"), result.stderr
        assert "Traceback" not in result.stderr and "huggingface" not in result.stderr
