"""Helpers for fast tests and smoke runs: a tiny random BERT and a synthetic affect corpus.

``make_tiny_encoder`` writes a randomly initialised BERT of a few thousand parameters with a
fast word-level tokenizer built in code, so a full carl run (train, export, embed, predict)
takes seconds on a CPU and needs no download. ``synthetic_affect_corpus`` writes sentences
whose valence and arousal are set by a few known affect words among neutral filler words,
so that learning (and gradient saliency) can be checked against a known answer.
``synthetic_emotion_corpus`` labels such sentences with the emotion class of their affect words'
VA quadrant (one class, or several for multi-label data).

>>> from carl.testing import make_tiny_encoder, synthetic_affect_corpus, synthetic_vocabulary
>>> texts, labels = synthetic_affect_corpus(100, seed=0)           # doctest: +SKIP
>>> make_tiny_encoder("/tmp/tiny", synthetic_vocabulary())         # doctest: +SKIP
'/tmp/tiny'
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from carl.atomic import write_text_atomic
from carl.data.readers import affect_csv_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# affect word -> (valence, arousal) on [0, 1]; four quadrants of the VA plane, three
# intensities each, so that labels are continuous rather than four clusters
AFFECT_WORDS: dict[str, tuple[float, float]] = {
    # positive valence, high arousal
    "thrilled": (0.90, 0.90),
    "ecstatic": (0.95, 0.80),
    "excited": (0.75, 0.75),
    # positive valence, low arousal
    "serene": (0.85, 0.10),
    "content": (0.75, 0.25),
    "relaxed": (0.90, 0.20),
    # negative valence, high arousal
    "furious": (0.10, 0.95),
    "terrified": (0.05, 0.85),
    "anxious": (0.25, 0.75),
    # negative valence, low arousal
    "gloomy": (0.15, 0.15),
    "bored": (0.30, 0.10),
    "tired": (0.25, 0.25),
}

# emotion class of each VA quadrant of AFFECT_WORDS (names from the GoEmotions VA mapping)
QUADRANT_CLASSES: dict[str, tuple[str, ...]] = {
    "joy": ("thrilled", "ecstatic", "excited"),
    "relief": ("serene", "content", "relaxed"),
    "anger": ("furious", "terrified", "anxious"),
    "sadness": ("gloomy", "bored", "tired"),
}

FILLER_WORDS: tuple[str, ...] = (
    "the",
    "a",
    "an",
    "this",
    "that",
    "it",
    "was",
    "is",
    "and",
    "then",
    "we",
    "they",
    "he",
    "she",
    "i",
    "you",
    "my",
    "our",
    "their",
    "on",
    "in",
    "at",
    "of",
    "to",
    "from",
    "with",
    "after",
    "before",
    "during",
    "morning",
    "evening",
    "afternoon",
    "day",
    "week",
    "meeting",
    "train",
    "office",
    "kitchen",
    "garden",
    "street",
    "window",
    "table",
    "letter",
    "phone",
    "report",
    "walk",
    "dinner",
    "book",
    "river",
    "city",
    "felt",
    "seemed",
    "looked",
    "sounded",
    "quite",
    "very",
    "rather",
    "somewhat",
    "today",
    "yesterday",
)


def synthetic_vocabulary() -> list[str]:
    """Every word the synthetic corpus uses (filler words, then affect words)."""
    return list(FILLER_WORDS) + list(AFFECT_WORDS)


def affect_word_positions(text: str) -> list[int]:
    """Indices of the whitespace-separated words of ``text`` that are affect words."""
    return [i for i, word in enumerate(text.split()) if word in AFFECT_WORDS]


def synthetic_affect_corpus(
    n: int, seed: int = 0, *, min_words: int = 6, max_words: int = 10, noise: float = 0.02
) -> tuple[list[str], np.ndarray]:
    """``n`` sentences of ``min_words``-``max_words`` words with 1-2 affect words each.

    The label of a sentence is the mean (valence, arousal) of its affect words plus Gaussian
    noise of std ``noise``, clipped to [0, 1]: ``labels`` is float32 [n, 2]. Use
    :func:`affect_word_positions` to find the affect words of a sentence.
    """
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    affect = list(AFFECT_WORDS)
    texts, labels = [], np.zeros((n, 2), dtype=np.float32)
    for row in range(n):
        length = rng.randint(min_words, max_words)
        chosen = rng.sample(affect, rng.choice((1, 2)))
        words = [rng.choice(FILLER_WORDS) for _ in range(length - len(chosen))]
        for word in chosen:
            words.insert(rng.randint(0, len(words)), word)
        texts.append(" ".join(words))
        va = np.mean([AFFECT_WORDS[w] for w in chosen], axis=0)
        labels[row] = np.clip(va + noise_rng.normal(0.0, noise, size=2), 0.0, 1.0)
    return texts, labels


def synthetic_emotion_corpus(
    n: int,
    seed: int = 0,
    *,
    multi_label: bool = False,
    label_noise: float = 0.0,
    min_words: int = 6,
    max_words: int = 10,
) -> tuple[list[str], list[list[str]]]:
    """``n`` sentences labelled with the emotion class (``QUADRANT_CLASSES``) of their affect words.

    Single-label: one affect word per sentence, one class. Multi-label: affect words from 1 or 2
    distinct quadrants, one class each. ``label_noise``: the share of sentences whose labels are
    replaced by one class drawn at random (what no model can learn: an over-confident fit).
    Returns the texts and each text's labels.
    """
    rng = random.Random(seed)
    classes = list(QUADRANT_CLASSES)
    texts, labels = [], []
    for _ in range(n):
        chosen = rng.sample(classes, rng.choice((1, 2)) if multi_label else 1)
        affect = [rng.choice(QUADRANT_CLASSES[c]) for c in chosen]
        words = [rng.choice(FILLER_WORDS) for _ in range(rng.randint(min_words, max_words) - len(affect))]
        for word in affect:
            words.insert(rng.randint(0, len(words)), word)
        texts.append(" ".join(words))
        labels.append([rng.choice(classes)] if rng.random() < label_noise else sorted(chosen))
    return texts, labels


def write_emotion_csv(
    path: str | Path, texts: Sequence[str], labels: Sequence[Sequence[str]], delimiter: str = "|"
) -> Path:
    """Write ``text,label`` rows (several labels joined by ``delimiter``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([text, delimiter.join(names)] for text, names in zip(texts, labels))
    return path


def write_affect_csv(path: str | Path, texts: Sequence[str], labels: np.ndarray) -> Path:
    """Write ``text,valence,arousal`` rows (labels on the 0-1 scale) to ``path``."""
    write_text_atomic(path, affect_csv_text(texts, labels))
    return Path(path)


def make_tiny_encoder(
    path: str | Path,
    words: Sequence[str],
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    max_length: int = 128,
) -> str:
    """Write a random tiny BERT and a fast word-level tokenizer over ``words`` to ``path``.

    The tokenizer lower-cases, splits on whitespace and punctuation, maps unknown words to
    ``[UNK]`` and wraps a sentence as ``[CLS] ... [SEP]``; it is a fast tokenizer, so
    ``word_ids()`` works. ``AutoModel``/``AutoTokenizer.from_pretrained(path)`` load both.
    Returns ``str(path)``.
    """
    import torch
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *(w.lower() for w in words)):
        vocab.setdefault(token, len(vocab))

    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(str(path))

    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_length,
        pad_token_id=vocab["[PAD]"],
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = BertModel(config)
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(str(path))
    return str(path)


def run_metrics(run: Path) -> list[dict]:
    """Every line of a run folder's ``metrics.jsonl``, in order."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def rewind_run(run: Path, *, to_step: int, drop_step: int) -> None:
    """Make a finished run look killed before its ``drop_step`` checkpoint: that checkpoint and the
    exported model go, and ``latest`` names ``step-<to_step>``; rerunning it then resumes from there."""
    shutil.rmtree(run / "checkpoints" / f"step-{drop_step}")
    shutil.rmtree(run / "model")
    (run / "checkpoints" / "latest").write_text(f"step-{to_step}\n")
