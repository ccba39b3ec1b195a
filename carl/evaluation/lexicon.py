"""Lexicon peers: VADER and TextBlob polarity on the same test sets, as one-feature probes.

* VADER (Hutto and Gilbert, 2014; package ``vaderSentiment``): the ``compound`` score in
  [-1, 1].
* TextBlob (package ``textblob``): ``TextBlob(text).sentiment.polarity`` in [-1, 1], from the
  pattern lexicon bundled with the package (no corpus download needed).

Each score is one feature for the same probes as the encoders: ridge on EmoBank (so valence
Pearson r equals the absolute correlation of the raw score with valence; the raw correlation
is reported too as ``valence_raw_pearson`` / ``valence_raw_spearman``) and logistic
regression for SST-2, MR and SST-5 polarity. Emotion categories and geometry are not
meaningful for a single polarity number and are skipped. Install with ``pip install carl[eval]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from carl.evaluation.features import scored_table
from carl.evaluation.metrics import pearson, spearman
from carl.evaluation.tasks import TaskData, TaskSettings, evaluate_features

LEXICONS: tuple[str, ...] = ("vader", "textblob")
LEXICON_TASKS: tuple[str, ...] = ("emobank", "sst2", "mr", "sst5")
PACKAGES = {"vader": "vaderSentiment", "textblob": "textblob"}


def lexicon_scorer(name: str) -> Callable[[str], float]:
    """``text -> polarity in [-1, 1]`` for ``"vader"`` or ``"textblob"``."""
    try:
        if name == "vader":
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            analyzer = SentimentIntensityAnalyzer()
            return lambda text: float(analyzer.polarity_scores(text)["compound"])
        if name == "textblob":
            from textblob import TextBlob

            return lambda text: float(TextBlob(text).sentiment.polarity)
    except ImportError as err:
        raise RuntimeError(
            f"the {name} baseline needs the package {PACKAGES[name]}: "
            f"pip install {PACKAGES[name]} (or pip install -e '.[eval]')"
        ) from err
    raise ValueError(f"unknown lexicon {name!r}; choose one of {LEXICONS}")


def lexicon_available(name: str) -> bool:
    """Whether the lexicon's package is installed."""
    try:
        lexicon_scorer(name)
    except RuntimeError:
        return False
    return True


def evaluate_lexicon(name: str, data: dict[str, TaskData], settings: TaskSettings) -> dict:
    """Run the polarity tasks of ``data`` with the lexicon's score as the only feature."""
    score = lexicon_scorer(name)
    chosen = {k: v for k, v in data.items() if k in LEXICON_TASKS}
    started = time.perf_counter()
    table = scored_table(score, [texts for task in chosen.values() for texts in task.texts()])
    score_seconds = time.perf_counter() - started
    results = evaluate_features(table, chosen, settings, geometry=False)
    if "emobank" in chosen:
        test = chosen["emobank"].splits["test"]
        raw = table(test.texts)[:, 0]
        emobank = results["tasks"]["emobank"]
        # a polarity score is a valence peer only: drop the arousal probe
        emobank["metrics"] = {k: v for k, v in emobank["metrics"].items() if not k.startswith("arousal")}
        emobank.pop("test_predictions", None)
        emobank.pop("test_labels", None)
        emobank["metrics"].update(
            valence_raw_pearson=pearson(raw, test.labels[:, 0]), valence_raw_spearman=spearman(raw, test.labels[:, 0])
        )
    results.update(embed_seconds=score_seconds, texts_embedded=len(table.index), embedding_dim=1)
    return results
