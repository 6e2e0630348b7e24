"""natural: cross-entropy on clean inputs."""
from certkit.train.classifier import ClassifierTraining
from certkit.train.network import register_training


@register_training
class Natural(ClassifierTraining):
    """Cross-entropy on clean inputs."""

    name = "natural"
    help = "clean cross-entropy"
