"""Errors a training run raises on purpose (importable without torch)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not one carl wrote; the message names the file."""
