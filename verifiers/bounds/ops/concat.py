"""Concatenation of data tensors along a non-batch dimension (``torch.cat`` / ``torch.concat``, ONNX ``Concat``): an
affine map that stacks its inputs, so IBP concatenates the intervals (exact) and the backward rule cuts the
coefficients A into one slice per input along the same dimension. Pieces that do not depend on the input (a class
token prepended to the patch embeddings of a vision transformer) must be the same for every sample; they are
stored once and their slice of A goes into the bias."""
from __future__ import annotations

import torch

from certkit.models.onnx_import import cat_batch
from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op


@register_op(functions=(torch.cat, torch.concat, cat_batch), onnx=("Concat",))
class Concat(Op):
    """``torch.cat(tensors, dim)`` along dim >= 1 of data tensors and constants the same for every sample."""

    name = "Concat"

    def __init__(self, dim: int, arity: int, constants: dict | None = None):
        super().__init__()
        self.dim = dim          # in the batched tensor (>= 1)
        self.arity = arity      # data pieces
        self.constants = constants or {}   # position among all pieces -> (1, *piece shape) constant

    @classmethod
    def from_call(cls, call: Call):
        pieces = call.args[0] if call.args else call.kwargs.get("tensors")
        dim = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim", call.kwargs.get("axis", 0))
        if not isinstance(pieces, (list, tuple)):
            raise Unsupported("torch.cat of something other than a list of tensors")
        rank = len(call.shape) + 1
        dim = int(dim) + rank if int(dim) < 0 else int(dim)
        if dim == 0:
            raise Unsupported("concatenation along the batch dimension")
        constants = {}
        for k, t in enumerate(pieces):
            if call.is_data(t):
                continue
            c = call.const(t)
            if c.dim() != rank or not bool((c == c[:1]).all()):
                raise Unsupported(f"concatenation with a constant piece of shape {tuple(c.shape)} that is not the "
                                  f"same for every sample")
            constants[k] = c[:1].detach()
        return cls(dim, len(pieces) - len(constants), constants)

    def _all(self, xs):
        """The data pieces ``xs`` with the constants put back in place, expanded over the batch."""
        it = iter(xs)
        B = xs[0].shape[0]
        out = []
        for k in range(self.arity + len(self.constants)):
            c = self.constants.get(k)
            out.append(next(it) if c is None else c.to(xs[0].dtype).expand((B,) + tuple(c.shape[1:])))
        return out

    def forward(self, *xs):
        return torch.cat(self._all(xs), self.dim)

    def ibp(self, *ivs):
        return (torch.cat(self._all([iv[0] for iv in ivs]), self.dim),
                torch.cat(self._all([iv[1] for iv in ivs]), self.dim))

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        def pieces(side):
            it = iter(rows)
            out = []
            for k in range(self.arity + len(self.constants)):
                c = self.constants.get(k)
                if c is None:
                    out.append(next(it)[side])
                else:                                   # a constant: in the constant row, zero coefficients
                    T = rows[0][side]
                    piece = torch.zeros(T.shape[:2] + tuple(c.shape[1:]), dtype=T.dtype, device=T.device)
                    piece[:, 0] = c.to(T.dtype)
                    out.append(piece)
            return torch.cat(out, self.dim + 1)
        return pieces(0), pieces(1)

    def backward(self, A, in_bounds=(), relaxation=None):
        it = iter(self.in_shapes)
        sizes = [self.constants[k].shape[self.dim] if k in self.constants else next(it)[self.dim - 1]
                 for k in range(self.arity + len(self.constants))]
        parts = torch.split(A, sizes, dim=self.dim + 1)
        bias = None
        for k, c in self.constants.items():
            term = (parts[k] * c.to(A.dtype).unsqueeze(1)).flatten(2).sum(-1)
            bias = term if bias is None else bias + term
        return [p for k, p in enumerate(parts) if k not in self.constants], bias

    def sound_error(self, *m):
        if self.constants:
            raise NotImplementedError("Concat with constant pieces has no rounding rule for the sound mode")
        return None  # data movement: exact in floating point
