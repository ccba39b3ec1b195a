"""The fine-tuning protocol's report: per task x regime, every method's test metrics over seeds.

:func:`write_report` writes ``OUT/report.md`` from ``results.json`` (:mod:`carl.evaluation.finetune`),
also for a partial grid (n < 3 seeds is shown, and the cells still missing are listed). Relative
change is the paper's headline form, ``100 (m - m_ref) / m_ref`` of the task's headline metric
(macro-F1; EmoBank: mean of the valence and arousal r) against plain fine-tuning (``ft``) and the
frozen ``probe``. :func:`update_readme` writes a compact table between the README markers
``<!-- finetune-results:start -->`` and ``<!-- finetune-results:end -->``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from itertools import product
from pathlib import Path

from carl.atomic import write_text_atomic
from carl.evaluation import variant_study
from carl.evaluation.cells import spent_seconds
from carl.evaluation.finetune_data import STAGE_CORPUS_SPECS, TASKS
from carl.evaluation.plots import variant_gaps
from carl.evaluation.report import aggregate, replace_between_markers

README_START = "<!-- finetune-results:start -->"
README_END = "<!-- finetune-results:end -->"
# (metric key, column header) per task kind; the first is the headline metric
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "single": [
        ("macro_f1", "macro-F1"),
        ("accuracy", "accuracy"),
        ("ece_before", "ECE T=1"),
        ("ece_after", "ECE dev T"),
    ],
    "multi": [
        ("macro_f1", "macro-F1 (dev thresholds)"),
        ("macro_f1_at_0.5", "macro-F1 at 0.5"),
        ("ece_after", "ECE dev T"),
    ],
    "va": [("va_pearson_mean", "mean r"), ("valence_pearson", "valence r"), ("arousal_pearson", "arousal r")],
}
REFERENCES = ("ft", "probe")


def _value(cell: dict, key: str) -> float | None:
    value = cell.get("metrics", {}).get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def groups(results: dict) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """``{(task, regime): {method: [cells, by seed]}}`` in plan order (stage cells left out)."""
    order = {name: i for i, name in enumerate(results.get("planned", []))}
    table: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for cell in sorted(results["cells"].values(), key=lambda c: order.get(c["name"], len(order))):
        if "task" not in cell:
            continue
        table.setdefault((cell["task"], cell["regime"]), {}).setdefault(cell["method"], []).append(cell)
    for methods in table.values():
        for cells in methods.values():
            cells.sort(key=lambda c: c["seed"])
    return table


def summary(cells: list[dict], key: str) -> dict | None:
    """Mean, std and n over seeds of one metric (None when no cell has it)."""
    return aggregate([v for v in (_value(c, key) for c in cells) if v is not None])


def step_seconds(cells: list[dict]) -> float | None:
    """Mean over seeds of each cell's median optimizer-step seconds (None for untrained methods)."""
    values = [
        c["training"]["median_step_seconds"] for c in cells if (c.get("training") or {}).get("median_step_seconds")
    ]
    return sum(values) / len(values) if values else None


def relative_change(value: dict | None, reference: dict | None) -> float | None:
    """``100 (mean - mean_ref) / |mean_ref|`` in percent."""
    if not value or not reference or reference["mean"] == 0:
        return None
    return 100.0 * (value["mean"] - reference["mean"]) / abs(reference["mean"])


def _fmt(agg: dict | None) -> str:
    if agg is None:
        return "–"
    if agg["n"] == 1:  # one seed has no spread to show
        return f"{agg['mean']:.4f} (1)"
    return f"{agg['mean']:.4f} ± {agg['std']:.4f} ({agg['n']})"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}%"


def group_table(task: str, methods: dict[str, list[dict]]) -> list[str]:
    """Markdown rows of one task x regime: metrics, change of the headline against ft and probe, step time."""
    columns = COLUMNS[TASKS[task].kind]
    headline = columns[0][0]
    refs = {ref: summary(methods[ref], headline) if ref in methods else None for ref in REFERENCES}
    head = ["method", *(h for _, h in columns), "vs ft", "vs probe", "s/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, cells in methods.items():
        mine = summary(cells, headline)
        changes = [_pct(relative_change(mine, refs[r])) if r != method else "" for r in REFERENCES]
        seconds = step_seconds(cells)
        row = [
            method,
            *(_fmt(summary(cells, key)) for key, _ in columns),
            *changes,
            "–" if seconds is None else f"{seconds:.3f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def headline_sentence(task: str, methods: dict[str, list[dict]]) -> str | None:
    """carl's relative change of the headline metric against ft and the probe, in words."""
    columns = COLUMNS[TASKS[task].kind]
    key, header = columns[0]
    carl = summary(methods.get("carl", []), key)
    if carl is None:
        return None
    parts = []
    for ref in REFERENCES:
        ref_value = summary(methods.get(ref, []), key)
        change = relative_change(carl, ref_value)
        if change is not None and ref_value is not None:
            parts.append(f"{change:+.1f}% against {ref} ({ref_value['mean']:.4f}, n={ref_value['n']})")
    if not parts:
        return None
    sentence = f"carl {header} {carl['mean']:.4f} (n={carl['n']}): " + "; ".join(parts) + "."
    return (
        sentence
        + spread_note(carl, summary(methods.get("ft", []), key))
        + paired_note(methods.get("carl", []), methods.get("ft", []), key)
    )


def paired_note(carl: list[dict], ft: list[dict], key: str) -> str:
    """carl - ft paired by seed (the same seed, and in k8/k64 the same subset): mean ± std and
    how many seeds are positive (needs two common seeds)."""
    mine = {c["seed"]: _value(c, key) for c in carl}
    theirs = {c["seed"]: _value(c, key) for c in ft}
    gaps = [mine[s] - theirs[s] for s in sorted(mine.keys() & theirs.keys()) if None not in (mine[s], theirs[s])]
    agg = aggregate(gaps)
    if agg is None or agg["n"] < 2:
        return ""
    positive = sum(g > 0 for g in gaps)
    return (
        f" Paired by seed (same subset): carl - ft = {agg['mean']:+.4f} ± {agg['std']:.4f}, "
        f"positive in {positive} of {len(gaps)} seeds."
    )


def spread_note(carl: dict, ft: dict | None) -> str:
    """Whether carl - ft exceeds both seed standard deviations (needs two seeds of each)."""
    if ft is None or min(carl["n"], ft["n"]) < 2:
        return ""
    gap = carl["mean"] - ft["mean"]
    verdict = "more than" if abs(gap) > max(carl["std"], ft["std"]) else "not more than"
    return f" The difference to ft, {gap:+.4f}, is {verdict} both seed spreads ({carl['std']:.4f}, {ft['std']:.4f})."


def step_cost_lines(table: dict[tuple[str, str], dict[str, list[dict]]]) -> list[str]:
    """Median step seconds per method and task x regime, and the carl/ft ratio."""
    trained = ["ft", "mcl", "carl", "carl-stage"]
    head = ["task", "regime", *trained, "carl/ft"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (task, regime), methods in table.items():
        seconds = {m: step_seconds(methods[m]) if m in methods else None for m in trained}
        ratio = seconds["carl"] / seconds["ft"] if seconds["carl"] and seconds["ft"] else None
        cells = ["–" if s is None else f"{s:.3f}" for s in seconds.values()]
        lines.append("| " + " | ".join([task, regime, *cells, "–" if ratio is None else f"{ratio:.2f}x"]) + " |")
    return lines


def study_decision(results: dict, table: dict[tuple[str, str], dict[str, list[dict]]]) -> dict | None:
    """The variant study's decision (:func:`variant_study.decide`) over the grid's variants (issue 16),
    or None when the grid has none."""
    from carl.evaluation.finetune import VARIANTS

    variants = [m for m in results["settings"]["methods"] if m in VARIANTS]
    return variant_study.decide(table, variants) if variants else None


def report_text(results: dict, decision: dict | None = None, plot: tuple[str, str] | None = None) -> str:
    """The whole ``report.md``; ``decision``: :func:`study_decision` when the caller has it (else
    computed here), ``plot``: the variant study's (file name, title), shown in its section."""
    settings, b = results["settings"], results["budget"]
    env = results.get("environment", {})
    regimes = ", ".join(f"{r}: {v['steps']} steps, dev every {v['eval_every']}" for r, v in b["regimes"].items())
    queue = ", ".join(f"{size} in {regime}" for regime, size in b["mcl_queue_size"].items()) or "carl's default"
    special = ", ".join(f"{k}: {v['steps']} steps, dev every {v['eval_every']}" for k, v in b["tasks"].items())
    lines = [
        "# Fine-tuning protocol",
        "",
        f"`{results['command']}`: encoder `{settings['encoder']}`, seeds {list(settings['seeds'])}, "
        f"--set {', '.join(f'`{o}`' for o in settings['overrides']) or 'none'}; "
        f"{env.get('cpu_count', '?')}-core {env.get('processor', '?')} machine, "
        f"at least {results['runtime']['all_cells_seconds'] / 3600:.2f} h of cells"
        + (
            f" and {results['runtime']['stage_seconds'] / 3600:.2f} h of first stages."
            if results.get("stages")
            else "."
        ),
        "",
        f"Budget, the same for every method: batch {b['batch_size']}; {'; '.join(filter(None, (regimes, special)))}; carl's default "
        f"learning rates; MCL queue: {queue}. The step best on dev "
        f"(macro-F1; EmoBank: mean VA r) is exported; dev is capped at {b['dev_cap']} texts (a fixed "
        "stratified sample), test is the full split. Cells: mean ± std (n seeds); k8/k64: seed s is subset s.",
        "",
    ]
    table = groups(results)
    for (task, regime), methods in table.items():
        lines += [f"## {TASKS[task].title}, {regime}", "", *group_table(task, methods), ""]
        sentence = headline_sentence(task, methods)
        if sentence:
            lines += [sentence, ""]
    if decision is None:
        decision = study_decision(results, table)
    if decision is not None:
        lines += variant_study.report_lines(decision, plot)
    lines += ["## Step cost (median seconds per optimizer step)", "", *step_cost_lines(table), ""]
    for name, stage in results.get("stages", {}).items():
        t = stage["training"]
        corpus = STAGE_CORPUS_SPECS[stage.get("corpus", "emobank")].title
        lines.append(
            f"First stage `{name}` (carl on {corpus}, shared by the staged cells of its seed): "
            f"{t['steps']} steps, best step {t['best_step']}, at least {spent_seconds(stage):.0f} s."
        )
    if results.get("stages"):
        lines.append("")
    rejected = [v for v, verdict in (decision or {}).get("verdicts", {}).items() if verdict == "rejected"]
    missing = missing_lines(results, rejected)
    lines += ["## Missing cells", "", *(missing or ["none: the grid is complete"]), ""]
    if rejected:
        lines += [f"Not listed: the cells of the rejected variants ({', '.join(rejected)}).", ""]
    if results.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {s['cell']}: {s['reason']}" for s in results["skipped"]] + [""]
    return "\n".join(lines)


def missing_lines(results: dict, rejected: Collection[str] = ()) -> list[str]:
    """The planned cells not yet in ``results["cells"]``, one line per task x regime, leaving out the
    methods in ``rejected``: ``- ekman-full: carl-rank, carl-negative (seeds 1, 2, 3); probe (seed 2)``."""
    settings, planned = results["settings"], set(results.get("planned", []))
    missing: dict[str, dict[str, list[int]]] = {}
    grid = product(settings["tasks"], settings["regimes"], settings["methods"], settings["seeds"])
    for task, regime, method, seed in grid:
        name = f"{task}-{regime}-{method}-s{seed}"
        if name in planned and name not in results["cells"] and method not in rejected:
            missing.setdefault(f"{task}-{regime}", {}).setdefault(method, []).append(seed)
    lines = []
    for setting, methods in missing.items():
        by_seeds: dict[tuple[int, ...], list[str]] = {}
        for method, seeds in methods.items():
            by_seeds.setdefault(tuple(seeds), []).append(method)
        parts = [
            f"{', '.join(names)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
            for seeds, names in by_seeds.items()
        ]
        lines.append(f"- {setting}: {'; '.join(parts)}")
    return lines


def write_report(results: dict, out: str | Path) -> Path:
    """Write ``OUT/report.md`` and, with variants in the grid, ``OUT/variant_study.png``; returns the
    report's path."""
    out = Path(out)
    decision = study_decision(results, groups(results))
    plot = variant_gaps(decision, out) if decision is not None else None
    path = out / "report.md"
    write_text_atomic(path, report_text(results, decision, plot))
    return path


def readme_section(results: dict, report_path: str) -> str:
    """One compact table (headline metric per task x regime and method) with its command.

    The variants of the study (issue 16) get a column only once the rule has chosen them; the
    others are named with their verdict below the table (their numbers are in the report)."""
    table = groups(results)
    decision = study_decision(results, table)
    verdicts = decision["verdicts"] if decision is not None else {}
    methods = [m for m in results["settings"]["methods"] if verdicts.get(m, "chosen") == "chosen"]
    head = ["task", "regime", "metric", *methods]
    lines = [README_START, "", f"`{results['command']}` (mean ± std over n seeds):", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (task, regime), cells in table.items():
        key, header = COLUMNS[TASKS[task].kind][0]
        values = [_fmt(summary(cells.get(m, []), key)) for m in methods]
        lines.append("| " + " | ".join([task, regime, header, *values]) + " |")
    lines.append("")
    left_out = [f"{m} ({verdict})" for m, verdict in verdicts.items() if verdict != "chosen"]
    if left_out:
        lines += [f"Variants of the study without a column (verdict on dev so far): {', '.join(left_out)}.", ""]
    lines += [f"Every metric, the variant study, the budget and the step costs: `{report_path}`.", "", README_END]
    return "\n".join(lines)


def update_readme(readme: str | Path, results: dict, report_path: str) -> bool:
    """Replace the text between the finetune markers; False (nothing written) without markers."""
    return replace_between_markers(readme, README_START, README_END, readme_section(results, report_path))
