"""common/numerics.py: the flush-denormal block restores the caller's setting, whatever it was."""
import pytest
import torch

from certkit.common.numerics import flush_denormal, flush_denormal_enabled

needs_ftz = pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormals")


@needs_ftz
@pytest.mark.parametrize("before", [False, True])
def test_flush_denormal_restores_the_previous_value(before):
    torch.set_flush_denormal(before)
    try:
        assert flush_denormal_enabled() is before
        with flush_denormal():
            assert flush_denormal_enabled()
            assert float(torch.tensor([1e-39]).mul(1.0)) == 0.0
        assert flush_denormal_enabled() is before
        with pytest.raises(RuntimeError), flush_denormal():
            raise RuntimeError("inside")
        assert flush_denormal_enabled() is before
    finally:
        torch.set_flush_denormal(False)


def test_bounds_run_without_tensorfloat32(monkeypatch):
    """cuDNN's TensorFloat32 convolutions (on by default on GPUs) round to a 10-bit mantissa: every convolution and
    matrix product of IBP, CROWN-IBP, CROWN and alpha-CROWN runs with both TF32 flags off, and the user's flags are
    restored afterwards (the flags are plain attributes, so this is checked on the CPU too)."""
    import torch.nn.functional as F
    from torch import nn

    from certkit.common.device import exact_float32
    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.bounds.perturbation import Box

    seen = []
    conv2d = F.conv2d

    def spy(*args, **kwargs):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return conv2d(*args, **kwargs)

    monkeypatch.setattr(F, "conv2d", spy)
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        bm = BoundedModule(net, (1, 8, 8))
        x = torch.rand(2, 1, 8, 8)
        for method in ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN"):
            seen.clear()
            bm.compute_bounds(Box(x - 0.05, x + 0.05), method=method)
            assert seen and set(seen) == {(False, False)}, method
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with exact_float32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
