"""Architectures, the certkit checkpoint format, and the one model loader (checkpoints, ONNX, factories)."""
from certkit.models.checkpoint import LoadedModel, bundled_checkpoint_path, load_model, save_checkpoint
from certkit.models.zoo import ARCHITECTURES, NormalizeLayer, build_model

__all__ = ["ARCHITECTURES", "LoadedModel", "NormalizeLayer", "build_model", "bundled_checkpoint_path",
           "load_model", "save_checkpoint"]
