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
