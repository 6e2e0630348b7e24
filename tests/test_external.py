"""Adapters to external bound engines (verifiers/external.py); auto_LiRPA itself is optional and absent in CI."""
import pytest
import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.models.zoo import NormalizeLayer
from certkit.verifiers.external import AutoLirpaBackend, _batched_normalization, auto_lirpa_available


@pytest.mark.parametrize("shape", [(3, 5, 4), (7,)])
def test_normalization_rewritten_for_auto_lirpa_computes_the_same_function(shape):
    torch.manual_seed(0)
    mean, std = ([0.1, 0.5, 0.9], [0.2, 0.3, 0.4]) if len(shape) == 3 else ([0.3], [0.7])
    flat = torch.Size(shape).numel()
    model = nn.Sequential(NormalizeLayer(mean, std), nn.Flatten(), nn.Linear(flat, 4)).eval()
    copy = _batched_normalization(model, shape)
    assert not any(isinstance(m, NormalizeLayer) for m in copy.modules())
    assert isinstance(model[0], NormalizeLayer)  # the user's model is left as it was
    x = torch.rand((6,) + shape)
    assert torch.allclose(copy(x), model(x), atol=1e-6)


def test_backend_without_auto_lirpa_is_a_clear_error():
    if auto_lirpa_available():
        pytest.skip("auto_LiRPA is importable here")
    with pytest.raises(CertkitError, match="auto_LiRPA"):
        AutoLirpaBackend(nn.Linear(2, 2), (2,))
