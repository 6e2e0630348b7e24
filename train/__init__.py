"""Training: one harness (harness.py), the network training every method shares (network.py), classifiers on top of
it (classifier.py), and the methods that plug in (methods/, one module each, each declaring its own options);
the soundness benchmark's generator is another plug-in of the harness."""
from certkit.train.classifier import ClassifierTraining
from certkit.train.harness import StepOutput, TrainingMethod, TrainingRun, fit
from certkit.train.network import NetworkTraining, TrainConfig, register_training, train, training_methods

__all__ = ["ClassifierTraining", "NetworkTraining", "StepOutput", "TrainConfig", "TrainingMethod", "TrainingRun", "fit",
           "register_training", "train", "training_methods"]
