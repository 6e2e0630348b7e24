"""Device selection shared by certification, verification and training."""
import torch

from certkit.common.errors import CertkitError


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a :class:`torch.device`.

    ``auto`` picks the first CUDA device when one is visible, else the CPU.

    Raises:
        CertkitError: ``cuda`` was requested but no CUDA device is available, or the name is unknown.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CertkitError(f"--device {name} was requested but no CUDA device is available")
        return torch.device(name)
    raise CertkitError(f"unknown device {name!r}: use auto, cpu or cuda")
