"""Training: natural and Gaussian noise-augmented training (certified training builds on the same loop)."""
from certkit.train.loop import METHODS, TrainConfig, train

__all__ = ["METHODS", "TrainConfig", "train"]
