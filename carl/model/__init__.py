"""Encoder, pooling, heads, momentum state and the CARL network."""

from carl.model.carl_model import CarlModel, CarlOutput
from carl.model.encoder import ENCODER_ALIASES, load_backbone, resolve_encoder

__all__ = ["ENCODER_ALIASES", "CarlModel", "CarlOutput", "load_backbone", "resolve_encoder"]
