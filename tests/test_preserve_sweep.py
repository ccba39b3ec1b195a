"""The preservation sweep script rebuilds its committed report from its committed points."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "benchmarks" / "results" / "preserve_sweep"


def test_report_only_tables_the_cached_points_and_lists_the_missing(tmp_path):
    (tmp_path / "cells").mkdir()
    for point in ("frozen", "carl-w0-s1", "carl-w10-distill-s1"):
        shutil.copy(SWEEP / "cells" / f"{point}.json", tmp_path / "cells")
    done = subprocess.run(
        [sys.executable, "benchmarks/preserve_sweep.py", "--objectives", "carl", "--kinds", "distill"]
        + ["--weights", "0", "10", "2.5", "--seeds", "1", "--report-only", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    frozen = json.loads((SWEEP / "cells" / "frozen.json").read_text())["results"]["tasks"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["not_computed"] == ["carl-w2.5-distill-s1"]
    assert results["commands"] == [
        f"python benchmarks/preserve_sweep.py --objectives carl --kinds distill --weights 0 10 --seeds 1 --out {tmp_path}"
    ]
    rows = {row["point"]: row for row in results["summary"]}
    assert list(rows) == ["frozen", "carl-w0", "carl-w10-distill"]
    assert rows["frozen"]["sickr/spearman"]["mean"] == frozen["sickr"]["metrics"]["spearman"]
    w10, w0 = rows["carl-w10-distill"], rows["carl-w0"]
    for key in ("emobank/valence_pearson", "goemotions/macro_f1"):  # the share of carl's gain the term keeps
        kept = (w10[key]["mean"] - rows["frozen"][key]["mean"]) / (w0[key]["mean"] - rows["frozen"][key]["mean"])
        assert w10[f"{key}/gain_kept"] == pytest.approx(kept) and 0 < kept < 1
    assert w0["emobank/valence_pearson/gain_kept"] == 1
    report = (tmp_path / "report.md").read_text()
    assert "| carl-w10-distill | 1 |" in report and "Not computed yet (1): carl-w2.5-distill-s1." in report
    assert (tmp_path / "front.png").stat().st_size > 0
