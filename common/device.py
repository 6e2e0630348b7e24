"""Device selection shared by certification, verification and training, and the float32 mode of bounds on GPUs."""
import contextlib

import torch

from certkit.common.errors import CertkitError


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a :class:`torch.device`.

    ``auto`` picks the first CUDA device when one is visible, else the CPU. Under torchrun (LOCAL_RANK set) ``auto``
    and ``cuda`` mean this rank's GPU, cuda:LOCAL_RANK (modulo the number of GPUs), so that ranks do not share one.

    Raises:
        CertkitError: ``cuda`` was requested but no CUDA device is available, or the name is unknown.
    """
    import os

    name = (name or "auto").strip().lower()
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name in ("auto", "cuda") or name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CertkitError(f"--device {name} was requested but no CUDA device is available")
        if name in ("auto", "cuda") and "LOCAL_RANK" in os.environ:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        try:
            return torch.device("cuda" if name == "auto" else name)
        except RuntimeError:
            raise CertkitError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    raise CertkitError(f"unknown device {name!r}: use auto, cpu or cuda")


@contextlib.contextmanager
def exact_float32():
    """Within the block, CUDA convolutions and matrix products run in true float32, not TensorFloat32.

    cuDNN convolutions use TensorFloat32 by default on Ampere and later GPUs (PyTorch's
    ``torch.backends.cudnn.allow_tf32``): inputs rounded to a 10-bit mantissa, errors of about 1e-3 relative. Bound
    propagation turns on exactly such sums, and a bound that is off by 1e-3 can call an unverified input verified, so
    certkit's bound computations run inside this block (both PyTorch flags off, restored afterwards). No effect on
    the CPU. Usable as a decorator."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul
