"""Training: one harness (harness.py) and the losses that plug into it (methods/, one module each): natural,
gaussian, ibp, crown-ibp, dual, rct; the soundness benchmark's generator is another plug-in."""
from certkit.train.classifier import ClassifierTraining, TrainConfig, register_training, train, training_methods
from certkit.train.harness import Run, StepOutput, TrainingMethod, fit

__all__ = ["ClassifierTraining", "Run", "StepOutput", "TrainConfig", "TrainingMethod", "fit", "register_training",
           "train", "training_methods"]
