"""Training: natural, Gaussian noise augmentation, and IBP / CROWN-IBP certified training (one loop)."""
from certkit.train.loop import METHODS, TrainConfig, train

__all__ = ["METHODS", "TrainConfig", "train"]
