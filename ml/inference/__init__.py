"""Inference: ``Predictor.from_checkpoint(path).predict(volume) -> Prediction`` with ``Finding`` objects."""
from .predictor import Finding, Prediction, Predictor

__all__ = ["Finding", "Prediction", "Predictor"]
