"""``carl export-onnx``: write every backend's graphs into the model folder, with a parity report.

For a model folder this writes ``onnx/model.onnx`` (float32), ``onnx/model_int8.onnx``,
``openvino/model.xml`` and ``openvino/model_int8.xml`` (when openvino and nncf are installed),
then measures each backend against torch float32 on the parity set (EmoBank test):

- embeddings: max abs difference, min and mean cosine, the worst sentence;
- VA head (carl models): max abs difference of the standardised VA, valence/arousal Pearson r;
- classifier (a model trained with a classification objective): max abs difference of the
  calibrated class probabilities and the share of sentences given the same label(s) as torch;
- the EmoBank ridge probe (valence/arousal r) on the backend's own embeddings.

The quality guard: mean cosine >= 0.99, every r within 0.005 of torch float32 and, for a
classifier, the same label(s) as torch on at least 99% of the parity set. The int8
ONNX graph is quantised both dynamically and statically (calibrated on sentences of the
model's training data, as its ``carl.json`` describes them); the candidate with the higher
worst-sentence cosine is kept and the report says which. Written as ``parity.json`` and
``parity.md`` in the folder.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np

from carl.atomic import write_text_atomic
from carl.data.emobank import load_emobank
from carl.inference.backends import graph_path, source_digest
from carl.inference.encoder import AffectEncoder

MIN_MEAN_COSINE = 0.99
MAX_R_DROP = 0.005
MIN_LABEL_AGREEMENT = 0.99
CALIBRATION_BATCH = 32


def available_backends() -> list[tuple[str, str | None]]:
    """``(backend, quantize)`` pairs whose packages are installed, torch first."""
    pairs: list[tuple[str, str | None]] = [("torch", None)]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        pairs += [("onnx", None), ("onnx", "int8")]
        if importlib.util.find_spec("openvino"):
            pairs.append(("openvino", None))
            if importlib.util.find_spec("nncf"):
                pairs.append(("openvino", "int8"))
    return pairs


def calibration_texts(info: dict, n: int, seed: int = 0) -> tuple[list[str], str]:
    """``n`` sentences of the model's training data (``carl.json``'s config), else of EmoBank train."""
    from carl.config import DataConfig
    from carl.data.sources import load_training_data

    data = (info.get("config") or {}).get("data")
    source = "EmoBank train (the model folder names no training data)"
    texts = load_emobank("train").texts
    if isinstance(data, dict) and data.get("path"):
        fields = {f.name for f in dataclasses.fields(DataConfig)}
        cfg = DataConfig(**{k: v for k, v in data.items() if k in fields})
        if Path(cfg.path).is_file():
            texts, source = load_training_data(cfg, verbose=False)[0].texts, f"training data {cfg.path}"
        else:
            source = f"EmoBank train (the training data {cfg.path} is not here)"
    elif isinstance(data, dict):
        source = "EmoBank train (the training data)"
    pick = np.random.default_rng(seed).permutation(len(texts))[:n]
    return [texts[i] for i in sorted(pick)], source


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


def measure(
    encoder: AffectEncoder, texts: list[str], labels: np.ndarray, reference: dict | None, probe_limit: int
) -> tuple[dict, dict]:
    """Parity of ``encoder`` on ``texts`` against ``reference`` (torch's outputs, or None for torch
    itself), its VA-head r against ``labels`` [N, 2] and its EmoBank probe r. Returns the report
    row and this backend's outputs: ``embedding`` [N, H], ``va`` [N, 2] or None and, for a
    classifier, ``probabilities`` [N, C] and ``labels`` (as ``AffectEncoder.classify`` gives them)."""
    from carl.evaluation.va_probe import evaluate_emobank

    emb, va = encoder.infer(texts, with_va=encoder.has_heads)
    outputs: dict = {"embedding": emb, "va": va}
    if encoder.classifier is not None:
        classified = encoder.classify(texts)
        outputs.update(probabilities=classified.probabilities, labels=classified.labels)
    row: dict = {"backend": encoder.backend}
    if reference is not None:
        cosine = (_unit(emb) * _unit(reference["embedding"])).sum(axis=1)
        worst = int(np.argmin(cosine))
        row.update(
            max_abs_diff=float(np.abs(emb - reference["embedding"]).max()),
            min_cosine=float(cosine.min()),
            mean_cosine=float(cosine.mean()),
            worst_sentence=texts[worst],
        )
        if va is not None:
            row["va_max_abs_diff"] = float(np.abs(va - reference["va"]).max())
        if "probabilities" in outputs:
            same = [a == b for a, b in zip(outputs["labels"], reference["labels"])]
            row.update(
                probability_max_abs_diff=float(np.abs(outputs["probabilities"] - reference["probabilities"]).max()),
                label_agreement=float(np.mean(same)),
            )
    if va is not None:
        prediction = encoder.to_scale(va)
        row.update(
            head_valence_r=_pearson(prediction.valence, labels[:, 0]),
            head_arousal_r=_pearson(prediction.arousal, labels[:, 1]),
        )
    probe = evaluate_emobank(encoder, show_progress=False, limit=probe_limit).metrics
    row.update(probe_valence_r=probe["valence_pearson"], probe_arousal_r=probe["arousal_pearson"])
    return row, outputs


def guard(row: dict, torch_row: dict) -> bool:
    """The quality guard: mean cosine >= 0.99, each r within 0.005 of torch float32 and, for a
    classifier, the same label(s) as torch on at least 99% of the parity set."""
    drops = [
        abs(row[k] - torch_row[k])
        for k in ("probe_valence_r", "probe_arousal_r", "head_valence_r", "head_arousal_r")
        if k in torch_row
    ]
    return (
        row.get("mean_cosine", 1.0) >= MIN_MEAN_COSINE
        and row.get("label_agreement", 1.0) >= MIN_LABEL_AGREEMENT
        and all(d <= MAX_R_DROP for d in drops)
    )


def export_graphs(
    model: str,
    *,
    num_threads: int | None = None,
    limit: int = 0,
    calibration_size: int = 256,
    plain_output: str | None = None,
    log=print,
) -> dict:
    """Write every installed backend's graphs into ``model``'s folder and its parity report; returns the report.

    ``limit`` keeps the first N sentences of each EmoBank split for the parity set and the probe (0 = all);
    ``plain_output`` keeps a copy of the unfused float32 graph there (portable to any ONNX runtime).
    """
    from carl.inference.onnx_export import INT8_METHODS, export_onnx, optimize_onnx, quantize_onnx
    from carl.model.encoder import resolve_encoder

    folder = Path(resolve_encoder(model))
    given = Path(model).expanduser().resolve()
    if given not in (folder.resolve(), folder.resolve().parent) or not os.access(folder, os.W_OK):
        raise ValueError(
            f"{model}: not a writable model folder of yours (export writes its graphs into it; copy {folder} first)"
        )
    encoder = AffectEncoder.load(str(folder), dtype="float32", num_threads=num_threads)
    pairs = available_backends()
    if len(pairs) == 1:
        raise RuntimeError("no backend package is installed: pip install 'carl[onnx]' (and 'carl[openvino]')")
    source = source_digest(folder)
    float_onnx = graph_path(folder, "onnx", None)
    plain = export_onnx(encoder, float_onnx.with_name("model_plain.onnx"), source=source)  # OpenVINO reads it
    config = encoder.model.backbone.config
    optimize_onnx(
        plain, float_onnx, source=source, num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    log(f"wrote {float_onnx}")
    calibration, calibration_source = calibration_texts(encoder.info, calibration_size)
    batches = [(ids, mask) for _, ids, mask in encoder.padded_batches(calibration, CALIBRATION_BATCH)]

    test = load_emobank("test")
    texts, labels = test.texts[: limit or None], test.labels[: limit or None]

    def load(backend: str, quantize: str | None) -> AffectEncoder:
        return AffectEncoder.load(str(folder), num_threads=num_threads, backend=backend, quantize=quantize)

    torch_row, reference = measure(encoder, texts, labels, None, limit)
    rows, candidates = [{**torch_row, "quantize": None, "passes_guard": True}], {}
    int8_onnx = graph_path(folder, "onnx", "int8")
    for method in INT8_METHODS:  # both candidates, the better kept; from the plain graph, whose types are known
        quantize_onnx(plain, int8_onnx, method=method, source=source, calibration=batches)
        emb, _ = load("onnx", "int8").infer(texts)
        cosine = (_unit(emb) * _unit(reference["embedding"])).sum(axis=1)
        candidates[method] = {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}
        log(f"int8 onnx, {method}: min cosine {cosine.min():.4f}, mean {cosine.mean():.5f}")
    int8_method = max(INT8_METHODS, key=lambda m: candidates[m]["min_cosine"])
    if int8_method != INT8_METHODS[-1]:
        quantize_onnx(plain, int8_onnx, method=int8_method, source=source, calibration=batches)
    if ("openvino", None) in pairs:
        from carl.inference.openvino_export import export_openvino, quantize_openvino

        export_openvino(plain, graph_path(folder, "openvino", None), source=source)
        if ("openvino", "int8") in pairs:
            quantize_openvino(plain, graph_path(folder, "openvino", "int8"), source=source, calibration=batches)
    if plain_output:
        shutil.move(plain, plain_output)
        log(f"wrote {plain_output}")
    else:
        plain.unlink()
    for backend, quantize in pairs[1:]:
        row, _ = measure(load(backend, quantize), texts, labels, reference, limit)
        rows.append({**row, "quantize": quantize, "passes_guard": guard(row, torch_row)})
        log(f"measured {row['backend']}")
    report = {
        "model": str(folder),
        "source_sha256": source,
        "parity_set": f"EmoBank test, {len(texts)} sentences",
        "probe": f"EmoBank ridge probe{f', first {limit} sentences of each split' if limit else ''}",
        "calibration": {"source": calibration_source, "sentences": len(calibration)},
        "int8_onnx": {"method": int8_method, "per_channel": True, "candidates": candidates},
        "int8_openvino": "NNCF, ModelType.TRANSFORMER, mixed preset" if ("openvino", "int8") in pairs else None,
        "guard": {
            "min_mean_cosine": MIN_MEAN_COSINE,
            "max_r_drop": MAX_R_DROP,
            "min_label_agreement": MIN_LABEL_AGREEMENT,
        },
        "missing": [
            f"{b}{'-' + q if q else ''}" for b, q in (("openvino", None), ("openvino", "int8")) if (b, q) not in pairs
        ],
        "backends": rows,
    }
    write_text_atomic(folder / "parity.json", json.dumps(report, indent=2))
    write_text_atomic(folder / "parity.md", parity_markdown(report))
    log(f"wrote {folder / 'parity.json'} and parity.md")
    return report


def parity_markdown(report: dict) -> str:
    """The parity report as a short markdown page."""
    lines = [
        f"# Backend parity: {report['model']}",
        "",
        f"Against torch float32 on {report['parity_set']}; {report['probe']}. Quality guard: mean cosine "
        f">= {MIN_MEAN_COSINE}, every r within {MAX_R_DROP} of torch, a classifier's labels the same as "
        f"torch's on >= {MIN_LABEL_AGREEMENT:.0%} of sentences. int8 ONNX: "
        f"{report['int8_onnx']['method']} (per channel; candidates "
        + ", ".join(f"{m} min cosine {c['min_cosine']:.4f}" for m, c in report["int8_onnx"]["candidates"].items())
        + f"), calibrated on {report['calibration']['sentences']} sentences of "
        f"{report['calibration']['source']}.",
        "",
        "| backend | max abs diff | min cosine | mean cosine | probe V r | probe A r | head V r | head A r "
        "| class p max abs diff | same labels | guard | worst sentence |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    for row in report["backends"]:
        worst = row.get("worst_sentence", "")
        worst = (worst[:60] + "...") if len(worst) > 60 else worst
        lines.append(
            f"| {row['backend']} | {cell(row, 'max_abs_diff', '.2e')} | {cell(row, 'min_cosine', '.4f')} "
            f"| {cell(row, 'mean_cosine', '.5f')} | {cell(row, 'probe_valence_r', '.4f')} "
            f"| {cell(row, 'probe_arousal_r', '.4f')} | {cell(row, 'head_valence_r', '.4f')} "
            f"| {cell(row, 'head_arousal_r', '.4f')} | {cell(row, 'probability_max_abs_diff', '.2e')} "
            f"| {cell(row, 'label_agreement', '.2%')} | {'pass' if row['passes_guard'] else 'FAIL'} "
            f"| {worst.replace('|', '/')} |"
        )
    if report["missing"]:
        lines += ["", f"Not exported (package not installed): {', '.join(report['missing'])}."]
    return "\n".join(lines) + "\n"
