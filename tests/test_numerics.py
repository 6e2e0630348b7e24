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
