"""Sound bound propagation in floating point (the ``--sound`` mode; the proof is in docs/methods/sound.md).

IBP, CROWN-IBP, CROWN and alpha-CROWN whose bounds hold for the network in exact real arithmetic AND for the network
as evaluated in IEEE float32 (PyTorch on CPU, onnxruntime): every computation runs in float64 and every result is
moved outward by a proven bound on the rounding it could have suffered:

* float32 execution: an op whose output is a dot product of n terms errs by at most gamma_n(2^-24) * v + n * eta
  per output (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., Sec. 3.1, any summation order, with
  or without fused multiply-add), with v = |W| |x| + |b| (each op declares n and v: :meth:`Op.sound_error`) and
  eta = 2^-125 per operation for underflow (flush-to-zero or gradual). The float32 network is therefore the real
  network with a perturbation e, |e| <= that bound, added at each such op; the bounds below hold for every such e,
  which covers both semantics (e = 0 is the real network).
* float64 bound computation: the same bound with u = 2^-53 on every product of coefficients, every sum and every
  concretization (the coefficient matrices may be rounded: any coefficient gives a valid linear bound once the
  offset accounts for the difference, which the deduction below does), and every update of the running offset is
  rounded toward -inf with ``nextafter``.
* ReLU is exact in floating point; its relaxation offsets are not taken from the relaxation formulas but recomputed:
  for any coefficients (a on the output, a_hat on the input, whatever rounding produced them),
  min over y in [l, u] of (a relu(y) - a_hat y) is attained at l, u or 0, and is evaluated there with a rounding
  allowance.

Supported ops: those with a rounding rule (Linear/Gemm, Conv2d, BatchNorm, normalization and arithmetic with
constants, AvgPool2d, residual Add/Sub, reshapes, permutations, padding, slicing, concatenation) and ReLU; the sound
mode refuses any other op by name. Inputs: boxes (L_inf balls), given in float64 (decimal VNN-LIB bounds: widen them by
one float64 ulp outward, :func:`outward`). Assumed, as documented: float32 dot products are summed in some order
(blocked, pairwise or FMA-fused all qualify), not by Winograd/FFT convolution algorithms nor in TF32 or reduced
precision; float64 values stay below 2^100 in magnitude, so that float64 underflow (at most 2^-1022 per operation)
is covered by an absolute allowance of 2^-900 per node and row.
"""
from __future__ import annotations

import math

import torch

from certkit.common.errors import CertkitError
from certkit.verifiers.bounds.ibp_crown import BoundedModule, canonical_method
from certkit.verifiers.bounds.ops.base import Op, sum_node

U32 = 2.0 ** -24          # unit roundoff of float32 (round to nearest)
U64 = 2.0 ** -53          # unit roundoff of float64
ETA32 = 2.0 ** -125       # absolute error of one float32 operation near underflow (flush-to-zero: < 2^-126)
TINY = 2.0 ** -900        # float64 underflow allowance per node and row (values below 2^100 in magnitude)
SLACK = 1 + 2.0 ** -20    # relative allowance for rounding of the error terms themselves (sums of < 2^30 terms)
EXTRA = 4                 # roundings per output allowed beyond the dot product (fused or reordered kernels)


def gamma(n: int, u: float) -> float:
    """gamma_n = n u / (1 - n u): the relative error bound of an n-term dot product (Higham, Lemma 3.1)."""
    if n * u >= 0.5:
        raise CertkitError(f"a dot product of {n} terms is too long for the sound mode's error bound")
    return n * u / (1 - n * u)


def down(t: torch.Tensor) -> torch.Tensor:
    """The next float below t (t was rounded to nearest, so this is <= the exact value)."""
    return torch.nextafter(t, torch.full_like(t, -math.inf))


def up(t: torch.Tensor) -> torch.Tensor:
    """The next float above t."""
    return torch.nextafter(t, torch.full_like(t, math.inf))


def outward(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A float64 box one ulp wider on each side: it contains the exact box whose bounds were rounded to nearest
    (decimal bounds parsed from VNN-LIB or a data set)."""
    lo, hi = lo.double(), hi.double()
    return down(lo), up(hi)


def magnitude(iv) -> torch.Tensor:
    """max(|l|, |u|): an upper bound of |x| on the interval (exact in floating point)."""
    return torch.maximum(iv[0].abs(), iv[1].abs())


def has_rule(op: Op) -> bool:
    """True when the sound mode can handle the op: an affine op with a rounding rule, or an activation that is exact
    in floating point and piecewise linear with known kinks (``sound_breakpoints``)."""
    if not op.affine:
        return getattr(op, "sound_breakpoints", None) is not None and type(op).sound_error is not Op.sound_error
    return type(op).sound_error is not Op.sound_error


def unsupported(graph) -> list[str]:
    """``name (op)`` of every node of the bound graph the sound mode cannot handle."""
    return [f"{n.name} ({n.op.name})" for n in graph.nodes[1:] if not has_rule(n.op)]


def _allowance(n: int, v: torch.Tensor, length: int) -> torch.Tensor:
    """Per-output bound on float32 execution error plus float64 evaluation error of an op with an n-term rule and
    magnitude v, when float64 sums of up to ``length`` terms are also involved."""
    return (gamma(n + EXTRA, U32) + gamma(n + EXTRA + length, U64)) * SLACK * v + (n + EXTRA) * ETA32


def concretize(A: torch.Tensor, iv) -> torch.Tensor:
    """A lower bound (B, S), rounded down, of min over l <= x <= u of sum(A * x); A (B, S, *shape), l, u (B, *shape).

    As sum(A c) - sum(|A| r) over a box [c - r, c + r] that contains [l, u] (r rounded up), two batched matrix
    products; their rounding is at most gamma_(n+2) |A| (|c| + r), added to r before the second product."""
    l, u = iv
    B, S = A.shape[:2]
    c = (l + u) / 2
    r = up(torch.maximum(up(u - c), up(c - l)))
    Af = A.reshape(B, S, -1)
    n = Af.shape[2]
    center = torch.bmm(Af, c.reshape(B, -1, 1)).squeeze(-1)
    spread = torch.bmm(Af.abs(), (r + gamma(n + 2, U64) * (c.abs() + r)).reshape(B, -1, 1)).squeeze(-1)
    return down(center - SLACK * spread)


def _dot(T: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum over the node dims of T (B, S, *shape) times v (B, 1, *shape), as a batched matrix product (B, S)."""
    B, S = T.shape[:2]
    return torch.bmm(T.reshape(B, S, -1), v.reshape(B, -1, 1)).squeeze(-1)


def _kink_offset(op, A: torch.Tensor, A_hat: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A lower bound (B, S), rounded down, of sum over neurons of min over y in [l, u] of (A act(y) - A_hat y), for
    an activation exact in floating point and linear between its ``sound_breakpoints``: the minimum of a piecewise
    linear function is at an endpoint or a kink.

    Each candidate A act(y) - A_hat y costs two roundings and the minimum is exact, so with |act(y)| <= fm and
    |y| <= ym at every candidate, E = sum(|A| fm + |A_hat| ym) bounds both |candidate| and, times 2u, the rounding of
    each; the sum over neurons adds gamma_n(u) E at most (E itself is a sum of products: SLACK covers its rounding)."""
    if A_hat.shape != A.shape:
        A_hat = A_hat.expand_as(A)
    points = [l, u] + [torch.clamp(torch.full_like(l, float(b)), l, u) for b in op.sound_breakpoints]
    values = [op.function(y) for y in points]
    best = None
    for y, fy in zip(points, values):
        cand = A * fy.unsqueeze(1)
        cand.addcmul_(A_hat, y.unsqueeze(1), value=-1.0)
        best = cand if best is None else torch.minimum(best, cand, out=best)
    assert best is not None
    fm = torch.stack([v.abs() for v in values]).amax(0).unsqueeze(1)
    ym = magnitude((l, u)).unsqueeze(1)
    E = _dot(A.abs(), fm) + _dot(A_hat.abs(), ym)
    n = math.prod(A.shape[2:])
    return down(down(sum_node(best)) - SLACK * (2 * U64 + gamma(n, U64) * (1 + 2 * U64)) * E)


class SoundBounds:
    """Outward-rounded bounds of a float64 :class:`BoundedModule` over input boxes.

    Args:
        bm: a BoundedModule of the network in float64 (``model.double()``): float32 weights are exact in float64, so
            it is the same network.

    Raises:
        CertkitError: the network is not in float64, or uses ops the sound mode cannot handle (all listed).
    """

    def __init__(self, bm: BoundedModule):
        self.bm = bm
        dtypes = {p.dtype for p in bm.model.parameters()}
        dtypes |= {b.dtype for b in bm.model.buffers() if b.is_floating_point()}
        if dtypes - {torch.float64}:
            raise CertkitError("the sound mode bounds the network in float64: give BoundedModule(model.double())")
        self._rows = _SoundRows(self)
        missing = unsupported(bm.graph)
        if missing:
            raise CertkitError(f"the sound mode has no rounding rule for {len(missing)} node(s): {', '.join(missing)} "
                               f"(it supports Linear/Gemm, Conv, BatchNorm, AvgPool, arithmetic with constants, "
                               f"residual Add/Sub, reshapes and ReLU)")

    # ------------------------------------------------------------------ IBP
    def _node_ibp(self, i: int, bounds: list):
        n = self.bm.graph.nodes[i]
        in_b = [bounds[j] for j in n.inputs]
        l, u = n.op.ibp(*in_b)
        err = n.op.sound_error(*[magnitude(b) for b in in_b])
        if err is None:
            return l, u
        k, v = err
        w = _allowance(k, v, k)
        return down(l - w), up(u + w)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> list:
        """Sound intervals (l, u) of every node, each (B, *shape), for the input box lo <= x <= hi (B, *input)."""
        bounds = [(lo, hi)]
        for i in range(1, len(self.bm.graph.nodes)):
            bounds.append(self._node_ibp(i, bounds))
        return bounds

    def _tighten_after(self, j: int, bounds: list) -> None:
        """Re-run IBP on the nodes after j and intersect (their magnitudes feed the rounding allowances)."""
        for i in range(j + 1, len(self.bm.graph.nodes)):
            l, u = self._node_ibp(i, bounds)
            bounds[i] = (torch.maximum(bounds[i][0], l), torch.minimum(bounds[i][1], u))

    # ------------------------------------------------------------------ backward
    def lower(self, start: int, A0: torch.Tensor, bounds: list, relax=None, steps: int | None = None) -> torch.Tensor:
        """A sound lower bound (B, S) of sum(A0 * node_start) over the box, given sound intervals ``bounds`` of every
        node; ``relax(i, in_bounds)`` picks the relaxation of activation node i (default CROWN's). ``steps``: go back
        through that many nodes only, then concretize what is left over the nodes' intervals."""
        g = self.bm.graph
        acc = {start: A0}
        total = torch.zeros(A0.shape[:2], dtype=A0.dtype, device=A0.device)
        done = 0
        for i in range(start, 0, -1):
            A = acc.pop(i, None)
            if A is None:
                continue
            if steps is not None and done == steps:
                acc[i] = A
                break
            done += 1
            node = g.nodes[i]
            op = node.op
            in_b = [bounds[j] for j in node.inputs]
            if op.affine:
                A_ins, bias = op.backward(A, in_b)
                if bias is not None:
                    total = down(total + bias)
                err = op.sound_error(*[magnitude(b) for b in in_b])
                if err is not None:
                    k, v = err
                    w = _allowance(k, v, math.prod(node.shape)).unsqueeze(1)
                    total = down(total - SLACK * sum_node(A.abs() * w))
            else:
                r = relax(i, in_b) if relax is not None else op.relaxation(in_b)
                A_ins, _ = op.backward(A, in_b, r)
                total = down(total + _kink_offset(op, A, A_ins[0], *in_b[0]))
            total = down(total - TINY)
            for j, Aj in zip(node.inputs, A_ins):
                if Aj is None:
                    continue
                if j in acc:  # the rounded sum is another coefficient: account for the difference
                    s = acc[j] + Aj
                    total = down(total - SLACK * U64 * sum_node(s.abs() * magnitude(bounds[j]).unsqueeze(1)))
                    acc[j] = s
                else:
                    acc[j] = Aj
        for j, A in acc.items():
            total = down(total + concretize(A, bounds[j]))
        return total

    def _ibp_elided(self, CC: torch.Tensor, bounds: list) -> torch.Tensor:
        """IBP's lower bound of sum(CC * output) with the last affine op folded into CC (as plain IBP does)."""
        g = self.bm.graph
        out = g.nodes[g.output]
        if not (out.op.affine and out.op.sound_error(*[magnitude(bounds[j]) for j in out.inputs]) is not None):
            return concretize(CC, bounds[g.output])
        return self.lower(g.output, CC, bounds, steps=1)  # through the output op, then its inputs' intervals

    def intermediate(self, lo: torch.Tensor, hi: torch.Tensor) -> list:
        """Sound intervals of every node with CROWN bounds on the input of every activation (intersected with IBP,
        the later nodes' IBP recomputed from them). As plain CROWN, each input gets rows for its own unstable
        neurons only, chunked to the memory budget (``BoundedModule._backward_interval``)."""
        from certkit.verifiers.bounds.perturbation import Box

        g = self.bm.graph
        bounds = self.ibp(lo, hi)
        pert = Box(lo, hi, check=False)
        done = set()
        for a in g.nonlinear():
            j = g.nodes[a].inputs[0]
            if j in done:
                continue
            done.add(j)
            if self.bm.ibp_exact_on_box(j):  # one affine map of the box: IBP is already its exact image
                continue
            l0, u0 = bounds[j]
            unstable = (l0 < 0) & (u0 > 0)
            if not bool(unstable.any()):
                continue
            l, u = self._rows._backward_interval(j, pert, bounds, {}, only=unstable)
            bounds[j] = (torch.maximum(l, l0), torch.minimum(u, u0))
            self._tighten_after(j, bounds)
        return bounds

    # ------------------------------------------------------------------ public
    def compute_bounds(self, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, method: str = "CROWN",
                       alpha_iterations: int = 20, deadline: float | None = None) -> torch.Tensor:
        """Sound lower bounds (B, S) of C f(x) over the boxes lo <= x <= hi.

        Args:
            lo, hi: float64 boxes (B, *input_shape) whose bounds are exact (widen rounded ones with :func:`outward`).
            C: specification (B, S, K).
            method: IBP, CROWN-IBP, CROWN or alpha-CROWN (alphas optimised as usual, then re-evaluated soundly; the
                result is at least the sound CROWN bound).
            deadline: time.perf_counter() value after which alpha-CROWN stops optimising.

        Raises:
            CertkitError: unknown method, boxes not float64, NaN or inf in the bounds.
        """
        from certkit.verifiers.bounds.alpha_crown import alpha_crown
        from certkit.verifiers.bounds.perturbation import Box

        method = canonical_method(method)
        if lo.dtype != torch.float64 or hi.dtype != torch.float64:
            raise CertkitError("the sound mode takes float64 input boxes")
        g = self.bm.graph
        B = lo.shape[0]
        CC = C.to(torch.float64).reshape((B, C.shape[1]) + tuple(g.output_shape))
        with torch.no_grad():
            if method == "IBP":
                lb = self._ibp_elided(CC, self.ibp(lo, hi))
            elif method == "CROWN-IBP":
                lb = self.lower(g.output, CC, self.ibp(lo, hi))
            else:
                bounds = self.intermediate(lo, hi)
                lb = self.lower(g.output, CC, bounds)
        if method == "alpha-CROWN" and g.nonlinear():
            alphas: dict = {}
            with torch.enable_grad():
                alpha_crown(self.bm, Box(lo, hi, check=False), CC, bounds, alpha_iterations, deadline=deadline,
                            best_alphas=alphas)
            with torch.no_grad():
                def relax(i, in_b):
                    return g.nodes[i].op.relaxation(in_b, alpha=alphas[i]) if i in alphas else \
                        g.nodes[i].op.relaxation(in_b)
                lb = torch.maximum(lb, self.lower(g.output, CC, bounds, relax))
        if not torch.isfinite(lb).all():
            raise CertkitError(f"sound {method} produced NaN or inf bounds")
        return lb.detach()

    def row_margins(self, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, d: torch.Tensor, method: str = "CROWN",
                    deadline: float | None = None) -> torch.Tensor:
        """Sound lower bounds (N, S) of C_j f(x) - d_j over boxes whose bounds, like C (S, K) and d (S,), are decimal
        numbers rounded to nearest float64 (VNN-LIB): the boxes are widened by one ulp (:func:`outward`) and the
        margins lowered by the rounding of C and d (|C - C~| <= u |C~|, |d - d~| <= u |d~|). lo, hi: (N, *input)."""
        lo, hi = outward(lo, hi)
        N = lo.shape[0]
        C = C.to(torch.float64)
        d = d.to(torch.float64)
        lb = self.compute_bounds(lo, hi, C[None].expand(N, -1, -1), method, deadline=deadline)
        with torch.no_grad():
            m_out = magnitude(self.ibp(lo, hi)[self.bm.graph.output]).reshape(N, 1, -1)
        slack = SLACK * 2 * U64 * ((C.abs()[None] * m_out).sum(-1) + d.abs())
        return down(down(lb - d) - slack)


class _SoundRows(BoundedModule):
    """The BoundedModule row machinery (per-input neuron selection, chunking) with the sound backward pass."""

    def __init__(self, sb: SoundBounds):  # shares the graph; no conv windows (they have their own backward pass)
        self.model, self._graph, self.budget, self.conv_windows = sb.bm.model, sb.bm.graph, sb.bm.budget, False
        self.sb = sb

    @property
    def deadline(self):   # the BoundedModule's (the complete verifier sets it)
        return self.sb.bm.deadline

    def _backward(self, start, A0, pert, bounds, relax, alphas=None, setups=None):
        return self.sb.lower(start, A0, bounds)


__all__ = ["SoundBounds", "concretize", "gamma", "has_rule", "outward", "unsupported"]
