"""The evaluation suite: probes on frozen embeddings, geometry, lexicon peers, the benchmark.

| module | responsibility |
|---|---|
| ``metrics`` | Pearson r, Spearman rho, MSE, accuracy, (macro/per-class, multi-label) F1 |
| ``calibration`` | temperature scaling fitted on dev, expected calibration error |
| ``thresholds`` | per-class multi-label decision thresholds tuned on dev, macro-F1 at thresholds |
| ``probe`` | ridge and logistic-regression probes, k-fold logic, the frozen-encoder check |
| ``va_probe`` | VA regression on EmoBank or any VA file (``evaluate_emobank``, ``evaluate_va_file``) |
| ``features`` | embed each distinct text once; look rows up by text |
| ``tasks`` | the task list, its settings and data, ``evaluate_encoder`` |
| ``geometry`` | alignment and uniformity (Wang and Isola, 2020) |
| ``lexicon`` | VADER and TextBlob as one-feature peers |
| ``benchmark`` / ``benchmark_cli`` | ``carl benchmark``: cells, cache and resume, results.json |
| ``report`` / ``plots`` | report.md with tables (best per column in bold), PNG plots, README section |

See ``docs/evaluation.md``.
"""
