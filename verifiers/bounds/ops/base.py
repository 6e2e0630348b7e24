"""The op contract and the op registry.

Every node of a bound graph is an :class:`Op` that carries, side by side (the auto_LiRPA idea: a new op is one new
class), its forward function, its interval rule (IBP) and its backward linear rule (CROWN). The decorator
:func:`register_op` on the class names the torch modules, torch functions, tensor methods and ONNX op types it
handles; the graph builder (``verifiers/bounds/graph.py``), the pre-flight check and the docs read this registry, so a
new op
is ONE file in ``verifiers/bounds/ops/`` (the package imports every module in it).

Conventions (B = batch, S = specification rows, node shapes are per sample, without B):
    intervals  (l, u): tensors (B, *shape) with l <= u elementwise.
    linear bounds: A of shape (B, S, *out_shape) and bias (B, S) describe sum(A * out) + bias; an op's
    ``backward`` maps a LOWER linear bound on its output to lower linear bounds on its inputs
    (upper bounds are computed as lower bounds of the negated rows).
    relaxation: what a non-affine op needs, besides its input bounds, to run ``backward`` (for an activation, the
    lines a_L z + c_L <= act(z) <= a_U z + c_U); ``None`` for affine ops.
    alpha: optimisable relaxation parameters (alpha-CROWN), ``n_alpha`` per neuron, each in [0, 1], stored as
    (n_alpha, B, S, *shape) (one set per specification row).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Interval = tuple[torch.Tensor, torch.Tensor]


def sum_node(t: torch.Tensor) -> torch.Tensor:
    """Sum over the node dims of a (B, S, *shape) tensor -> (B, S), as a product with a vector of ones where no
    gradient is needed: on CPU torch's sum over a short last dim is 2-9x slower (a (8000, 26, 3) tensor: 1.6 ms
    against 0.18 ms)."""
    flat = t.flatten(2)
    if flat.shape[-1] == 1:
        return flat[..., 0]
    if torch.is_grad_enabled() and t.requires_grad:    # differentiated: the sum's backward pass is the faster one
        return flat.sum(-1)
    return flat @ torch.ones(flat.shape[-1], dtype=t.dtype, device=t.device)


def dot_node(A: torch.Tensor, v) -> torch.Tensor:
    """sum_node(A * v) (B, S) for coefficients A (B, S, *shape) and v a number, a constant broadcastable to the node
    ``shape``, or a per-box tensor broadcastable to (B, 1, *shape), as one matrix product: no (B, S, *shape)
    temporary and no reduction over short trailing dims (on CPU 2-16x faster than the product and the sum on
    lsnc's nodes of 1-8 values and on convolutional maps, bench/node_sums.py)."""
    shape = A.shape[2:]
    if not isinstance(v, torch.Tensor) or v.dim() == 0:
        return sum_node(A) * v
    if v.dim() <= len(shape):                                        # a constant: (k,) shared by every box
        return A.flatten(2) @ v.expand(shape).reshape(-1)
    graph = torch.is_grad_enabled() and (A.requires_grad or v.requires_grad)
    if v.dim() == A.dim() and v.shape[1] == 1 and not graph:          # per box: (B or 1, 1, *shape)
        w = v.expand((v.shape[0], 1) + tuple(shape)).reshape(v.shape[0], -1, 1)
        return (A.flatten(2) @ w).squeeze(-1)
    # per box and differentiated (alpha-CROWN, certified training): the batched product's backward pass is up to 3x
    # slower than the elementwise one on training shapes (bench/node_sums.py)
    return (A * v).flatten(2).sum(-1)


def unbroadcast(A: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Coefficients A (B, S, *out) of a broadcast result mapped back to an operand of per-sample ``shape``: summed
    over the dims the operand was broadcast along (the adjoint of broadcasting)."""
    out = A.shape[2:]
    lead = len(out) - len(shape)
    if lead:
        A = A.sum(tuple(range(2, 2 + lead)))
    dims = tuple(2 + i for i, (n, m) in enumerate(zip(shape, A.shape[2:])) if n == 1 and m != 1)
    return A.sum(dims, keepdim=True) if dims else A


class Unsupported(Exception):
    """Raised by an op factory when it cannot bound this particular call (the message says why)."""


@dataclass
class Call:
    """What the graph builder knows about one traced node when it asks an op factory to bound it.

    Attributes:
        kind: ``module``, ``function`` or ``method``.
        target: the module instance, the function, or the method name.
        args, kwargs: the node's arguments (fx nodes for tensors).
        is_data: arg -> True when the argument is a data tensor (depends on the network input).
        value: arg -> its concrete value from the example run (constants and data alike).
        const: arg -> that value as a tensor of the node's dtype and device.
        shape: per-sample output shape of the node.
        where: a label for error messages.
    """

    kind: str
    target: Any
    args: tuple
    kwargs: dict
    is_data: Callable[[Any], bool]
    value: Callable[[Any], Any]
    shape: tuple
    where: str
    const: Callable[[Any], torch.Tensor] = lambda a: torch.as_tensor(a)
    data_args: list = field(default_factory=list)


class Op:
    """One node of a bound graph.

    Attributes:
        affine: True when the op is an affine map of its inputs (its backward rule needs no bounds, no relaxation).
        coordinatewise: True for affine ops whose every output coordinate depends on one input coordinate
            (elementwise scale/shift, reshape, permutation, zero padding): IBP maps a box to the exact box.
        arity: number of data inputs.
        n_alpha: optimisable relaxation parameters per neuron (alpha-CROWN); 0 for ops with nothing to optimise.
        branchable: True when activation-split branch and bound may split the op's input intervals (the inputs
            listed in ``split_inputs``); such ops give ``splittable(l, u)``, ``split_points(l, u)`` and
            ``branch_scores(A, l, u, in_bounds, k)`` over a split input (elementwise activations: activation.py;
            max-pooling: maxpool.py; products: bilinear.py, matmul.py).
        split_inputs: positions of the inputs branch and bound may split (default: the first).
        piecewise_linear: True when the op is exactly affine on a box where ``unstable`` is empty (ReLU, LeakyReLU,
            max-pooling with every window decided): the leaf linear programs of branch and bound rely on it.
        in_shapes / out_shape: per-sample shapes, set by the graph builder.
    """

    affine = True
    coordinatewise = False  # each output coordinate an affine function of ONE input coordinate (box -> box exactly)
    arity = 1
    n_alpha = 0
    branchable = False
    split_inputs: tuple[int, ...] = (0,)
    piecewise_linear = False
    name = "op"

    def __init__(self):
        self.in_shapes: list[tuple] = []
        self.out_shape: tuple = ()

    @classmethod
    def from_call(cls, call: Call) -> Op:
        """The op for one traced call (override to read module attributes or arguments; raise
        :class:`Unsupported` for calls this op cannot bound)."""
        return cls()

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The op on concrete inputs (B, *in_shape) -> (B, *out_shape)."""
        raise NotImplementedError

    def ibp(self, *intervals: Interval) -> Interval:
        """Interval rule (Gowal et al. 2018): bounds (l, u) of the output from input bounds, each (B, *shape)."""
        raise NotImplementedError

    def relaxation(self, in_bounds: Sequence[Interval], alpha: torch.Tensor | None = None, setup=None):
        """What ``backward`` needs besides the bounds: None for affine ops (see the module docstring).
        ``setup`` is :meth:`relaxation_setup` of the same bounds, when the caller keeps it across alphas."""
        return None

    def relaxation_setup(self, in_bounds: Sequence[Interval]):
        """Work that depends on the bounds only, reused by alpha-CROWN for every alpha (None: nothing to reuse)."""
        return None

    def alpha_init(self, in_bounds: Sequence[Interval]) -> torch.Tensor | None:
        """Starting alphas (n_alpha, B, *shape) in [0, 1] that reproduce the CROWN relaxation; None if n_alpha = 0."""
        return None

    def backward(self, A: torch.Tensor, in_bounds: Sequence[Interval | None] = (), relaxation=None,
                 ) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
        """Lower linear bound on the output (A, (B,S,*out)) -> ([A_i for each input], bias (B,S) or None).

        ``in_bounds`` holds the intervals of the op's inputs (None where unknown: only affine ops accept that);
        ``relaxation`` is this op's :meth:`relaxation` (computed from ``in_bounds`` when not given).
        """
        raise NotImplementedError

    def forward_linear(self, rows: Sequence[tuple[torch.Tensor, torch.Tensor]], in_bounds: Sequence[Interval] = (),
                       relaxation=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward-mode linear rule (the forward mode of LiRPA, Xu et al. NeurIPS 2020): linear lower and upper
        bounds of the output in the input's free coordinates from those of the inputs.

        ``rows`` holds, per data input, (L, U) of shape (B, m+1, *in_shape): row 0 the constant, row k the coefficient
        of e_k, with L(e) <= input <= U(e) for every e in [-1, 1]^m (verifiers/bounds/forward.py); ``in_bounds`` the
        inputs' intervals and ``relaxation`` the op's :meth:`relaxation` of them (non-affine ops). Returns (L, U) of
        the output, (B, m+1, *out_shape).

        Raises:
            NotImplementedError: the op has no forward-mode rule (forward mode is then not used on its graph).
        """
        raise NotImplementedError(f"{self.name} has no forward-mode rule")

    def sound_error(self, *m: torch.Tensor) -> tuple[int, torch.Tensor] | None:
        """Rounding rule of the sound mode (verifiers/bounds/sound.py, docs/methods/sound.md).

        Given upper bounds ``m`` (B, *in_shape) of |input| for each data input, returns (n, v): evaluating the op in
        floating point with unit roundoff u errs by at most gamma_n(u) * v + n * eta per output coordinate, where
        gamma_n(u) = n u / (1 - n u), eta bounds the absolute error of one operation near underflow, and v >= 0 has the
        output's shape (B, *out_shape). For a dot product of n terms, v = |W| m (+ |bias|, counted in n). Returns None
        when the op is exact in floating point (data movement, ReLU).

        Raises:
            NotImplementedError: the op has no rounding rule (the sound mode refuses networks that use it).
        """
        raise NotImplementedError(f"{self.name} has no rounding rule for the sound mode")

    def unstable(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Input neurons (bool, like l) whose relaxation is inexact, so CROWN refines their bounds (non-affine ops)."""
        return l < u

    def splittable(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Elements of a split input (bool, like l) worth splitting in branch and bound; by default every interval
        wider than 1e-4 (GenBaB, Shi et al. 2024: each half gets a tighter relaxation)."""
        return (u - l) > 1e-4

    def split_points(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Where branch and bound splits each element of a split input (like l); by default the midpoint."""
        return (l + u) / 2

    def branch_scores(self, A: torch.Tensor, l: torch.Tensor, u: torch.Tensor, in_bounds=None, k: int = 0
                      ) -> torch.Tensor:
        """Split scores (like l, -inf where not :meth:`splittable`) of the elements of split input ``k`` with
        bounds (l, u), for A (D, *out_shape) the coefficient of the op's output in the bound being branched on and
        ``in_bounds`` the intervals of all inputs; branchable ops that are not activations override it."""
        raise NotImplementedError(f"{self.name} has no branching score")

    def derivative(self, *xs: torch.Tensor) -> torch.Tensor:
        """Local slope at concrete inputs, for elementwise non-affine ops (the propagation-tightness metric)."""
        raise NotImplementedError(f"{self.name} has no elementwise derivative")

    def __repr__(self) -> str:
        return f"{self.name}{tuple(self.out_shape)}"


class ModuleOp(Op):
    """An op that evaluates a torch module (weights read live from it, so bounds are differentiable)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    @classmethod
    def from_call(cls, call: Call) -> Op:
        return cls(call.target)

    def forward(self, x):
        return self.module(x)


def scaled_rows(a: torch.Tensor, L: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """Rows of a lower bound of a * v where L <= v <= U (rows (B, m+1, *shape)) and a (B, *shape) (or broadcastable
    to one sample per batch entry): a+ L + a- U, the forward-mode counterpart of CROWN's choice by sign."""
    a = a.unsqueeze(1)
    a, L, U = same_rank(a, L, U)
    if L is U or bool((a >= 0).all()):        # (one product: ReLU's lines, exact rows)
        return a * L
    if bool((a <= 0).all()):
        return a * U
    return torch.where(a >= 0, a * L, a * U)


def same_rank(*ts: torch.Tensor) -> list[torch.Tensor]:
    """Tensors (B, k, *shape) of per-sample shapes that broadcast against each other, given one rank by inserting
    unit dims after the first two (per-sample broadcasting aligns the trailing dims)."""
    rank = max(t.dim() for t in ts)
    out = []
    for t in ts:
        while t.dim() < rank:
            t = t.unsqueeze(2)
        out.append(t)
    return out


def with_constant(T: torch.Tensor, c) -> torch.Tensor:
    """Rows T (B, m+1, *shape) with ``c`` (B, *shape) added to the constant row 0."""
    head, c = same_rank(T[:, :1], c.unsqueeze(1))
    head = head + c
    return torch.cat([head, T[:, 1:].expand((-1, -1) + tuple(head.shape[2:]))], 1)


def has_forward_rule(op: Op) -> bool:
    """True when ``op`` overrides :meth:`Op.forward_linear`."""
    return type(op).forward_linear is not Op.forward_linear


def map_rows(fn: Callable[[torch.Tensor], torch.Tensor], T: torch.Tensor) -> torch.Tensor:
    """``fn`` (a per-sample map of a batch (N, *in) -> (N, *out)) on every row of T (B, k, *in) -> (B, k, *out)."""
    B, k = T.shape[:2]
    out = fn(T.reshape((B * k,) + tuple(T.shape[2:])))
    return out.reshape((B, k) + tuple(out.shape[1:]))


def affine_rows(rows: tuple[torch.Tensor, torch.Tensor], linear: Callable, abs_linear: Callable,
                bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-mode rule of y = W x + b: with M = (L + U) / 2 and R = (U - L) / 2 (rows (B, m+1, *in)),
    W+ L + W- U = W M - |W| R and W+ U + W- L = W M + |W| R (``linear`` applies W, ``abs_linear`` |W|, both without
    the bias, to a batch); ``bias`` (broadcastable to one sample's output) goes to the constant row."""
    L, U = rows
    if L is U:                                # exact rows (the input, a constant): no radius
        WM = map_rows(linear, L)
        WM = WM if bias is None else torch.cat([WM[:, :1] + bias, WM[:, 1:]], 1)
        return WM, WM
    WM = map_rows(linear, (L + U) / 2)
    AR = map_rows(abs_linear, (U - L) / 2)
    if bias is not None:
        WM = torch.cat([WM[:, :1] + bias, WM[:, 1:]], 1)
    return WM - AR, WM + AR


def center_radius(iv: Interval) -> Interval:
    l, u = iv
    return (u + l) / 2, (u - l) / 2


# ------------------------------------------------------------------------------------------------ registry
@dataclass
class OpEntry:
    """One registered op factory and what it handles."""

    factory: Callable[[Call], Op]
    name: str
    modules: tuple = ()
    functions: tuple = ()
    methods: tuple = ()
    onnx: tuple = ()
    doc: str = ""


_ENTRIES: list[OpEntry] = []
_BY_MODULE: dict[type, OpEntry] = {}
_BY_FUNCTION: dict[Any, OpEntry] = {}
_BY_METHOD: dict[str, OpEntry] = {}


def register_op(modules: Sequence[type] = (), functions: Sequence[Any] = (), methods: Sequence[str] = (),
                onnx: Sequence[str] = (), name: str | None = None):
    """Class (or factory function) decorator: bound the given torch modules / functions / tensor methods with it.

    ``onnx`` names the ONNX op types whose import (``models/onnx_import.py``) yields one of these modules or
    functions; it documents support and is checked against the importer by the tests.

    Raises:
        ValueError: a module, function or method is registered twice.
    """
    def deco(obj):
        factory = obj.from_call if isinstance(obj, type) else obj
        label = name or getattr(obj, "name", None) or obj.__name__
        doc = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
        entry = OpEntry(factory, label, tuple(modules), tuple(functions), tuple(methods), tuple(onnx), doc)
        for table, keys in ((_BY_MODULE, entry.modules), (_BY_FUNCTION, entry.functions), (_BY_METHOD, entry.methods)):
            for k in keys:
                if k in table and table[k].factory is not factory:
                    raise ValueError(f"{k!r} is already bound by {table[k].name}")
                table[k] = entry
        _ENTRIES.append(entry)
        return obj
    return deco


def unregister_op(obj: Any) -> None:
    """Undo :func:`register_op` for the class (or factory) ``obj``: its modules, functions and methods are no longer
    bounded by it (tests that register an op temporarily)."""
    factory = getattr(obj, "from_call", obj)  # a class registers its from_call, a factory itself
    tables: tuple[dict[Any, OpEntry], ...] = (_BY_MODULE, _BY_FUNCTION, _BY_METHOD)
    for table in tables:
        for k in [k for k, e in table.items() if e.factory == factory]:
            del table[k]
    _ENTRIES[:] = [e for e in _ENTRIES if e.factory != factory]


def entry_for_module(m) -> OpEntry | None:
    """The registered entry for a module instance (exact type first, then base classes)."""
    for t in type(m).__mro__:
        if t in _BY_MODULE:
            return _BY_MODULE[t]
    return None


def entry_for_function(fn) -> OpEntry | None:
    return _BY_FUNCTION.get(fn)


def entry_for_method(name: str) -> OpEntry | None:
    return _BY_METHOD.get(name)


def registered_modules() -> tuple[type, ...]:
    """Every torch module type some op bounds (the tracer keeps them as leaves)."""
    return tuple(_BY_MODULE)


def registered_ops() -> list[OpEntry]:
    """All registered entries, in registration order."""
    return list(_ENTRIES)


def onnx_op_types() -> list[str]:
    """Every ONNX op type the registered ops declare."""
    return sorted({t for e in _ENTRIES for t in e.onnx})


_REWRITES: list[tuple[Callable[[Any], bool], Callable[[Any, Any], None], bool]] = []


def register_rewrite(matches: Callable[[Any], bool], rewrite: Callable[[Any, Any], None], fuses: bool = False) -> None:
    """Register a rewrite of traced torch.fx graphs, applied before the bound graph is built: ``rewrite(graph,
    node)`` replaces one node for which ``matches(node)`` is True (in place), e.g. to give an op an extra input that
    branch and bound can split (ops/maximum.py). The rewritten graph must compute what the original computes.
    ``fuses``: the rewrite replaces several ops by one for tighter bounds (ops/piecewise_linear.py); graphs built
    with ``fusing=False`` (the sound mode, whose rounding rules are per op) leave it out."""
    _REWRITES.append((matches, rewrite, fuses))


def rewrites() -> list[tuple[Callable[[Any], bool], Callable[[Any, Any], None], bool]]:
    """The registered (matches, rewrite, fuses) triples of graph rewrites, in registration order."""
    return list(_REWRITES)
