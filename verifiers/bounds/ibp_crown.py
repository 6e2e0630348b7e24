"""IBP, CROWN-IBP and CROWN over a :class:`BoundGraph` (alpha-CROWN's optimisation loop is alpha_crown.py).

    IBP         Gowal et al. 2018: interval arithmetic, last affine layer elided into the spec C.
    CROWN       Zhang et al. 2018: backward linear bounds; every pre-activation bound by its own backward pass
                (intersected with IBP), then the output bound from C.
    CROWN-IBP   Zhang et al. ICLR 2020: IBP intermediate bounds, CROWN for the output bound only.
    alpha-CROWN Xu et al. ICLR 2021: CROWN with the relaxation parameters of every activation (ReLU lower slopes,
                Sigmoid/Tanh tangent points) optimised per specification row; see alpha_crown.py.

The graph's ops carry the per-op rules (verifiers/bounds/ops); this module only walks the graph. ``compute_bounds``
returns
(lb, ub) of C f(x) over the perturbation set, each (B, S). Every method is sound; IBP and CROWN-IBP (and CROWN) are
differentiable w.r.t. the model weights when called with grad enabled.
"""
from __future__ import annotations

import functools
import math
import operator
import time

import torch

from certkit.common.device import exact_float32
from certkit.common.errors import CertkitError, shape_text
from certkit.verifiers.bounds import ops, windows
from certkit.verifiers.bounds.alpha_crown import alpha_crown
from certkit.verifiers.bounds.forward import ForwardRows, forward_supported, free_coordinates
from certkit.verifiers.bounds.graph import BoundGraph, build_graph
from certkit.verifiers.bounds.ops.relu import ReLU
from certkit.verifiers.bounds.perturbation import Box, Perturbation, box_lower

METHODS = ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN")
#: crown_intermediate carries forward-mode bounds over boxes with at most this many free input coordinates
FORWARD_MAX_FREE = 32
#: ... and where the widest input of a non-affine op has at least this many neurons per forward row (forward_hybrid)
FORWARD_MIN_WIDTH = 4
_ALIASES = {m.lower().replace("-", "").replace("_", ""): m for m in METHODS}


def canonical_method(name: str) -> str:
    """Map user spellings (ibp, crown-ibp, CROWN_IBP, alpha-crown, alphacrown) to the canonical names."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in _ALIASES:
        raise CertkitError(f"unknown bound method {name!r}: choose from {', '.join(METHODS)}")
    return _ALIASES[key]


def margin_spec(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C (B, K-1, K) with rows e_y - e_j for j != y: lb > 0 for every row certifies class y."""
    B = y.shape[0]
    eye = torch.eye(num_classes, device=y.device)
    C = eye[y].unsqueeze(1) - eye.unsqueeze(0)                      # (B, K, K): row j = e_y - e_j
    keep = torch.ones(B, num_classes, dtype=torch.bool, device=y.device)
    keep[torch.arange(B), y] = False
    return C[keep].view(B, num_classes - 1, num_classes)


class BoundedModule:
    """A model prepared for bound propagation.

    Args:
        model: an nn.Module (traced with torch.fx) or certkit's ONNX GraphModule; evaluated in eval mode.
        input_shape: shape of one input (without batch); None: taken from the first perturbation bounded, whose
            inputs are then a batch (B, *input_shape).
        budget: memory budget for CROWN's intermediate passes, in (B x rows x node size) floats.
        conv_windows: bound the neurons of convolutional layers from rows kept on their receptive fields
            (verifiers/bounds/windows.py; same bounds as dense rows up to float rounding, far less work on CNNs).
        fusing: apply the graph rewrites that fuse several ops into one for tighter bounds (sums of ReLUs of one
            variable, ops/piecewise_linear.py); the sound mode (verifiers/bounds/sound.py) builds without them.

    Attributes:
        forward_rows: forward-mode rows beside CROWN's intermediate bounds (True / False; None, the default: where
            :meth:`forward_hybrid` finds they pay).
        one_sided: where forward-mode rows are carried, bound the inputs of ReLUs one side at a time, the side of the
            center value first (``_backward_interval`` ``center``; default False). The other side of a neuron found
            stable stays the forward / IBP bound: meant for where only these boxes' own bounds matter (input
            splitting sets it), not where later steps read every neuron's bounds (branch and bound over activations
            and its linear programs, whose box constraints would be looser).
        deadline: a time.perf_counter() value after which CROWN's passes raise TimeoutError (None: no limit).

    Raises:
        CertkitError: unsupported ops (all listed).
    """

    def __init__(self, model: torch.nn.Module, input_shape: tuple | None = None, budget: int = 2 ** 25,
                 conv_windows: bool = True, fusing: bool = True):
        self.model = model
        self.fusing = fusing
        self._graph: BoundGraph | None = (None if input_shape is None
                                          else build_graph(model, tuple(input_shape), fusing))
        self.budget = budget
        self.conv_windows = conv_windows
        self.deadline: float | None = None   # time.perf_counter() value after which CROWN's passes stop (TimeoutError)
        self.forward_rows: bool | None = None  # forward-mode rows in crown_intermediate (None: forward_hybrid decides)
        self.one_sided = False                 # ReLU inputs bounded one side first (with forward rows)
        self._widest: int | None = None       # forward_hybrid: the widest input of a non-affine op (0: no rules)

    @property
    def graph(self) -> BoundGraph:
        """The bound graph (built for ``input_shape``, or for the first perturbation's inputs).

        Raises:
            CertkitError: the input shape is not known yet.
        """
        if self._graph is None:
            raise CertkitError("the input shape is not known yet: give BoundedModule(model, input_shape) or call "
                               "compute_bounds first")
        return self._graph

    def batched(self, pert) -> tuple[Perturbation, bool]:
        """``pert`` as a perturbation of a batch (B, *input_shape), and whether it held ONE input.

        ``pert``: a :class:`Perturbation`, or a box ``(lo, hi)`` of two tensors; the inputs are a batch, or one input
        when the input shape is known and equals theirs. Builds the graph when the input shape was not given.
        Raises:
            CertkitError: not a perturbation; a box with lo > hi or other shapes; inputs of another shape than the
                model's (the message names the expected layout, N x C x H x W).
        """
        if isinstance(pert, (tuple, list)) and len(pert) == 2 and all(isinstance(t, torch.Tensor) for t in pert):
            pert = Box(pert[0], pert[1])
        if not isinstance(pert, Perturbation):
            raise CertkitError(f"bounds take a perturbation (linf_ball(x, eps), L2Ball(x, eps), Box(lo, hi)) or a box "
                               f"(lo, hi) of two tensors, got {type(pert).__name__}")
        shape = tuple(pert.center().shape)
        if self._graph is None:
            if len(shape) < 2:
                raise CertkitError(f"perturbations hold a batch N x (one input's shape); got inputs of shape "
                                   f"{shape_text(shape)}: add the batch dimension (x[None]) or give input_shape")
            try:
                self._graph = build_graph(self.model, shape[1:], self.fusing)
            except CertkitError as e:
                raise CertkitError(f"{e} (bounds were asked for a batch of {shape[0]} inputs of shape "
                                   f"{shape_text(shape[1:])}; for ONE input give BoundedModule(model, input_shape))"
                                   ) from None
        expected = tuple(self.graph.input_shape)
        if shape == expected:
            return pert.unsqueeze(), True
        if shape[1:] != expected:
            raise CertkitError(f"the model's inputs have shape {shape_text(expected)}: bounds take a batch N x "
                               f"{shape_text(expected)} or one input {shape_text(expected)}, got {shape_text(shape)}")
        return pert, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph.forward(x)

    # ------------------------------------------------------------------ IBP
    @exact_float32()
    def ibp(self, pert: Perturbation) -> list[ops.Interval]:
        """Intervals of every node. For non-box inputs (L2), nodes that are affine in the input get the exact
        bounds of their affine map over the ball ("Lp ball at the first Linear", as in CROWN)."""
        g = self.graph
        bounds: list = [pert.box()]
        for i, n in enumerate(g.nodes[1:], start=1):
            if not isinstance(pert, Box) and n.op.affine and n.inputs == [0]:
                bounds.append(self._backward_interval(i, pert, bounds, {}))
            else:
                bounds.append(n.op.ibp(*[bounds[j] for j in n.inputs]))
        return bounds

    @exact_float32()
    def ibp_margins(self, pert: Perturbation, C: torch.Tensor, bounds: list | None = None) -> tuple[torch.Tensor, list]:
        """IBP lower bounds of C f(x) (last layer elided) and the intervals of every node (reusable by CROWN-IBP
        and by the warm-up regularizers). Differentiable w.r.t. the weights."""
        bounds = self.ibp(pert) if bounds is None else bounds
        return self._ibp_output(pert, C, bounds, True, upper=False)[0], bounds

    @exact_float32()
    def ibp_margin_bounds(self, pert: Perturbation, C: torch.Tensor, bounds: list) -> tuple[torch.Tensor, torch.Tensor]:
        """IBP lower and upper bounds (B, S) of C f(x) (last layer elided) from the intervals ``bounds``."""
        return self._ibp_output(pert, C, bounds, True, upper=True)

    @exact_float32()
    def crown_ibp_lower(self, pert: Perturbation, C: torch.Tensor, bounds: list) -> torch.Tensor:
        """CROWN-IBP lower bounds of C f(x) given IBP intervals ``bounds`` (B, S). Differentiable."""
        B = C.shape[0]
        return self._backward(self.graph.output, C.reshape((B, -1) + tuple(self.graph.output_shape)), pert,
                              bounds, {})

    def _ibp_output(self, pert: Perturbation, C: torch.Tensor, bounds: list, elide: bool = True, upper: bool = True):
        g = self.graph
        out = g.nodes[g.output]
        B, S = C.shape[:2]
        CC = (torch.cat([C, -C], 1) if upper else C).reshape((B, -1) + tuple(g.output_shape))
        lb: torch.Tensor
        if elide and out.op is not None and out.op.affine:
            A_ins, bias = out.op.backward(CC)
            terms = [box_lower(bounds[j][0], bounds[j][1], A) for j, A in zip(out.inputs, A_ins) if A is not None]
            lb = functools.reduce(operator.add, terms)
            if bias is not None:
                lb = lb + bias
        else:
            lb = box_lower(bounds[g.output][0], bounds[g.output][1], CC)
        return lb[:, :S], (-lb[:, S:] if upper else None)

    # ------------------------------------------------------------------ backward (CROWN)
    def _backward(self, start: int, A0: torch.Tensor, pert: Perturbation, bounds: list, relax: dict,
                  alphas: dict | None = None, setups: dict | None = None) -> torch.Tensor:
        """min over the perturbation set of sum(A0 * node_start) + bias, via backward linear bounds.
        A0: (B, S, *shape_start). Returns (B, S)."""
        A_in, total = self.propagate(start, A0, bounds, relax, alphas, setups)
        return total if A_in is None else total + pert.lower(A_in)

    @exact_float32()
    def propagate(self, start: int, A0: torch.Tensor, bounds: list, relax: dict, alphas: dict | None = None,
                  setups: dict | None = None, extra: dict | None = None, record: dict | None = None):
        """Backward linear bound of sum(A0 * node_start) down to the input: returns (A_in (B,S,*input) or None,
        bias (B,S)) with sum(A0 * node_start) >= sum(A_in * x) + bias for every x whose non-affine nodes respect their
        relaxations (``relax``: node -> the op's relaxation, filled from ``bounds`` when missing; ``alphas``: node ->
        alpha (n_alpha, B, S, *shape) of alpha-CROWN, used instead, with ``setups``: node -> the op's
        relaxation_setup of these bounds).

        ``extra``: node -> (A_add (B,S,*shape), bias_add (B,S)), a linear term added at that node, sound when
        sum(A_add * node) + bias_add <= 0 on the set bounded (beta-CROWN's split constraints,
        verifiers/complete/beta_crown.py).
        ``record``: node -> filled with the A (B,S,*shape) reaching that node's output (for branching scores)."""
        g = self.graph
        acc: dict[int, torch.Tensor] = {start: A0}
        total = torch.zeros(A0.shape[:2], device=A0.device, dtype=A0.dtype)
        for i in range(start, 0, -1):
            self.check_deadline()    # one pass through a large network can take seconds: checked per node
            A = acc.pop(i, None)
            if extra is not None and i in extra:
                A_add, b_add = extra[i]
                A = A_add if A is None else A + A_add
                total = total + b_add
            if A is None:
                continue
            if record is not None and i in record:
                record[i] = A
            n = g.nodes[i]
            in_bounds = [bounds[j] for j in n.inputs]
            r = None
            if not n.op.affine:
                if alphas is not None and i in alphas:
                    r = n.op.relaxation(in_bounds, alpha=alphas[i], setup=(setups or {}).get(i))
                else:
                    r = relax.get(i)
                    if r is None:
                        r = relax[i] = n.op.relaxation(in_bounds)
            A_ins, bias = n.op.backward(A, in_bounds, r)
            if bias is not None:
                total = total + bias
            for j, Aj in zip(n.inputs, A_ins):
                if Aj is not None:
                    acc[j] = Aj if j not in acc else acc[j] + Aj
        return acc.pop(0, None), total

    def _backward_interval(self, i: int, pert: Perturbation, bounds: list, relax: dict,
                           only: torch.Tensor | None = None, center: torch.Tensor | None = None) -> ops.Interval:
        """(l, u) of node i by backward passes from identity rows (+x_n for l, -x_n for u), chunked to the memory
        budget.

        ``only`` (bool (B, *shape) or flat (n,)) restricts the passes to those neurons; the others get +-inf here
        (callers intersect with IBP bounds). With a per-input mask each input carries rows for ITS neurons only
        (padded to the largest count in the batch), not for the union over the batch.

        ``center`` (B, *shape): node i at the centers of the boxes, for the inputs of ReLUs. A neuron that the bounds
        prove stable has the sign of its center value on the whole box, so the first pass bounds only that side
        (the lower bound where the center is positive, the upper bound where it is negative); the other side is
        bounded in a second pass only for the neurons still unstable (+-inf for the others: a stable ReLU's
        relaxation is exact whatever that bound is). About half the rows where most neurons turn out stable (a
        64 x 64 cGAN's discriminator: 95% of the candidates)."""
        n = torch.Size(self.graph.nodes[i].shape).numel()
        B = pert.center().shape[0]
        only = (torch.ones((B, n), dtype=torch.bool, device=pert.center().device) if only is None
                else only.reshape(-1, n).expand(B, n))
        if center is None:
            l, u = self._signed_rows(i, pert, bounds, relax, only, only)
        else:
            c = center.reshape(B, n)
            first_l, first_u = only & (c >= 0), only & (c <= 0)
            l, u = self._signed_rows(i, pert, bounds, relax, first_l, first_u)
            rest = only & (l < 0) & (u > 0)
            if bool(rest.any()):
                l2, u2 = self._signed_rows(i, pert, bounds, relax, rest & ~first_l, rest & ~first_u)
                l, u = torch.maximum(l, l2), torch.minimum(u, u2)
        shape = (B,) + tuple(self.graph.nodes[i].shape)
        return l.reshape(shape), u.reshape(shape)

    def _signed_rows(self, i: int, pert: Perturbation, bounds: list, relax: dict, want_l: torch.Tensor,
                     want_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower bounds (B, n) of node i's neurons where want_l (B, n) and upper bounds where want_u, each from one
        backward pass of its identity row (+x_n or -x_n); -inf / +inf elsewhere."""
        shape = self.graph.nodes[i].shape
        n = torch.Size(shape).numel()
        x = pert.center()
        B = x.shape[0]
        want = torch.cat([want_l, want_u], 1)             # (B, 2n): row v bounds neuron v % n, sign + for v < n
        counts = want.sum(1)
        K = int(counts.max()) if B else 0
        # idx (B, K): each input's rows first (stable sort keeps their order), padding after
        order = torch.argsort((~want).to(torch.int8), dim=1, stable=True)[:, :K]
        valid = torch.arange(K, device=x.device)[None] < counts[:, None]
        low = torch.full((B, 2 * n), -math.inf, device=x.device, dtype=x.dtype)
        windowed = self.conv_windows and len(shape) == 3
        if windowed:
            walk = windows.plan(self.graph, i)
            biggest = walk[2]
        else:
            biggest = max(max(1, torch.Size(nd.shape).numel()) for nd in self.graph.nodes[:i + 1])
        chunk = max(1, self.budget // max(1, B * biggest))
        bi = torch.arange(B, device=x.device)[:, None]
        for s0 in range(0, K, chunk):
            self.check_deadline()
            sel, ok = order[:, s0:s0 + chunk], valid[:, s0:s0 + chunk]
            k = sel.shape[1]
            neuron = sel % n
            sign = torch.where(sel < n, 1.0, -1.0).to(x.dtype) * ok.to(x.dtype)
            if windowed:
                lb = windows.window_lower(self, i, neuron, sign, pert, bounds, relax, walk)
            else:
                A0 = torch.zeros((B, k, n), device=x.device, dtype=x.dtype)
                A0[bi, torch.arange(k, device=x.device)[None], neuron] = sign
                lb = self._backward(i, A0.reshape((B, k) + tuple(shape)), pert, bounds, relax)
            low.scatter_(1, sel, torch.maximum(low.gather(1, sel), torch.where(ok, lb, torch.full_like(lb, -math.inf))))
        return low[:, :n], -low[:, n:]

    def check_deadline(self) -> None:
        """Raise TimeoutError once ``deadline`` (a time.perf_counter() value, set by the complete verifier) passed:
        bounding a large network's intermediate layers can take longer than an instance's time limit.

        Raises:
            TimeoutError: the deadline passed.
        """
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise TimeoutError("timed out while bounding intermediate layers with CROWN")

    def ibp_exact_on_box(self, i: int) -> bool:
        """True when IBP of node i over an input box is exact per coordinate, so CROWN cannot tighten it: the path
        from the input is a chain of one-input affine ops with at most one op that mixes coordinates (Linear,
        Conv2d, ...: every affine op's IBP rule is the exact image of a box); the others (normalization, BatchNorm,
        reshape, padding) map a box exactly onto a box."""
        mixing = 0
        while i != 0:
            n = self.graph.nodes[i]
            if not n.op.affine or len(n.inputs) != 1:
                return False
            mixing += not n.op.coordinatewise
            i = n.inputs[0]
        return mixing <= 1

    def forward_hybrid(self, pert: Perturbation) -> bool:
        """Whether :meth:`crown_intermediate` also carries forward-mode bounds (verifiers/bounds/forward.py
        ``ForwardRows``): ``forward_rows`` True / False, or by default (None) for boxes with m free coordinates,
        1 <= m <= FORWARD_MAX_FREE, on graphs whose ops all have forward rules and whose widest input of a
        non-affine op has at least FORWARD_MIN_WIDTH (m+1) neurons. Forward rows cost 2(m+1) evaluations of every
        node; they pay where they leave CROWN fewer neurons to bound: ACAS Xu (layers of 50 ReLUs, m = 5; VNN-COMP
        2024 acasxu_2023 1_1 prop 5 unsat in 5.8 s instead of 10.7 s, the same sub-boxes); lsnc's 8-neuron layers
        (m = 6) lose (the quadrotor2d_state_1 search 17.5 s instead of 12.1 s)."""
        if self.forward_rows is not None:
            return bool(self.forward_rows) and isinstance(pert, Box)
        if not isinstance(pert, Box):
            return False
        m = free_coordinates(pert)
        if not 0 < m <= FORWARD_MAX_FREE:
            return False
        if self._widest is None:
            g = self.graph
            self._widest = 0 if not forward_supported(self) else max(
                [torch.Size(g.nodes[j].shape).numel() for a in g.nonlinear() for j in g.nodes[a].inputs] or [0])
        return self._widest >= FORWARD_MIN_WIDTH * (m + 1)

    @exact_float32()
    def crown_intermediate(self, pert: Perturbation, init: list | None = None) -> list:
        """CROWN bounds of every input of every non-affine node (both operands of products and quotients),
        intersected with IBP; every node's IBP interval is recomputed from its inputs' tightened bounds in one
        forward sweep (a monotone op after a tightened node gets the exact image of the tighter interval, which its
        relaxation's lines cannot reach), so the nodes CROWN does not bound gain too. Over boxes with few free
        coordinates (:meth:`forward_hybrid`) every node is first intersected with its forward-mode interval, and
        the backward passes bound only the neurons that are still unstable, the inputs of ReLUs one side first
        (:attr:`one_sided`). ``init``: intervals of every node, each (B, *shape), known to hold on these boxes (the
        bounds of a box that contains each of them: input-split branch and bound passes a parent's to its children);
        every node starts from their intersection with IBP, so only the neurons unstable in both are bounded again."""
        g = self.graph
        bounds = self.ibp(pert)
        if init is not None:
            bounds = [(torch.maximum(l, il), torch.minimum(u, iu)) for (l, u), (il, iu) in zip(bounds, init)]
        relax: dict = {}
        fwd = ForwardRows(g, pert) if isinstance(pert, Box) and self.forward_hybrid(pert) else None
        one_sided = fwd is not None and self.one_sided
        centers = None
        first: dict[int, tuple] = {}          # node -> (op of its first non-affine consumer, input position there)
        for a in g.nonlinear():
            for k, j in enumerate(g.nodes[a].inputs):
                first.setdefault(j, (g.nodes[a].op, k))
        tightened = init is not None
        for j in range(1, len(g.nodes)):
            n = g.nodes[j]
            if tightened and (isinstance(pert, Box) or not (n.op.affine and n.inputs == [0])):
                l0, u0 = n.op.ibp(*[bounds[i] for i in n.inputs])
                bounds[j] = (torch.maximum(l0, bounds[j][0]), torch.minimum(u0, bounds[j][1]))
            if fwd is not None:
                self.check_deadline()
                r = None
                if not n.op.affine:
                    r = relax.get(j)
                    if r is None:
                        r = relax[j] = n.op.relaxation([bounds[i] for i in n.inputs])
                f = fwd.node(j, bounds, r)
                if f is not None:
                    bounds[j] = (torch.maximum(f[0], bounds[j][0]), torch.minimum(f[1], bounds[j][1]))
                    tightened = True
            if j not in first:
                continue
            op, k = first[j]
            l0, u0 = bounds[j]
            # the neurons IBP leaves unstable (the op's own rule for its first input; any width for the others)
            unstable = op.unstable(l0, u0) if k == 0 else l0 < u0
            if (isinstance(pert, Box) and self.ibp_exact_on_box(j)) or not unstable.any():
                continue
            center = None
            if one_sided and k == 0 and isinstance(op, ReLU):
                if centers is None:
                    x = pert.center()
                    centers = self.ibp(Box(x, x))
                center = centers[j][0]
            l, u = self._backward_interval(j, pert, bounds, relax, only=unstable, center=center)
            bounds[j] = (torch.maximum(l, l0), torch.minimum(u, u0))
            tightened = True
        return bounds

    # ------------------------------------------------------------------ public
    @exact_float32()
    def compute_bounds(self, pert: Perturbation, C: torch.Tensor | None = None, method: str = "CROWN",
                       elide: bool = True, alpha_iterations: int = 20, alpha_lr: float = 0.5,
                       bound_upper: bool = True, time_budget: float | None = None):
        """Lower and upper bounds of C f(x) over ``pert``.

        Args:
            pert: :class:`Box` (Linf balls: :func:`linf_ball`), :class:`L2Ball` or a box ``(lo, hi)`` of tensors, of a
                batch (B, *input_shape) or of ONE input (*input_shape; C is then (S, K) and lb, ub are (S,)).
            C: specification (B, S, K) with K = number of outputs; None = identity (bounds of the outputs).
            method: IBP, CROWN-IBP, CROWN or alpha-CROWN.
            elide: IBP only: fold the last affine layer into C (tighter; False for plain interval output).
            bound_upper: False skips the upper bound (ub is None), halving the final backward pass; verification
                and certified training need only lb.
            time_budget: alpha-CROWN stops optimizing after this many seconds (keeping its best bound so far).

        Returns:
            (lb, ub), each (B, S) (ub None when bound_upper is False).

        Raises:
            CertkitError: unknown method, C of the wrong shape, NaN/inf in the bounds.
        """
        method = canonical_method(method)
        pert, single = self.batched(pert)
        if single:
            lb, ub = self.compute_bounds(pert, None if C is None else C.unsqueeze(0), method, elide, alpha_iterations,
                                         alpha_lr, bound_upper, time_budget)
            return lb[0], None if ub is None else ub[0]
        g = self.graph
        x = pert.center()
        B = x.shape[0]
        K = torch.Size(g.output_shape).numel()
        if C is None:
            C = torch.eye(K, device=x.device, dtype=x.dtype).unsqueeze(0).expand(B, K, K)
        if C.dim() != 3 or C.shape[0] != B or C.shape[2] != K:
            raise CertkitError(f"C must have shape (batch={B}, rows, outputs={K}), got {tuple(C.shape)}")
        C = C.to(x.dtype)
        S = C.shape[1]
        if method == "IBP":
            lb, ub = self._ibp_output(pert, C, self.ibp(pert), elide, upper=bound_upper)
        else:
            CC = (torch.cat([C, -C], 1) if bound_upper else C).reshape((B, -1) + tuple(g.output_shape))
            if method == "CROWN-IBP":
                both = self._backward(g.output, CC, pert, self.ibp(pert), {})
            else:
                bounds = self.crown_intermediate(pert)
                if method == "CROWN":
                    both = self._backward(g.output, CC, pert, bounds, {})
                else:
                    deadline = None if time_budget is None else time.perf_counter() + time_budget
                    both = alpha_crown(self, pert, CC, bounds, alpha_iterations, alpha_lr, deadline=deadline)
                # the output's interval from the tightened intermediate bounds (its last affine op applied to its
                # inputs' intervals) can beat the final backward pass where a relaxation is poor for this C (a
                # quotient of large values: the pass multiplies the reciprocal's line error by the numerator)
                C_all = torch.cat([C, -C], 1) if bound_upper else C
                both = torch.maximum(both, self._ibp_output(pert, C_all, bounds, elide=True, upper=False)[0])
            lb, ub = both[:, :S], (-both[:, S:] if bound_upper else None)
        if not bound_upper:
            ub = None
        if not (torch.isfinite(lb).all() and (ub is None or torch.isfinite(ub).all())):
            raise CertkitError(f"{method} produced NaN or inf bounds (weights or inputs too large?)")
        return lb, ub
