"""The variant study's decision rule (issue 16; docs/method.md, "Deciding on dev"), on dev only.

A cell's dev score is the selection metric at the step it exported (macro-F1; EmoBank: mean VA r),
read from ``cell["training"]["selection"]``; test metrics are never read here. With per-setting
(task x regime) dev scores over seeds, method a is *better* than b when
``mean_a - mean_b > s_p`` and *worse* when ``mean_b - mean_a > s_p``, with the pooled standard
deviation ``s_p = sqrt((s_a^2 + s_b^2) / 2)``; a comparison needs :data:`MIN_SEEDS` seeds of both.

- A variant is *chosen* over carl when it is better than carl in at least one setting and worse in
  none; *rejected* when it is worse somewhere, or when every setting is decided and none is better.
- Only the pre-registered settings (:data:`STUDY_SETTINGS`) are judged; the report's other
  settings (e.g. ``goemotions28-full``, ``ekman-k8``) are shown in its tables, not here.
- The default objective is, among ft, ft-dropout, mcl, carl, carl-stage and the chosen variants, the one with
  the best mean dev rank of those better than the stronger plain fine-tuning (ft or ft-dropout,
  the higher dev mean) in at least :data:`WINS_FOR_DEFAULT` settings and worse in none; when no
  method qualifies, the best mean dev rank of all of them, plain fine-tuning included.
"""

from __future__ import annotations

import math

from carl.evaluation.report import aggregate

MIN_SEEDS = 3
WINS_FOR_DEFAULT = 2
BASELINES = ("ft", "ft-dropout")
CORE = ("ft", "ft-dropout", "mcl", "carl", "carl-stage")
# the settings fixed before any variant ran (docs/method.md, "Deciding on dev"); ekman-k64 "where time allows"
STUDY_SETTINGS = ("ekman-full", "sst5-full", "emobank-full", "ekman-k64")


def dev_score(cell: dict) -> float | None:
    """The dev selection metric at the exported step (None for untrained methods)."""
    selection = (cell.get("training") or {}).get("selection") or {}
    value = (selection.get("dev") or {}).get(selection.get("metric"))
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def dev_summary(cells: list[dict]) -> dict | None:
    """Mean, std and n over seeds of the dev score."""
    return aggregate([v for v in map(dev_score, cells) if v is not None])


def compare(a: dict | None, b: dict | None) -> str:
    """``better``, ``worse``, ``tie`` (a against b beyond the pooled std) or ``undecided`` (< MIN_SEEDS)."""
    if a is None or b is None or min(a["n"], b["n"]) < MIN_SEEDS:
        return "undecided"
    pooled = pooled_std(a, b)
    gap = a["mean"] - b["mean"]
    return "better" if gap > pooled else "worse" if -gap > pooled else "tie"


def pooled_std(a: dict, b: dict) -> float:
    """``sqrt((s_a^2 + s_b^2) / 2)`` of two dev summaries."""
    return math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)


def variant_verdict(outcomes: list[str]) -> str:
    """``chosen``, ``rejected`` or ``undecided`` from a variant's comparisons with carl per setting."""
    if "worse" in outcomes:
        return "rejected"
    if "undecided" in outcomes or not outcomes:
        return "undecided"
    return "chosen" if "better" in outcomes else "rejected"


def decide(table: dict[tuple[str, str], dict[str, list[dict]]], variants: list[str]) -> dict:
    """The rule over ``{(task, regime): {method: cells}}`` (:func:`finetune_report.groups`).

    Returns ``{"settings": [...], "dev": {setting: {method: summary}}, "vs_carl": {variant: {setting:
    outcome}}, "verdicts": {variant: verdict}, "vs_baseline": {method: {setting: outcome}},
    "default": method or None, "qualified": [...], "ranks": {method: mean rank}}``."""
    variants = judged(variants)
    dev = {
        f"{task}-{regime}": {m: dev_summary(cells) for m, cells in methods.items()}
        for (task, regime), methods in table.items()
        if f"{task}-{regime}" in STUDY_SETTINGS
    }
    settings = list(dev)
    vs_carl = {v: {s: compare(dev[s].get(v), dev[s].get("carl")) for s in settings} for v in variants}
    verdicts = {v: variant_verdict(list(outcomes.values())) for v, outcomes in vs_carl.items()}
    ran = {m for scores in dev.values() for m, agg in scores.items() if agg}
    chosen = (v for v in variants if verdicts[v] == "chosen")
    candidates = [m for m in (*CORE, *chosen) if m in ran and m not in BASELINES]
    vs_baseline = {}
    for m in candidates:
        vs_baseline[m] = {}
        for s in settings:
            baselines = [dev[s][b] for b in BASELINES if dev[s].get(b)]
            strongest = max(baselines, key=lambda agg: agg["mean"]) if baselines else None
            vs_baseline[m][s] = compare(dev[s].get(m), strongest)
    qualified = [
        m
        for m, outcomes in vs_baseline.items()
        if sum(o == "better" for o in outcomes.values()) >= WINS_FOR_DEFAULT and "worse" not in outcomes.values()
    ]
    ranks = mean_ranks(dev, list(dict.fromkeys(m for m in (*CORE, *candidates) if m in ran)))
    pool = qualified or list(ranks)
    default = min(pool, key=lambda m: ranks.get(m, math.inf)) if pool else None
    return {
        "settings": settings,
        "dev": dev,
        "vs_carl": vs_carl,
        "verdicts": verdicts,
        "vs_baseline": vs_baseline,
        "qualified": qualified,
        "ranks": ranks,
        "default": default,
    }


def judged(variants: list[str]) -> list[str]:
    """The variants judged against carl: ``ft-dropout`` is a plain baseline (in :data:`CORE`), not one."""
    return [v for v in variants if v not in CORE]


def mean_ranks(dev: dict[str, dict[str, dict | None]], methods: list[str]) -> dict[str, float]:
    """Each method's dev rank (1 = best mean) averaged over the settings where it ran."""
    ranks: dict[str, list[int]] = {m: [] for m in methods}
    for scores in dev.values():
        present = sorted((m for m in methods if scores.get(m)), key=lambda m: -scores[m]["mean"])
        for rank, m in enumerate(present, 1):
            ranks[m].append(rank)
    return {m: sum(r) / len(r) for m, r in ranks.items() if r}


def report_lines(result: dict, plot: tuple[str, str] | None = None) -> list[str]:
    """The report's section from :func:`decide`'s ``result``: dev mean ± std per setting, each
    variant's verdict, the default, and ``plot`` (file name, title) when one was drawn."""
    settings, dev = result["settings"], result["dev"]
    methods = [m for m in (*CORE, *result["verdicts"]) if any(dev[s].get(m) for s in settings)]
    lines = [
        '## Variant study: dev only (decision rule in docs/method.md, "Deciding on dev")',
        "",
        "| method | " + " | ".join(settings) + " | vs carl | verdict |",
        "|" + "---|" * (len(settings) + 3),
    ]
    for m in methods:
        cells = []
        for s in settings:
            agg = dev[s].get(m)
            if agg is None:
                cells.append("–")
            else:
                spread = f" ± {agg['std']:.4f}" if agg["n"] > 1 else ""
                cells.append(f"{agg['mean']:.4f}{spread} ({agg['n']})")
        outcomes = ", ".join(result["vs_carl"][m].values()) if m in result["vs_carl"] else ""
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {outcomes} | {result['verdicts'].get(m, '')} |")
    lines.append("")
    for m, outcomes in result["vs_baseline"].items():
        if any(o != "undecided" for o in outcomes.values()):
            lines.append(f"- {m} against the stronger plain fine-tuning: " + ", ".join(outcomes.values()))
    qualified = result["qualified"]
    pending = any(o == "undecided" for outcomes in result["vs_baseline"].values() for o in outcomes.values())
    if result["default"] is None:
        lines.append("- default: no method has dev scores yet")
    elif not qualified and pending:
        lines.append(
            f"- default: undecided (fewer than {MIN_SEEDS} seeds in some setting); "
            f"best mean dev rank so far: {result['default']}"
        )
    elif qualified:
        lines.append(f"- default by the rule: {result['default']} (qualified: {', '.join(qualified)})")
    else:
        lines.append(
            f"- no method beats plain fine-tuning on dev in {WINS_FOR_DEFAULT} settings without losing one; "
            f"the best mean dev rank is {result['default']}"
        )
    waiting = [
        f"{v} (open: {', '.join(s for s, o in result['vs_carl'][v].items() if o == 'undecided')})"
        for v, verdict in result["verdicts"].items()
        if verdict == "undecided"
    ]
    if result["default"] is not None and waiting:
        lines.append(f"- provisional: a variant chosen later joins the candidates; undecided: {'; '.join(waiting)}")
    if plot is not None:
        lines += ["", f"![{plot[1]}]({plot[0]})"]
    return [*lines, ""]
