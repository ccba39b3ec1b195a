"""A small self-contained HTML page that highlights words by their valence/arousal attribution.

Each text gets two lines: valence (green raises it, red lowers it) and arousal (orange raises it,
blue lowers it); for ``explain --target CLASS`` one line: the class's calibrated log-odds (teal
raises it, magenta lowers it). Colour opacity is |attribution| divided by the largest |attribution| of that text
and dimension; hovering a word shows its exact score. No scripts, no external resources.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from carl.inference.explain import ClassExplanation, Explanation

# dimension -> (rgb for a positive attribution, rgb for a negative one)
COLOURS = {"valence": ((0, 170, 60), (220, 30, 30)), "arousal": ((255, 140, 0), (30, 90, 230))}
CLASS_COLOURS = ((0, 150, 170), (200, 40, 150))  # a class's probability (explain --target)

STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 60em; color: #222; background: #fff; }
.item { border-bottom: 1px solid #ddd; padding: 0.6em 0; }
.row { margin: 0.25em 0; line-height: 2em; font-size: 1.15em; }
.label { display: inline-block; width: 6.5em; font-size: 0.8em; color: #555; }
.w { padding: 0.15em 0.2em; border-radius: 0.25em; }
.pred { font-size: 0.85em; color: #555; }
.legend span { padding: 0.15em 0.4em; margin-right: 0.6em; border-radius: 0.25em; }
"""


def _span(word: str, score: float, peak: float, dimension: str) -> str:
    positive, negative = CLASS_COLOURS if dimension == "class" else COLOURS[dimension]
    r, g, b = positive if score >= 0 else negative
    alpha = 0.0 if peak <= 0 else min(1.0, abs(score) / peak)
    return (
        f'<span class="w {dimension}" style="background: rgba({r},{g},{b},{alpha:.3f})" '
        f'title="{dimension} {score:+.4f}">{html.escape(word)}</span>'
    )


def _row(e: Explanation | ClassExplanation, dimension: str) -> str:
    if isinstance(e, ClassExplanation):
        scores, label = e.scores, e.target
    else:
        scores, label = (e.valence_scores if dimension == "valence" else e.arousal_scores), dimension
    peak = max((abs(s) for s in scores), default=0.0)
    parts, cursor = [], 0
    for (start, end), score in zip(e.spans, scores):
        parts.append(html.escape(e.text[cursor:start]))
        parts.append(_span(e.text[start:end], score, peak, dimension))
        cursor = end
    parts.append(html.escape(e.text[cursor:]))
    return f'<div class="row"><span class="label">{html.escape(label)}</span>{"".join(parts)}</div>'


def _item(i: int, e: Explanation | ClassExplanation) -> str:
    note = " (truncated: later words not explained)" if e.truncated else ""
    if isinstance(e, ClassExplanation):
        return (
            f'<div class="item" id="t{i}">{_row(e, "class")}<div class="pred">calibrated probability of '
            f"{html.escape(e.target)} {e.probability:.3f} (words coloured by their share of its log-odds)"
            f"{note}</div></div>"
        )
    low, high = e.scale
    return (
        f'<div class="item" id="t{i}">{_row(e, "valence")}{_row(e, "arousal")}'
        f'<div class="pred">predicted valence {e.valence:.3f}, arousal {e.arousal:.3f} '
        f"on the {low:g}-{high:g} scale{note}</div></div>"
    )


def render_html(
    explanations: Sequence[Explanation | ClassExplanation], *, title: str = "carl explain", total: int | None = None
) -> str:
    """The page for ``explanations`` (VA, or one class's probability); ``total`` notes how many texts the
    input had."""
    items = [_item(i, e) for i, e in enumerate(explanations)]
    colours = {"class": CLASS_COLOURS} if explanations and isinstance(explanations[0], ClassExplanation) else COLOURS
    legend = "".join(
        f'<span style="background: rgb{colours[d][k]}; color: #fff">{d} {sign}</span>'
        for d in colours
        for k, sign in ((0, "raised"), (1, "lowered"))
    )
    shown = (
        f"<p>showing {len(explanations)} of {total} texts</p>"
        if total is not None and total > len(explanations)
        else ""
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="legend">{legend}</p>{shown}'
        f"{''.join(items)}</body></html>\n"
    )
