"""VA regression probe of a frozen encoder on EmoBank (official split)."""

from __future__ import annotations

from carl.data.emobank import load_emobank
from carl.evaluation.probe import ProbeResult, parameter_fingerprint, ridge_probe
from carl.inference import AffectEncoder


class EncoderNotFrozen(RuntimeError):
    """The encoder's weights changed while it was being probed."""


def evaluate_emobank(encoder: AffectEncoder, *, batch_size: int = 64, show_progress: bool = True,
                     limit: int = 0) -> ProbeResult:
    """Ridge probe: fit on train, choose alpha on dev, report on test (Pearson r, rho, MSE)."""
    before = parameter_fingerprint(encoder.model)
    splits = {}
    for split in ("train", "dev", "test"):
        data = load_emobank(split)
        if limit:
            data = data.subset(list(range(min(limit, len(data)))))
        splits[split] = (encoder.encode(data.texts, batch_size=batch_size, show_progress=show_progress),
                         data.labels)
    if parameter_fingerprint(encoder.model) != before:
        raise EncoderNotFrozen("encoder weights changed during probing")
    return ridge_probe(*splits["train"], *splits["dev"], *splits["test"])
