"""Loaders for evaluation corpora the user must obtain themselves.

None of these corpora may be redistributed with CARL, so each loader reads a path given by
the user and, when it is missing, says how to get the data.

``"iemocap"`` -- IEMOCAP (Busso et al., 2008, *Language Resources and Evaluation* 42:335-359).
    Licence-gated: request it from USC SAIL (https://sail.usc.edu/iemocap/). Expected file:
    a CSV you prepare from the transcripts, one utterance per row, with columns ``text``,
    ``valence`` and ``activation`` on the IEMOCAP 1-5 dimensional scale (average the
    annotators' values per utterance yourself).

``"facebookposts"`` -- Facebook posts rated for valence and arousal (Preotiuc-Pietro et al.,
    2016, "Modelling Valence and Arousal in Facebook posts", WASSA @ NAACL). Download
    ``dataset-fb-valence-arousal-anon.csv`` from the World Well-Being Project
    (http://wwbp.org/downloads/public_data/dataset-fb-valence-arousal-anon.csv). Expected
    columns: ``Anonymized Message``, ``Valence1``, ``Valence2``, ``Arousal1``, ``Arousal2``,
    each rating on 1-9 (two annotators); the target is the mean of the two annotators.

``"emotales"`` -- EmoTales folk-tale sentences (Francisco et al., 2012, "EmoTales: creating a
    corpus of folk tales with emotional annotations", *Language Resources and Evaluation*
    46:341-381); ask the authors (Universidad Complutense de Madrid, NIL group) for a copy.
    Expected file: a CSV you prepare with columns ``text``, ``valence``, ``arousal``, one
    sentence per row with the dimensional annotation averaged over annotators. We could not
    verify the original annotation scale here: the default is ``"1-9"``; pass ``scale=`` if
    your copy uses another range (values outside the scale are rejected, but a 1-5 file read
    as 1-9 would not be, so check).

All return an :class:`~carl.data.readers.AffectDataset` (labels ``[N, 2]`` in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from .errors import DataError
from .readers import AffectDataset, load_table, number_value, read_records, require_columns, text_value
from .scales import Scale, as_scale

PathArg = str | PathLike[str]


@dataclass(frozen=True)
class UserCorpus:
    """What a user corpus is and how to obtain it."""

    name: str
    title: str
    scale: str
    expected: str
    how_to_obtain: str


USER_CORPORA: dict[str, UserCorpus] = {
    "iemocap": UserCorpus(
        "iemocap",
        "IEMOCAP (Busso et al., 2008)",
        "1-5",
        "a CSV with columns 'text', 'valence', 'activation' (IEMOCAP 1-5 scale)",
        "IEMOCAP is licence-gated: request it at https://sail.usc.edu/iemocap/ (USC SAIL), "
        "then export the transcripts with per-utterance mean valence and activation to CSV.",
    ),
    "facebookposts": UserCorpus(
        "facebookposts",
        "Facebook posts (Preotiuc-Pietro et al., 2016)",
        "1-9",
        "dataset-fb-valence-arousal-anon.csv with columns 'Anonymized Message', 'Valence1', "
        "'Valence2', 'Arousal1', 'Arousal2' (1-9)",
        "download dataset-fb-valence-arousal-anon.csv from the World Well-Being Project: "
        "http://wwbp.org/downloads/public_data/dataset-fb-valence-arousal-anon.csv",
    ),
    "emotales": UserCorpus(
        "emotales",
        "EmoTales (Francisco et al., 2012)",
        "1-9",
        "a CSV with columns 'text', 'valence', 'arousal' (default scale 1-9; pass scale= otherwise)",
        "EmoTales is not publicly downloadable: ask the authors (Francisco, Hervas, Peinado, "
        "Gervas; NIL group, Universidad Complutense de Madrid) and export the sentence-level "
        "dimensional annotations to CSV.",
    ),
}

_ALIASES = {
    "iemocap": "iemocap",
    "facebookposts": "facebookposts",
    "facebook": "facebookposts",
    "fb": "facebookposts",
    "emotales": "emotales",
}


def _corpus_key(name: str) -> str:
    key = _ALIASES.get(name.strip().lower().replace("_", "").replace("-", "").replace(" ", ""))
    if key is None:
        raise ValueError(f"unknown user corpus {name!r}; choose one of {sorted(USER_CORPORA)}")
    return key


def _missing(corpus: UserCorpus, path: PathArg | None) -> DataError:
    where = "no path given" if path is None else "file not found"
    return DataError(
        f"{where} for {corpus.title}. Expected {corpus.expected}. How to obtain it: {corpus.how_to_obtain}", path=path
    )


def load_user_corpus(name: str, path: PathArg | None, *, scale: Scale | str | None = None) -> AffectDataset:
    """Load ``"iemocap"``, ``"facebookposts"`` or ``"emotales"`` from a user-supplied ``path``.

    ``scale`` overrides the corpus default (IEMOCAP 1-5, Facebook 1-9, EmoTales 1-9).
    Raises :class:`DataError` saying how to obtain the data when ``path`` is None or absent.
    """
    corpus = USER_CORPORA[_corpus_key(name)]
    if path is None or not Path(path).is_file():
        raise _missing(corpus, path)
    chosen = as_scale(scale if scale is not None else corpus.scale)
    if corpus.name == "iemocap":
        return load_table(path, text_column="text", valence_column="valence", arousal_column="activation", scale=chosen)
    if corpus.name == "emotales":
        return load_table(path, text_column="text", valence_column="valence", arousal_column="arousal", scale=chosen)
    return _load_facebook(path, chosen)


def _load_facebook(path: PathArg, scale: Scale) -> AffectDataset:
    """Mean of the two annotators' valence and arousal, normalised from ``scale``."""
    text_col, v_cols, a_cols = "Anonymized Message", ("Valence1", "Valence2"), ("Arousal1", "Arousal2")
    table = read_records(path, "csv")
    require_columns(table, [text_col, *v_cols, *a_cols])
    if not table.records:
        raise DataError("no data rows (the file has only a header)", path=path)
    texts, labels = [], np.empty((len(table.records), 2), dtype=np.float64)
    for i, (line, record) in enumerate(table.records):
        texts.append(text_value(table, line, record, text_col))
        labels[i, 0] = np.mean([number_value(table, line, record, c, scale) for c in v_cols])
        labels[i, 1] = np.mean([number_value(table, line, record, c, scale) for c in a_cols])
    return AffectDataset(texts, scale.normalise(labels).astype(np.float32), scale, str(path))
