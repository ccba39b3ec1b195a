"""Baselines trained outside carl's objectives, in the same harness (unsupervised SimCSE)."""

from carl.evaluation.baselines.simcse import SimCSEConfig, train_simcse

__all__ = ["SimCSEConfig", "train_simcse"]
