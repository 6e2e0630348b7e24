"""A univariate piecewise-linear function f(z) = sum_k w_k relu(z - t_k) + b, bounded as ONE function of z.

Networks exported with a piecewise-linear approximation of sigmoid, sine or cosine (VNN-COMP ml4acopf's "linear"
networks) compute f for every neuron z_i of a layer as Reshape (n) -> (n, 1), Sub of K breakpoints t, Relu, a
K -> 1 Linear layer and Reshape back to (n). Bound propagation would see n x K separate ReLUs, relax each on its
own and lose the fact that together they are one function of z_i, often a monotone one whose range over [l, u] is
just [f(l), f(u)]. Before the bound graph is built, that chain is rewritten into one call of
:func:`piecewise_linear`, which computes the same values with the same torch calls (bit for bit).

With the breakpoints sorted, f is linear between them: f(z) = F_j + S_j (z - t_j) on [t_j, t_j+1], where F_j = f(t_j)
and S_j = w_0 + ... + w_j (f = b left of t_0). Over [l, u]:

* IBP: [min, max] of f over {l, u} and the breakpoints inside (l, u), exact (a piecewise-linear function takes its
  extremes at its kinks or at the ends).
* CROWN: both lines take the chord slope s = (f(u) - f(l)) / (u - l); the intercepts are the min and max of
  f(p) - s p over the same points (f(z) - s z is piecewise linear with the same kinks), so
  s z + c_L <= f(z) <= s z + c_U on [l, u], each touching f. For a monotone f the output interval is f's exact
  range; the sum of K separate ReLU relaxations is not.
* Branch and bound splits at the breakpoint inside (l, u) nearest the middle; a neuron with none is exact.

The lines are a 1-D function's chord relaxation (as CROWN's for S-shaped activations, Zhang et al. NeurIPS 2018),
with the offsets computed exactly at the kinks instead of at tangent points.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from certkit.models.onnx_import import reshape_batch
from certkit.verifiers.bounds.ops.activation import Activation
from certkit.verifiers.bounds.ops.base import Call, register_op, register_rewrite


def piecewise_linear(z: torch.Tensor, t: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """sum_k w_k relu(z - t_k) + b elementwise, z (B, n) -> (B, n); t (K,), w (1, K), b (1,) or None: the calls of
    the chain it replaces (reshape, sub, relu, linear, reshape), so the values are the chain's bit for bit."""
    return F.linear(torch.relu(z.reshape(tuple(z.shape) + (1,)) - t), w, b).reshape(z.shape)


fx.wrap("piecewise_linear")


def _only_user(n: fx.Node) -> fx.Node | None:
    return next(iter(n.users)) if len(n.users) == 1 else None


def _chain(back: fx.Node):
    """(z, sub, relu, linear node) when ``back`` ends a reshape (n, 1) / sub t / relu / linear (K -> 1) / reshape
    (n) chain whose intermediate results have no other use; else None."""
    if not (back.op == "call_function" and back.target is reshape_batch and len(back.args) == 2):
        return None
    lin = back.args[0]
    if not (isinstance(lin, fx.Node) and lin.op == "call_module" and _only_user(lin) is back):
        return None
    relu = lin.args[0] if len(lin.args) == 1 else None
    if not (isinstance(relu, fx.Node) and _only_user(relu) is lin
            and ((relu.op == "call_module") or (relu.op == "call_function" and relu.target in (torch.relu, F.relu)))):
        return None
    sub = relu.args[0] if relu.args else None
    if not (isinstance(sub, fx.Node) and sub.op == "call_function" and sub.target is torch.sub and len(sub.args) == 2
            and not sub.kwargs and _only_user(sub) is relu):
        return None
    col, t = sub.args
    if not (isinstance(col, fx.Node) and col.op == "call_function" and col.target is reshape_batch
            and _only_user(col) is sub and isinstance(t, fx.Node) and t.op == "get_attr"):
        return None
    shape, back_shape = col.args[1], back.args[1]
    if not (isinstance(shape, (tuple, list)) and isinstance(back_shape, (tuple, list)) and len(shape) == 2
            and shape[1] == 1 and tuple(shape[:1]) == tuple(back_shape)):
        return None
    owner = back.graph.owning_module   # (graph.py's rewrite pass gives its copy of the graph the module)
    if owner is None:
        return None
    layer = owner.get_submodule(str(lin.target))
    if not (isinstance(layer, nn.Linear) and layer.out_features == 1):
        return None
    if relu.op == "call_module" and not isinstance(owner.get_submodule(str(relu.target)), nn.ReLU):
        return None
    try:
        tv = operator.attrgetter(str(t.target))(owner)   # a dotted get_attr path
    except AttributeError:
        return None
    if not (isinstance(tv, torch.Tensor) and tv.dim() == 1 and tv.numel() == layer.in_features):
        return None
    return col.args[0], sub, relu, lin


def _matches(n: fx.Node) -> bool:
    return _chain(n) is not None


def _fuse(graph: fx.Graph, back: fx.Node) -> None:
    """Replace the chain ending at ``back`` by piecewise_linear(z, t, linear.weight, linear.bias)."""
    chain, owner = _chain(back), graph.owning_module
    if chain is None or owner is None:
        return
    z, sub, relu, lin = chain
    with graph.inserting_before(back):
        w = graph.get_attr(f"{lin.target}.weight")
        has_bias = getattr(owner.get_submodule(str(lin.target)), "bias", None) is not None
        b = graph.get_attr(f"{lin.target}.bias") if has_bias else None
        new = graph.call_function(piecewise_linear, (z, sub.args[1], w, b))
    back.replace_all_uses_with(new)
    for node in (back, lin, relu, sub, sub.args[0]):
        graph.erase_node(node)


register_rewrite(_matches, _fuse, fuses=True)


def _extremes(at_l: torch.Tensor, at_u: torch.Tensor, mask: torch.Tensor, inner: torch.Tensor):
    """(min, max) of a piecewise-linear function over [l, u] from its values at the ends (...) and at the kinks
    ``inner`` (..., K), of which those where ``mask`` are inside (l, u)."""
    inf = torch.tensor(float("inf"), dtype=at_l.dtype, device=at_l.device)
    lo = torch.minimum(torch.minimum(at_l, at_u), torch.where(mask, inner, inf).amin(-1))
    hi = torch.maximum(torch.maximum(at_l, at_u), torch.where(mask, inner, -inf).amax(-1))
    return lo, hi


@register_op(functions=(piecewise_linear,))
class PiecewiseLinear(Activation):
    """f(z) = sum_k w_k relu(z - t_k) + b, one function of each neuron (chord lines, exact intervals)."""

    name = "PiecewiseLinear1D"
    n_alpha = 0

    def __init__(self, t: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None):
        super().__init__()
        order = torch.argsort(t)
        self.t, self.w = t[order].clone(), w[order].clone()
        self.b = torch.zeros((), dtype=t.dtype) if b is None else b.reshape(()).clone()
        self.S = torch.cumsum(self.w, 0)                           # slope right of t_j
        steps = torch.cat([torch.zeros(1, dtype=t.dtype), self.S[:-1] * (self.t[1:] - self.t[:-1])])
        self.F = self.b + torch.cumsum(steps, 0)                   # f(t_j)

    @classmethod
    def from_call(cls, call: Call):
        t, w, b = call.args[1:4]
        return cls(call.const(t).reshape(-1), call.const(w).reshape(-1),
                   None if b is None or call.value(b) is None else call.const(b))

    def _consts(self, like: torch.Tensor):
        return tuple(c.to(like) for c in (self.t, self.S, self.F, self.b))

    def function(self, z):
        t, S, F, b = self._consts(z)
        j = torch.searchsorted(t, z.detach().contiguous(), right=True) - 1      # last breakpoint <= z, -1 if none
        jc = j.clamp(min=0)
        inside = F[jc] + S[jc] * (z - t[jc])
        return torch.where(j >= 0, inside, b.expand_as(z))

    def derivative(self, z):
        t, S, _, _ = self._consts(z)
        j = torch.searchsorted(t, z.contiguous(), right=True) - 1
        return torch.where(j >= 0, S[j.clamp(min=0)], torch.zeros_like(z))

    def _interior(self, l, u):
        """(mask (..., K) of the breakpoints strictly inside (l, u), t, F)."""
        t, _, F, _ = self._consts(l)
        return (t > l.unsqueeze(-1)) & (t < u.unsqueeze(-1)), t, F

    def ibp(self, iv):
        l, u = iv
        fl, fu = self.function(l), self.function(u)
        mask, _, F = self._interior(l, u)
        return _extremes(fl, fu, mask, F)

    def relax(self, l, u, alpha=None, setup=None):
        fl, fu = self.function(l), self.function(u)
        width = u - l
        s = torch.where(width > 0, (fu - fl) / torch.where(width > 0, width, torch.ones_like(width)),
                        torch.zeros_like(width))
        mask, t, F = self._interior(l, u)
        g = F - s.unsqueeze(-1) * t                                  # f(t_j) - s t_j
        c_L, c_U = _extremes(fl - s * l, fu - s * u, mask, g)
        return s, c_L, s, c_U

    def unstable(self, l, u):
        """Neurons with a breakpoint inside (l, u) (the others are linear there, hence exact)."""
        return self._interior(l, u)[0].any(-1)

    def splittable(self, l, u):
        return self.unstable(l, u)

    def split_point(self, l, u):
        """The breakpoint inside (l, u) nearest the middle (both halves then have fewer kinks), else the middle."""
        mask, t, _ = self._interior(l, u)
        mid = (l + u) / 2
        dist = torch.where(mask, (t - mid.unsqueeze(-1)).abs(), torch.tensor(float("inf"), dtype=l.dtype,
                                                                               device=l.device))
        k = dist.argmin(-1)
        return torch.where(mask.any(-1), t[k], mid)
