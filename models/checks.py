"""Pre-flight check that a model fits a dataset, before any certificate is computed."""
from __future__ import annotations

import math

import torch

from certkit.common.errors import CertkitError, shape_text
from certkit.models.checkpoint import LoadedModel


def check_model_data(model: LoadedModel, data_shape: tuple[int, ...], num_labels: int) -> tuple[int, ...]:
    """Verify that ``model`` maps inputs of ``data_shape`` to logits for at least ``num_labels`` classes.

    Data whose per-input size equals the model's recorded input size but whose layout differs (e.g. N x 5
    vectors for an ONNX network declared 1 x 1 x 5) is reshaped to the model's input shape.

    Args:
        model: the loaded classifier.
        data_shape: shape of one data input (no batch dim).
        num_labels: 1 + the largest label in the data.

    Returns:
        the input shape to feed the model.

    Raises:
        CertkitError: sizes differ, the forward pass fails, the output is not (B, K) with K >= 2 and
            K >= num_labels, or the logits are not finite on a clean input.
    """
    shape = tuple(data_shape)
    if model.input_shape is not None and tuple(model.input_shape) != shape:
        if math.prod(model.input_shape) != math.prod(shape):
            raise CertkitError(f"model expects inputs of shape {tuple(model.input_shape)} but the data has "
                               f"shape {shape}")
        shape = tuple(model.input_shape)
    device = next((p.device for p in model.module.parameters()), torch.device("cpu"))
    try:
        with torch.inference_mode():
            out = model.module(torch.full((2,) + shape, 0.5, device=device))
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise CertkitError(f"model does not accept inputs of shape {shape}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(out, torch.Tensor) or out.dim() not in (2, 3):
        raise CertkitError(f"model must return logits of shape (batch, classes) (or (batch, heads, classes) for "
                           f"Dual RS), got {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    k = out.shape[-1]
    if k < 2 or k < num_labels:
        raise CertkitError(f"model has {k} outputs but the data has labels up to {num_labels - 1}")
    if not torch.isfinite(out).all():
        raise CertkitError("the model produced NaN or inf logits on a clean input")
    return shape


def fit_data_to_model(model: LoadedModel, data):
    """Run :func:`check_model_data` for a dataset (anything with x, y, input_shape, num_classes) and return it
    with x reshaped to the model's input shape when only the layout differs."""
    import dataclasses

    shape = check_model_data(model, data.input_shape, data.num_classes)
    if shape == tuple(data.input_shape):
        return data
    return dataclasses.replace(data, x=data.x.reshape((len(data),) + shape))


def input_layout(module: torch.nn.Module, shape, input_shape=None) -> tuple[tuple[int, ...], bool]:
    """Whether a tensor of ``shape`` is ONE input or a batch of inputs of ``module``.

    With ``input_shape`` (one input, no batch dim) the answer is read off the shapes. Without it, the tensor is one
    input when the module takes it with a batch dimension added and returns (1, K) (or (1, H, K)) logits, else a
    batch when the module takes its first row that way (one forward pass of one row each; a conv net refuses
    N x C x H x W with another batch dim, so image batches are never mistaken for one input).

    Returns:
        (input_shape, batched).
    Raises:
        CertkitError: one line naming the expected layout (C x H x W for one input, N x C x H x W for a batch).
    """
    shape = tuple(int(d) for d in shape)
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
        if shape == input_shape:
            return input_shape, False
        if len(shape) == len(input_shape) + 1 and shape[1:] == input_shape:
            return input_shape, True
        raise CertkitError(f"expected one input of shape {shape_text(input_shape)} or a batch N x "
                           f"{shape_text(input_shape)}, got {shape_text(shape)}")
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    for one in (shape, shape[1:]):
        if not one:
            continue
        try:
            with torch.inference_mode():
                out = module(torch.full((1,) + one, 0.5, device=device))
        except (RuntimeError, ValueError, TypeError, IndexError):
            continue
        if isinstance(out, torch.Tensor) and out.dim() in (2, 3) and out.shape[0] == 1:
            return one, one != shape
    raise CertkitError(f"the model takes a tensor of shape {shape_text(shape)} neither as one input nor as a batch "
                       f"of inputs: images go in as C x H x W (one) or N x C x H x W (a batch), vectors as D or N x D")
