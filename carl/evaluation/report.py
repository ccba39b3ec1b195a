"""The benchmark report: tables (mean ± std over seeds, best per column in bold) and plots.

:func:`summarise` aggregates the cells of ``results.json`` per method; :func:`write_report`
writes ``report.md`` and the PNG plots (:mod:`carl.evaluation.plots`) next to it;
:func:`readme_section` / :func:`update_readme` put one compact table into a README between the
markers ``<!-- benchmark-results:start -->`` and ``<!-- benchmark-results:end -->``.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from carl.data.user_corpora import USER_CORPORA

README_START = "<!-- benchmark-results:start -->"
README_END = "<!-- benchmark-results:end -->"

# (source, metric, header, direction): source is a task name or "geometry:<set>";
# direction +1 = higher is better, -1 = lower is better
TABLES: dict[str, tuple[str, list[tuple[str, str, str, int]]]] = {
    "va": (
        "VA regression: EmoBank test, ridge probe (alpha on dev); MSE on the 0-1 scale",
        [
            ("emobank", "valence_pearson", "valence r", 1),
            ("emobank", "valence_spearman", "valence rho", 1),
            ("emobank", "valence_mse", "valence MSE", -1),
            ("emobank", "arousal_pearson", "arousal r", 1),
            ("emobank", "arousal_spearman", "arousal rho", 1),
            ("emobank", "arousal_mse", "arousal MSE", -1),
        ],
    ),
    "polarity": (
        "Polarity: SST-2 test (C on dev) and MR (stratified k-fold CV, C on an inner fold), logistic-regression probe",
        [
            ("sst2", "accuracy", "SST-2 acc", 1),
            ("sst2", "macro_f1", "SST-2 macro-F1", 1),
            ("mr", "accuracy", "MR acc", 1),
            ("mr", "macro_f1", "MR macro-F1", 1),
        ],
    ),
    "emotion": (
        "Emotion: GoEmotions Ekman + neutral test (C on dev by macro-F1) and SST-5 test",
        [
            ("goemotions", "accuracy", "GoEmotions acc", 1),
            ("goemotions", "macro_f1", "GoEmotions macro-F1", 1),
            ("sst5", "accuracy", "SST-5 acc", 1),
            ("sst5", "macro_f1", "SST-5 macro-F1", 1),
        ],
    ),
    "semantics": (
        "General semantics: SICK-R test, Spearman rho x 100 of the two sentences' embedding cosine against "
        "their relatedness (no training; does affect tuning keep the encoder's meaning?)",
        [
            ("sickr", "spearman", "SICK-R rho x100", 1),
            ("sickr", "pearson", "SICK-R r x100", 1),
        ],
    ),
    "geometry": (
        "Geometry (Wang and Isola, 2020), L2-normalised embeddings; lower is better",
        [
            ("geometry:emobank_test", "alignment_va", "align VA-near (EmoBank)", -1),
            ("geometry:emobank_test", "uniformity", "uniformity (EmoBank)", -1),
            ("geometry:sst2_test", "alignment_label", "align same-label (SST-2)", -1),
            ("geometry:goemotions_test", "alignment_label", "align same-label (GoEmotions)", -1),
            ("geometry:goemotions_test", "uniformity", "uniformity (GoEmotions)", -1),
        ],
    ),
}


def cell_value(cell: dict, source: str, metric: str) -> float | None:
    """One number of a cell (None when the task or metric is absent or not finite)."""
    results = cell.get("results", {})
    if source.startswith("geometry:"):
        value = results.get("geometry", {}).get(source.split(":", 1)[1], {}).get(metric)
    else:
        value = results.get("tasks", {}).get(source, {}).get("metrics", {}).get(metric)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def method_cells(results: dict) -> dict[str, list[dict]]:
    """Cells grouped by method, in the settings' method order (seeds in order)."""
    groups: dict[str, list[dict]] = {m: [] for m in results["settings"]["methods"]}
    for cell in results["cells"].values():
        groups.setdefault(cell["method"], []).append(cell)
    for cells in groups.values():
        cells.sort(key=lambda c: (c.get("seed") is None, c.get("seed") or 0))
    return {m: cells for m, cells in groups.items() if cells}


def aggregate(values: list[float]) -> dict | None:
    """Mean, sample standard deviation (0 for one value) and the values."""
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def summarise(results: dict) -> dict[str, dict[str, dict | None]]:
    """``{method: {"source/metric": {mean, std, n, values}}}`` for every table column."""
    summary = {}
    for method, cells in method_cells(results).items():
        row = {}
        for _, columns in TABLES.values():
            for source, metric, _, _ in columns:
                values = [v for v in (cell_value(c, source, metric) for c in cells) if v is not None]
                row[f"{source}/{metric}"] = aggregate(values)
        for source in _extra_tasks(results):
            for metric in _extra_metrics(results, source):
                values = [v for v in (cell_value(c, source, metric) for c in cells) if v is not None]
                row[f"{source}/{metric}"] = aggregate(values)
        summary[method] = row
    return summary


def _extra_tasks(results: dict) -> list[str]:
    standard = {source for _, cols in TABLES.values() for source, *_ in cols}
    return sorted({t for c in results["cells"].values() for t in c.get("results", {}).get("tasks", {})} - standard)


def _extra_metrics(results: dict, task: str) -> list[str]:
    kinds = {
        c["results"]["tasks"][task]["kind"]
        for c in results["cells"].values()
        if task in c.get("results", {}).get("tasks", {})
    }
    return ["valence_pearson", "arousal_pearson"] if "va" in kinds else ["accuracy", "macro_f1"]


def _fmt(agg: dict | None, digits: int) -> str:
    if agg is None:
        return "-"
    if agg["n"] > 1:
        return f"{agg['mean']:.{digits}f} ± {agg['std']:.{digits}f}"
    return f"{agg['mean']:.{digits}f}"


def markdown_table(summary: dict, columns: list[tuple[str, str, str, int]], seeds: dict[str, int]) -> str:
    """Rows = methods, columns = metrics; the best mean of each column is in bold."""
    best = {}
    for source, metric, _, direction in columns:
        means = [row[f"{source}/{metric}"]["mean"] for row in summary.values() if row.get(f"{source}/{metric}")]
        if means:
            best[f"{source}/{metric}"] = max(means) if direction > 0 else min(means)
    lines = [
        "| method | seeds | " + " | ".join(h for _, _, h, _ in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for method, row in summary.items():
        if all(row.get(f"{s}/{m}") is None for s, m, _, _ in columns):
            continue
        cells = []
        for source, metric, _, _ in columns:
            key = f"{source}/{metric}"
            digits = 5 if metric.endswith("mse") else 2 if source == "sickr" else 4
            text = _fmt(row.get(key), digits)
            agg = row.get(key)
            if agg is not None and key in best and math.isclose(agg["mean"], best[key], rel_tol=0, abs_tol=1e-12):
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {method} | {seeds.get(method, 0) or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seed_counts(results: dict) -> dict[str, int]:
    return {m: (len(cells) if cells[0].get("seed") is not None else 0) for m, cells in method_cells(results).items()}


def cost_table(results: dict) -> str:
    """Training and evaluation time per method (means over seeds)."""
    groups = method_cells(results)

    def mean_of(cells, getter):
        values = [v for v in (getter(c) for c in cells) if isinstance(v, (int, float))]
        return statistics.fmean(values) if values else None

    step = {
        m: mean_of(cells, lambda c: c.get("training", {}).get("median_step_seconds")) for m, cells in groups.items()
    }
    base = step.get("mse")
    lines = [
        "| method | steps | training (s) | median step (s) | step time / mse | embed (s) | evaluation (s) "
        "| cell total (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, cells in groups.items():
        steps = mean_of(cells, lambda c: c.get("training", {}).get("steps"))
        train = mean_of(cells, lambda c: c.get("training", {}).get("wall_seconds"))
        embed = mean_of(cells, lambda c: c.get("results", {}).get("embed_seconds"))
        evaluation = mean_of(cells, lambda c: c.get("eval_seconds"))
        total = mean_of(cells, lambda c: c.get("wall_seconds"))
        ratio = f"{step[method] / base:.2f}" if step[method] and base else "-"
        f = lambda v, d=0: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        lines.append(
            f"| {method} | {f(steps)} | {f(train)} | {f(step[method], 3)} | {ratio} | {f(embed)} | "
            f"{f(evaluation)} | {f(total)} |"
        )
    return "\n".join(lines)


def task_table(results: dict) -> str:
    """Each task's protocol and sizes."""
    lines = ["| task | protocol | examples |", "|---|---|---|"]
    for name, sizes in results.get("task_sizes", {}).items():
        size = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
        lines.append(f"| {name} | {results.get('task_protocols', {}).get(name, '')} | {size} |")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds / 60:.0f} min)"


def header_lines(results: dict) -> list[str]:
    env = results.get("environment", {})
    runtime = results.get("runtime", {})
    settings = results["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    return [
        f"Command: `{results.get('command', 'carl benchmark')}`",
        "",
        f"Runtime: {_hours(runtime.get('all_cells_seconds', 0.0))} of cell computation in total "
        f"(this invocation: {_hours(runtime.get('this_invocation_seconds', 0.0))}); finished "
        f"{results.get('finished_at', '?')}.",
        "",
        f"Machine: {env.get('platform', '?')}, {env.get('cpu_count', '?')} CPU cores "
        f"({env.get('processor', '?')}), torch threads {env.get('torch_threads', '?')}"
        + (f", GPUs {env['gpus']}" if env.get("gpus") else "")
        + f"; git {env.get('git_revision')}.",
        "",
        f"Software: Python {env.get('python', '?')}; {versions}.",
        "",
        f"Encoder `{settings['encoder']}`; seeds {list(settings['seeds'])}; training overrides for every "
        f"trained cell: {', '.join(f'`{o}`' for o in settings['overrides']) or 'none (carl defaults)'}"
        + ("; **quick variant** (subsets, short training)" if settings.get("quick") else "")
        + ".",
    ]


def write_report(results: dict, out: str | Path) -> Path:
    """Write ``report.md`` and its PNG plots into ``out``; returns the report path."""
    from carl.evaluation.plots import write_plots

    out = Path(out)
    summary = summarise(results)
    seeds = _seed_counts(results)
    plots = write_plots(results, out)
    lines = [
        "# CARL benchmark report",
        "",
        *header_lines(results),
        "",
        "Numbers are mean ± sample standard deviation over seeds (one value for seedless rows); "
        "the best mean of each column is in **bold** (highest for r, rho, accuracy, F1; lowest "
        "for MSE, alignment, uniformity). All probes run on frozen embeddings.",
        "",
    ]
    for key, (title, columns) in TABLES.items():
        lines += [f"## {title}", "", markdown_table(summary, columns, seeds), ""]
        if key == "va":
            lines += [
                "VADER and TextBlob: their polarity score is the single feature of the same ridge probe "
                "(so their r is the absolute correlation with valence); they have no arousal row.",
                "",
            ]
        if key == "geometry":
            distance = results["settings"]["tasks"].get("va_pair_distance")
            lines += [
                f"VA-near pairs: EmoBank test sentences whose (valence, arousal) on the 0-1 scale lie "
                f"within Euclidean distance {distance}; same-label pairs share the gold class; "
                "uniformity over all pairs (t = 2); alignment with alpha = 2.",
                "",
            ]
    extra = _extra_tasks(results)
    if extra:
        columns = [(t, m, f"{t} {m}", 1) for t in extra for m in _extra_metrics(results, t)]
        lines += ["## User-supplied corpora", "", markdown_table(summary, columns, seeds), ""]
    given = set(results["settings"]["tasks"].get("user_corpora", {}))
    missing = [c for c in USER_CORPORA.values() if c.name not in given]
    if missing:
        lines += ["## Corpora not included in this run", ""]
        lines += [
            f"- **{c.title}**: not run, no copy given. {c.how_to_obtain} Then rerun with "
            f"`--corpus {c.name}=PATH` (expected: {c.expected})."
            for c in missing
        ]
        lines.append("")
    lines += [
        "## Tasks and data sizes",
        "",
        task_table(results),
        "",
        "GoEmotions: the 27 emotions mapped to Ekman's six plus neutral with the authors' mapping; an "
        f"example is kept when its labels map to one class (filtering "
        f"`{results['settings']['tasks'].get('goemotions_filtering')}`; counts per split in "
        "`carl/data/goemotions/README.md`); the training split is a fixed random subset of the size shown.",
        "",
        "## Cost",
        "",
        cost_table(results),
        "",
        "## Methods",
        "",
        "| method | what |",
        "|---|---|",
    ]
    lines += [f"| {name} | {m['description']} |" for name, m in results.get("methods", {}).items()]
    lines += ["", "## Plots", ""]
    lines += [f"![{title}]({name})\n" for name, title in plots]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# the README's one compact table: the headline metric of each task, frozen-embedding probes
README_COLUMNS: list[tuple[str, str, str, int]] = [
    ("emobank", "valence_pearson", "EmoBank valence r", 1),
    ("emobank", "arousal_pearson", "arousal r", 1),
    ("sst2", "accuracy", "SST-2 acc", 1),
    ("mr", "accuracy", "MR acc", 1),
    ("sst5", "macro_f1", "SST-5 macro-F1", 1),
    ("goemotions", "macro_f1", "GoEmotions macro-F1", 1),
    ("sickr", "spearman", "SICK-R rho x100", 1),
    ("geometry:emobank_test", "uniformity", "uniformity", -1),
]


def readme_section(results: dict, report_path: str = "benchmarks/results/main/report.md") -> str:
    """The README's results section: the command, one compact table and where the rest is."""
    settings = results["settings"]
    env = results.get("environment", {})
    lines = [
        README_START,
        "",
        f"`{results.get('command', 'carl benchmark')}`: encoder `{settings['encoder']}`, seeds "
        f"{list(settings['seeds'])}, {', '.join(f'`{o}`' for o in settings['overrides']) or 'carl defaults'}; "
        f"{env.get('cpu_count', '?')}-core {env.get('processor', '?')} machine, "
        f"{_hours(results.get('runtime', {}).get('all_cells_seconds', 0.0))} in all.",
        "",
        markdown_table(summarise(results), README_COLUMNS, _seed_counts(results)),
        "",
        f"Mean ± std over seeds, best in bold; probes on frozen embeddings. Every metric, the "
        f"plots and the machine: `{report_path}`.",
        "",
        README_END,
    ]
    return "\n".join(lines)


def replace_between_markers(readme: str | Path, start_marker: str, end_marker: str, section: str) -> bool:
    """Replace the README text from ``start_marker`` to ``end_marker`` (both included) with
    ``section``; False (nothing written) when the markers are missing."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        return False
    readme.write_text(text[:start] + section + text[end + len(end_marker) :], encoding="utf-8")
    return True


def update_readme(readme: str | Path, results: dict, report_path: str) -> bool:
    """Replace the text between the README markers; False (nothing written) without markers."""
    return replace_between_markers(readme, README_START, README_END, readme_section(results, report_path))
