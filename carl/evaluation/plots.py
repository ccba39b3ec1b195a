"""PNG plots of a benchmark (matplotlib's Agg canvas; no display, no global pyplot state).

Every probe-protocol function reads the ``results.json`` dictionary only (so plots can be redrawn
from it) and returns ``(file name, title)`` or None when the data for it is absent;
:func:`variant_gaps` draws the fine-tuning protocol's variant study from its decision.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from carl.evaluation.report import method_cells
from carl.evaluation.variant_study import CORE, compare, pooled_std

SCATTER_METHODS = ("frozen", "mse", "carl")
LOSS_COLOURS = {
    "loss": "black",
    "mcl": "tab:blue",
    "mse": "tab:orange",
    "ptd": "tab:green",
    "simcse": "tab:purple",
    "preserve": "tab:brown",
}


def _figure(rows: int, cols: int, width: float = 4.2, height: float = 3.6) -> Figure:
    fig = Figure(figsize=(width * cols, height * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _first_cell(results: dict, method: str) -> dict | None:
    cells = method_cells(results).get(method)
    return cells[0] if cells else None


def _label(cell: dict) -> str:
    return cell["method"] + (f" (seed {cell['seed']})" if cell.get("seed") is not None else "")


def va_scatter(results: dict, out: Path) -> tuple[str, str] | None:
    """Predicted vs true valence and arousal on EmoBank test (ridge probe), per method."""
    cells = [
        c
        for c in (_first_cell(results, m) for m in SCATTER_METHODS)
        if c and "test_predictions" in c["results"]["tasks"].get("emobank", {})
    ]
    if not cells:
        return None
    fig = _figure(len(cells), 2)
    axes = fig.subplots(len(cells), 2, squeeze=False)
    for row, cell in enumerate(cells):
        task = cell["results"]["tasks"]["emobank"]
        pred, true = np.asarray(task["test_predictions"]), np.asarray(task["test_labels"])
        for d, name in enumerate(("valence", "arousal")):
            ax = axes[row, d]
            ax.scatter(true[:, d], pred[:, d], s=5, alpha=0.4)
            low, high = float(min(true[:, d].min(), pred[:, d].min())), float(max(true[:, d].max(), pred[:, d].max()))
            ax.plot([low, high], [low, high], color="grey", lw=1, ls="--")
            r = task["metrics"].get(f"{name}_pearson")
            ax.set_title(f"{_label(cell)}: {name}, r = {r:.3f}" if r is not None else _label(cell), fontsize=9)
            ax.set_xlabel(f"true {name} (0-1)")
            ax.set_ylabel(f"predicted {name}")
    name = "va_scatter.png"
    fig.savefig(out / name)
    return name, "EmoBank test: predicted vs true valence and arousal"


def embeddings_2d(results: dict, out: Path) -> tuple[str, str] | None:
    """EmoBank test embeddings, PCA to 2-D, coloured by valence and by arousal (before/after CARL)."""
    cells = [
        c for c in (_first_cell(results, m) for m in ("frozen", "carl")) if c and "emobank_test_2d" in c["results"]
    ]
    labelled = [c for c in cells if "test_labels" in c["results"]["tasks"].get("emobank", {})]
    if not labelled:
        return None
    fig = _figure(len(labelled), 2)
    axes = fig.subplots(len(labelled), 2, squeeze=False)
    for row, cell in enumerate(labelled):
        xy = np.asarray(cell["results"]["emobank_test_2d"])
        labels = np.asarray(cell["results"]["tasks"]["emobank"]["test_labels"])
        for d, (dim, cmap) in enumerate((("valence", "RdYlGn"), ("arousal", "viridis"))):
            ax = axes[row, d]
            low, high = np.percentile(labels[:, d], [5, 95])  # EmoBank's labels crowd the middle
            points = ax.scatter(xy[:, 0], xy[:, 1], c=labels[:, d], cmap=cmap, s=6, alpha=0.8, vmin=low, vmax=high)
            fig.colorbar(points, ax=ax, label=f"{dim} (5th-95th percentile)", extend="both")
            ax.set_title(f"{_label(cell)}, coloured by {dim}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    name = "embeddings_2d.png"
    fig.savefig(out / name)
    return name, "EmoBank test embeddings (PCA to 2-D of L2-normalised embeddings): before and after CARL"


def per_class_f1(results: dict, out: Path) -> tuple[str, str] | None:
    """Per-class F1 bars (mean over seeds) for GoEmotions-Ekman and SST-5."""
    tasks = [
        t for t in ("goemotions", "sst5") if any(t in c["results"].get("tasks", {}) for c in results["cells"].values())
    ]
    groups = {
        m: cells
        for m, cells in method_cells(results).items()
        if any(t in cells[0]["results"].get("tasks", {}) for t in tasks)
    }
    if not tasks or not groups:
        return None
    fig = _figure(len(tasks), 1, width=max(8.0, 1.3 * len(groups) + 4), height=3.8)
    axes = fig.subplots(len(tasks), 1, squeeze=False)
    for row, task in enumerate(tasks):
        ax = axes[row, 0]
        methods = [m for m, cells in groups.items() if task in cells[0]["results"]["tasks"]]
        classes = groups[methods[0]][0]["results"]["tasks"][task]["classes"]
        width = 0.8 / len(methods)
        for k, method in enumerate(methods):
            values = np.asarray([c["results"]["tasks"][task]["metrics"]["per_class_f1"] for c in groups[method]])
            ax.bar(
                np.arange(len(classes)) + k * width,
                values.mean(0),
                width,
                yerr=values.std(0, ddof=1) if len(values) > 1 else None,
                label=method,
                capsize=2,
            )
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=20, fontsize=8)
        ax.set_ylabel("F1")
        ax.set_title(f"{task}: per-class F1 (mean over seeds)", fontsize=10)
        ax.legend(fontsize=7, ncols=min(4, len(methods)))
    name = "per_class_f1.png"
    fig.savefig(out / name)
    return name, "Per-class F1: GoEmotions (Ekman + neutral) and SST-5"


def alignment_uniformity(results: dict, out: Path) -> tuple[str, str] | None:
    """Methods on the alignment (VA-near pairs) / uniformity plane of EmoBank test."""
    points = []
    for method, cells in method_cells(results).items():
        geo = [c["results"].get("geometry", {}).get("emobank_test") for c in cells]
        geo = [g for g in geo if g and g.get("alignment_va") is not None]
        if geo:
            u = [g["uniformity"] for g in geo]
            a = [g["alignment_va"] for g in geo]
            points.append(
                (
                    method,
                    statistics.fmean(u),
                    statistics.fmean(a),
                    statistics.stdev(u) if len(u) > 1 else 0.0,
                    statistics.stdev(a) if len(a) > 1 else 0.0,
                )
            )
    if not points:
        return None
    fig = _figure(1, 1, width=6.0, height=4.8)
    ax = fig.subplots()
    for method, u, a, su, sa in points:
        ax.errorbar(u, a, xerr=su, yerr=sa, fmt="o", capsize=2)
        ax.annotate(method, (u, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.margins(0.15)  # room for the labels
    ax.set_xlabel("uniformity (lower = more uniform)")
    ax.set_ylabel("alignment of VA-near pairs (lower = closer)")
    ax.set_title("EmoBank test: alignment vs uniformity", fontsize=10)
    name = "alignment_uniformity.png"
    fig.savefig(out / name)
    return name, "Alignment-uniformity plane (EmoBank test; lower-left is better)"


def loss_curves(results: dict, out: Path) -> tuple[str, str] | None:
    """Training loss components over steps for the first seed of each trained method."""
    cells = [
        c for c in (_first_cell(results, m) for m in method_cells(results)) if c and c.get("training", {}).get("curves")
    ]
    if not cells:
        return None
    cols = min(3, len(cells))
    rows = (len(cells) + cols - 1) // cols
    fig = _figure(rows, cols)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, cell in enumerate(cells):
        ax = axes[k // cols, k % cols]
        for component, curve in cell["training"]["curves"].items():
            curve = np.asarray(curve)
            if len(curve) and np.all(curve[:, 1] > 0):
                ax.plot(
                    curve[:, 0],
                    curve[:, 1],
                    label=component,
                    color=LOSS_COLOURS.get(component),
                    lw=1.8 if component == "loss" else 1.0,
                )
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(_label(cell), fontsize=9)
        ax.legend(fontsize=7)
    for k in range(len(cells), rows * cols):
        axes[k // cols, k % cols].set_visible(False)
    name = "loss_curves.png"
    fig.savefig(out / name)
    return name, "Training loss components (first seed of each method; log scale)"


OUTCOME_COLOURS = {"better": "tab:green", "worse": "tab:red", "tie": "tab:grey", "undecided": "tab:grey"}


def variant_gaps(decision: dict, out: Path) -> tuple[str, str] | None:
    """The variant study on dev: per setting, each method's mean gap to carl with the pooled std as
    its bar, so a bar clear of 0 is the rule's ``better``/``worse``; hollow markers are undecided.

    ``decision`` is :func:`carl.evaluation.variant_study.decide`'s result."""
    settings = [s for s in decision["settings"] if decision["dev"][s].get("carl")]
    methods = [
        m for m in (*CORE, *decision["verdicts"]) if m != "carl" and any(decision["dev"][s].get(m) for s in settings)
    ]
    if not settings or not methods:
        return None
    verdicts = decision["verdicts"]
    fig = _figure(1, len(settings), width=3.4, height=0.9 + 0.32 * len(methods))
    axes = fig.subplots(1, len(settings), squeeze=False, sharey=True)[0]
    for ax, setting in zip(axes, settings):
        dev, carl = decision["dev"][setting], decision["dev"][setting]["carl"]
        for y, method in enumerate(methods):
            agg = dev.get(method)
            if agg is None:
                continue
            outcome = compare(agg, carl)
            colour = OUTCOME_COLOURS[outcome]
            ax.errorbar(
                agg["mean"] - carl["mean"],
                y,
                xerr=pooled_std(agg, carl),
                fmt="o",
                color=colour,
                mfc=colour if outcome != "undecided" else "white",
                capsize=3,
            )
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(f"{setting} (carl {carl['mean']:.3f})", fontsize=9)
        ax.set_xlabel("dev gap to carl", fontsize=8)
        ax.tick_params(labelsize=7)
    labels = [f"{m} ({verdicts[m]})" if m in verdicts else m for m in methods]
    axes[0].set_yticks(range(len(methods)), labels)
    axes[0].invert_yaxis()
    name = "variant_study.png"
    fig.savefig(out / name)
    return name, "Variant study on dev: gap to carl, bar = pooled std (clear of 0: better or worse)"


def write_plots(results: dict, out: str | Path) -> list[tuple[str, str]]:
    """All plots into ``out``; returns (file name, title) of each one written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for plot in (va_scatter, embeddings_2d, per_class_f1, alignment_uniformity, loss_curves):
        result = plot(results, out)
        if result is not None:
            made.append(result)
    return made
