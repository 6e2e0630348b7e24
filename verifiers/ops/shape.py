"""Shape ops (flatten / reshape / view / identity) and residual Add / Sub of two data tensors."""
from __future__ import annotations

from certkit.verifiers.ops.base import Op


class Reshape(Op):
    """Reshape each sample to ``out_shape`` (covers Flatten, view, reshape, Identity and eval Dropout)."""

    name = "Reshape"

    def forward(self, x):
        return x.reshape((x.shape[0],) + tuple(self.out_shape))

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    def backward(self, A, *_):
        return [A.reshape(A.shape[:2] + tuple(self.in_shapes[0]))], None


class Permute(Op):
    """Permutation of the per-sample dims (ONNX Transpose keeping the batch first): a linear map."""

    name = "Permute"

    def __init__(self, perm: tuple[int, ...]):
        super().__init__()
        self.perm = tuple(int(p) for p in perm)                       # over per-sample dims
        self.inverse = tuple(sorted(range(len(perm)), key=lambda k: self.perm[k]))

    def forward(self, x):
        return x.permute((0,) + tuple(p + 1 for p in self.perm))

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    def backward(self, A, *_):
        return [A.permute((0, 1) + tuple(q + 2 for q in self.inverse))], None


class Add(Op):
    """x + y of two data tensors of the same shape (residual connections)."""

    name = "Add"

    def forward(self, x, y):
        return x + y

    def ibp(self, a, b):
        return a[0] + b[0], a[1] + b[1]

    def backward(self, A, *_):
        return [A, A], None


class Sub(Op):
    """x - y of two data tensors of the same shape."""

    name = "Sub"

    def forward(self, x, y):
        return x - y

    def ibp(self, a, b):
        return a[0] - b[1], a[1] - b[0]

    def backward(self, A, *_):
        return [A, -A], None
