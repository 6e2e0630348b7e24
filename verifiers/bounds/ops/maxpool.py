"""2-D max pooling: y = max of the window's inputs z_1..z_k (convex, piecewise linear, not elementwise).

Relaxation of one window with input bounds [l_i, u_i] (the max rule of DeepPoly, Singh et al. POPL 2019, Sec. 4.3,
as auto_LiRPA's BoundMaxPool without its optimised upper line):
    lower: y >= z_m with m = argmax_i l_i (the max is at least any of its inputs);
    upper: y <= max_i u_i (a constant);
    exact: y = z_m when l_m >= u_i for every other i (the window's winner is decided).
alpha-CROWN (Xu et al. ICLR 2021) optimises the lower line: y >= sum_i w_i z_i holds for every convex combination w
of the window's inputs (the max is at least their weighted mean), so each window and specification row gets one
alpha in [0, 1] per window cell, w = alpha / sum(alpha) over the real (not padding) cells, starting from the one-hot
winner above (CROWN's line). The upper line stays the constant.
CROWN's backward rule puts A >= 0 on z_m and A < 0 on the constant (or on z_m when exact); IBP pools l and u
(max is monotone: exact on boxes). Windows are read as strided views and coefficients returned by strided adds, so any
kernel, stride and zero-or-more padding (padded cells never win) share one code path; dilation and ceil_mode are
refused. ONNX ``MaxPool`` (2-D, symmetric pads) imports as ``nn.MaxPool2d``.

Branch and bound (verifiers/complete/beta_crown.py) splits a window like a ReLU: in a window whose winner is
undecided, the cell t with the largest upper bound is split at p = the second largest upper bound of the window
(max(a, b) = b + relu(a - b) splits at a = b, as alpha-beta-CROWN branches max-pooling through that ReLU). The
child z_t >= p has its winner decided (y = z_t exactly); the child z_t <= p lowers the window's constant upper line
from u_t to p. When the two largest upper bounds tie, t's interval is halved instead. A window is scored by the
gap of its relaxation, |A| (max_i u_i - max_i l_i) for the coefficient A of its output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op, sum_node


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@register_op(modules=(nn.MaxPool2d,), functions=(F.max_pool2d,), onnx=("MaxPool",))
class MaxPool2d(Op):
    """``nn.MaxPool2d`` / ``F.max_pool2d`` with dilation 1, no ceil_mode, no returned indices."""

    name = "MaxPool2d"
    affine = False
    branchable = True            # branch and bound splits the inputs of undecided windows (module docstring)
    piecewise_linear = True      # affine where every window's winner is decided (the leaf linear programs)

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.k = _pair(kernel_size)
        self.s = _pair(stride if stride not in (None, ()) else kernel_size)
        self.p = _pair(padding)
        self.n_alpha = self.k[0] * self.k[1]   # one weight per window cell (alpha-CROWN's lower line)

    @classmethod
    def from_call(cls, call: Call):
        if call.kind == "module":
            m = call.target
            if _pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
                raise Unsupported("MaxPool2d with dilation, ceil_mode or return_indices is not supported")
            return cls(m.kernel_size, m.stride, m.padding)
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        given = dict(zip(names, call.args[1:]), **call.kwargs)
        if _pair(given.get("dilation", 1)) != (1, 1) or given.get("ceil_mode") or given.get("return_indices"):
            raise Unsupported("max_pool2d with dilation, ceil_mode or return_indices is not supported")
        return cls(given["kernel_size"], given.get("stride"), given.get("padding", 0))

    def forward(self, x):
        return F.max_pool2d(x, self.k, self.s, self.p)

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    # -- windows ------------------------------------------------------------------------------------
    def _padded(self, t: torch.Tensor, value: float) -> torch.Tensor:
        """(N, C, H, W) -> (N * C, 1, H + 2 ph, W + 2 pw), padded with ``value``."""
        N, C, H, W = t.shape
        t = t.reshape(N * C, 1, H, W)
        if self.p != (0, 0):
            t = F.pad(t, (self.p[1], self.p[1], self.p[0], self.p[0]), value=value)
        return t

    def _out_hw(self) -> tuple[int, int]:
        _, H, W = self.in_shapes[0]
        return ((H + 2 * self.p[0] - self.k[0]) // self.s[0] + 1, (W + 2 * self.p[1] - self.k[1]) // self.s[1] + 1)

    def _windows(self, t: torch.Tensor, value: float) -> torch.Tensor:
        """(N, C, H, W) -> (N * C, kh * kw, L): each output position's window (padding cells = ``value``).

        Strided views, not ``F.unfold``: torch's im2col on (N * C, 1, H, W) stalls for seconds at some batch sizes
        on the CPU (4 s for 512 x 1 x 16 x 16, against 1 ms for 256)."""
        t = self._padded(t, value)[:, 0]
        win = t.unfold(1, self.k[0], self.s[0]).unfold(2, self.k[1], self.s[1])     # (N*C, Ho, Wo, kh, kw)
        n, ho, wo = win.shape[:3]
        return win.reshape(n, ho * wo, self.k[0] * self.k[1]).transpose(1, 2)

    def _fold(self, w: torch.Tensor, N: int) -> torch.Tensor:
        """(N * C, kh * kw, L) window coefficients -> (N, C, H, W) input coefficients (overlaps summed), by one
        strided add per kernel offset."""
        C, H, W = self.in_shapes[0]
        ho, wo = self._out_hw()
        w = w.reshape(w.shape[0], self.k[0], self.k[1], ho, wo)
        out = torch.zeros((w.shape[0], H + 2 * self.p[0], W + 2 * self.p[1]), dtype=w.dtype, device=w.device)
        for dy in range(self.k[0]):
            for dx in range(self.k[1]):
                out[:, dy:dy + self.s[0] * (ho - 1) + 1:self.s[0], dx:dx + self.s[1] * (wo - 1) + 1:self.s[1]] += \
                    w[:, dy, dx]
        out = out[:, self.p[0]:self.p[0] + H, self.p[1]:self.p[1] + W]
        return out.reshape(N, C, H, W)

    def _fold_max(self, w: torch.Tensor, N: int) -> torch.Tensor:
        """(N * C, kh * kw, L) window values -> (N, C, H, W): each input cell's largest value over the windows it
        belongs to (-inf for cells in no window)."""
        C, H, W = self.in_shapes[0]
        ho, wo = self._out_hw()
        w = w.reshape(w.shape[0], self.k[0], self.k[1], ho, wo)
        out = torch.full((w.shape[0], H + 2 * self.p[0], W + 2 * self.p[1]), float("-inf"), dtype=w.dtype,
                         device=w.device)
        for dy in range(self.k[0]):
            for dx in range(self.k[1]):
                cells = (slice(None), slice(dy, dy + self.s[0] * (ho - 1) + 1, self.s[0]),
                         slice(dx, dx + self.s[1] * (wo - 1) + 1, self.s[1]))
                out[cells] = torch.maximum(out[cells], w[:, dy, dx])
        out = out[:, self.p[0]:self.p[0] + H, self.p[1]:self.p[1] + W]
        return out.reshape(N, C, H, W)

    def _branch_windows(self, l: torch.Tensor, u: torch.Tensor):
        """Per window: (top (N*C, 1, L) the cell with the largest upper bound, p (N*C, L) where to split it, ok
        (N*C, L) whether the window is undecided and l_top < p < u_top, gap (N*C, L) max u - max l)."""
        lw, uw = self._windows(l, float("-inf")), self._windows(u, float("-inf"))
        _, exact, U = self.relaxation([(l, u)])
        top = uw.argmax(1, keepdim=True)
        second = uw.scatter(1, top, float("-inf")).amax(1)
        l_top = lw.gather(1, top)[:, 0]
        p = torch.where(second < U, second, (l_top + U) / 2)
        ok = ~exact & (p > l_top) & (p < U) & (U - l_top > 1e-9)
        return top, p, ok, U - lw.amax(1)

    def _to_cells(self, top: torch.Tensor, values: torch.Tensor, ok: torch.Tensor, N: int) -> torch.Tensor:
        """Window values (N*C, L) put on each window's top cell (where ``ok``), -inf elsewhere -> (N, C, H, W)."""
        w = torch.full((top.shape[0], self.n_alpha, top.shape[2]), float("-inf"), dtype=values.dtype,
                       device=values.device)
        w.scatter_(1, top, torch.where(ok, values, torch.full_like(values, float("-inf")))[:, None])
        return self._fold_max(w, N)

    def splittable(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Input cells (bool, like l (N, C, H, W)) that branch and bound may split: the top cell of each undecided
        window."""
        top, p, ok, _ = self._branch_windows(l, u)
        return torch.isfinite(self._to_cells(top, p, ok, l.shape[0]))

    def split_points(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Where to split each input cell (N, C, H, W): the window's second largest upper bound (module docstring)
        for splittable cells, the midpoint for the others."""
        top, p, ok, _ = self._branch_windows(l, u)
        cells = self._to_cells(top, p, ok, l.shape[0])
        return torch.where(torch.isfinite(cells), cells, (l + u) / 2)

    def branch_scores(self, A: torch.Tensor, l: torch.Tensor, u: torch.Tensor, in_bounds=None, k: int = 0
                      ) -> torch.Tensor:
        """Split scores of the input cells (N, C, H, W), -inf where not splittable: |A| times the window's gap
        max u - max l, for A (N, C, Ho, Wo) the coefficient of the output in the bound being branched on."""
        top, p, ok, gap = self._branch_windows(l, u)
        N, C = l.shape[0], self.out_shape[0]
        score = A.reshape(N * C, -1).abs() * gap.clamp(min=0) + 1e-12
        return self._to_cells(top, score, ok, N)

    def relaxation(self, in_bounds, alpha=None, setup=None):
        """(m (B*C, 1, L) winner index in each window, exact (B*C, L), upper constant U (B*C, L)); with ``alpha``
        (k, B, S, C, Ho, Wo) a fourth entry: the lower line's weights (B, S, C, k, L), a convex combination of each
        window's real cells (the one-hot winner where the window is exact)."""
        l, u = in_bounds[0]
        lw, uw = self._windows(l, float("-inf")), self._windows(u, float("-inf"))
        m = lw.argmax(1, keepdim=True)
        others = uw.scatter(1, m, float("-inf")).amax(1)
        exact = lw.gather(1, m)[:, 0] >= others
        if alpha is None:
            return m, exact, uw.amax(1)
        k = self.n_alpha
        B, S, C = alpha.shape[1], alpha.shape[2], self.out_shape[0]
        L = self.out_shape[1] * self.out_shape[2]
        onehot = torch.zeros_like(lw).scatter_(1, m, 1.0).reshape(B, 1, C, k, L)
        real = self._windows(torch.ones((1, 1) + tuple(self.in_shapes[0][1:]), dtype=l.dtype, device=l.device),
                             0.0).reshape(1, 1, 1, k, L)                 # 0 on padding cells (they never win)
        a = alpha.clamp(0, 1).permute(1, 2, 3, 0, 4, 5).reshape(B, S, C, k, L) * real
        total = a.sum(3, keepdim=True)
        w = torch.where(total > 0, a / total.clamp(min=torch.finfo(a.dtype).tiny), onehot)
        w = torch.where(exact.reshape(B, 1, C, 1, L), onehot, w)
        return m, exact, uw.amax(1), w

    def alpha_init(self, in_bounds):
        """One-hot on each window's winner (CROWN's lower line): (k, B, C, Ho, Wo)."""
        l = in_bounds[0][0]
        lw = self._windows(l, float("-inf"))
        onehot = torch.zeros_like(lw).scatter_(1, lw.argmax(1, keepdim=True), 1.0)     # (B*C, k, L)
        B, C, (ho, wo) = l.shape[0], self.out_shape[0], self._out_hw()
        return onehot.reshape(B, C, self.n_alpha, ho, wo).permute(2, 0, 1, 3, 4).contiguous()

    def unstable(self, l, u):
        """Inputs of the windows whose winner IBP leaves undecided (their bounds are worth refining)."""
        m, exact, _ = self.relaxation([(l, u)])
        w = (~exact).to(l.dtype).unsqueeze(1).expand(-1, self.k[0] * self.k[1], -1)
        return self._fold(w.contiguous(), l.shape[0]) > 0

    def backward(self, A, in_bounds=(), relaxation=None):
        relaxation = relaxation if relaxation is not None else self.relaxation(in_bounds)
        m, exact, U = relaxation[:3]
        B, S = A.shape[:2]
        C = self.out_shape[0]
        L = self.out_shape[1] * self.out_shape[2]
        A = A.reshape(B, S, C, L)
        Ap = torch.relu(A)
        An = A - Ap
        ex = exact.reshape(B, 1, C, L)
        coef = Ap + An * ex                                              # on z_m: A+ always, A- where exact
        bias = sum_node(An * (~ex) * U.reshape(B, 1, C, L))              # A- on the constant elsewhere
        if len(relaxation) == 4:                                         # alpha-CROWN: A+ spread by the weights
            w = (coef.unsqueeze(3) * relaxation[3]).reshape(B * S * C, self.n_alpha, L)
        else:
            idx = m.reshape(B, 1, C, 1, L).expand(B, S, C, 1, L).reshape(B * S * C, 1, L)
            w = torch.zeros((B * S * C, self.n_alpha, L), dtype=A.dtype, device=A.device)
            w.scatter_(1, idx, coef.reshape(B * S * C, 1, L))
        A_in = self._fold(w, B * S)
        return [A_in.reshape((B, S) + tuple(self.in_shapes[0]))], bias
