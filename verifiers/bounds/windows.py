"""Windowed backward bounds for convolutional layers (the "patches" idea of auto_LiRPA, Xu et al. NeurIPS 2020,
Sec. 3.1 / Appendix; Shi et al. 2021 use it for efficient CROWN on CNNs).

Problem: CROWN bounds every unstable neuron of a convolutional layer from its own identity row and propagates the
row backward to the input. A row for neuron (c, h, w) depends only on its receptive field: a spatial window of each
earlier layer. Dense rows (B, S, C, H, W) spend H*W / (window area) times the necessary work (50x on a 28x28 CNN).

Representation: a :class:`Window` keeps, per row, the coefficients on the row's window only, A (B, S, C, h, w); the
window of a row whose start neuron sits at spatial position p of the start node begins at floor(p * stride) - pad of
the current node (stride and pad accumulated over the convolutions passed; the stride is a fraction after a transposed
convolution), so one offset per row suffices. Positions of a window outside the node (the convolutions' zero padding)
always carry A = 0 (masked after every convolution), so sums over windows equal sums over the node.

Rules (jax_verify style, one entry per op kind): Conv2d (transposed convolution without padding: the window grows to
(h - 1) * stride + dilation * (k - 1) + 1), ConvTranspose2d (a strided convolution on each shifted window: the window
shrinks by the stride, and rows whose windows sit at different offsets modulo the stride are shifted apart: a cGAN's
generator, and its discriminator's rows on their way back through it), elementwise affine ops with per-channel
constants (BatchNorm, normalization: their own backward rule applies unchanged), activations (their own backward rule
on the relaxation gathered onto the windows), max pooling (each window cell's coefficient moves to its pooling
window's winner, as in the op's dense rule: the window grows to (h - 1) * stride + k), channel concatenation (each
input takes its channels' slice) and residual Add / Sub (both inputs take the rows). The walk follows the graph's DAG
in reverse topological order; a node reached from several consumers holds the union of their windows. At any other op,
where windows of different strides meet, where a window would cover the whole node, or where an op would give a window
larger than its input node, every row still on its way is scattered back to dense form and the ordinary backward pass
continues: the result equals the dense pass up to float rounding (tests/test_windows.py).

Return: :func:`window_lower` gives min over the input box of sum(A0 * node_start) + bias for signed identity rows,
like ``BoundedModule._backward`` on the dense rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from certkit.verifiers.bounds import ops
from certkit.verifiers.bounds.ops.arithmetic import Add, Sub
from certkit.verifiers.bounds.ops.concat import Concat
from certkit.verifiers.bounds.ops.conv import MATMUL_FLOATS, Conv2d, in_slices, transfer_matrix
from certkit.verifiers.bounds.ops.conv_transpose import ConvTranspose2d
from certkit.verifiers.bounds.ops.maxpool import MaxPool2d
from certkit.verifiers.bounds.perturbation import Box, Perturbation


@dataclass
class Window:
    """Rows in windowed form at one node of shape (C, H, W).

    A: (B, S, C, h, w) coefficients on each row's window.
    pos: (B, S, 2) long, the row's spatial position at the start node.
    stride: (int or Fraction, int or Fraction), pad: (int, int); the window of a row begins at floor(pos * stride) - pad
    of this node.
    """

    A: torch.Tensor
    pos: torch.Tensor
    stride: tuple
    pad: tuple

    def _index(self, H: int, W: int) -> tuple[torch.Tensor, tuple]:
        """Flat indices (B, S, h*w) of each row's window in the node padded by (top, bottom, left, right)."""
        h, w = self.A.shape[-2:]
        oy = _origin(self.pos[..., 0], self.stride[0]) - self.pad[0]
        ox = _origin(self.pos[..., 1], self.stride[1]) - self.pad[1]
        top, left = max(0, self.pad[0]), max(0, self.pad[1])
        bottom = max(0, int(oy.max()) + h - H) if oy.numel() else 0
        right = max(0, int(ox.max()) + w - W) if ox.numel() else 0
        Wp = W + left + right
        dy = torch.arange(h, device=oy.device)
        dx = torch.arange(w, device=ox.device)
        idx = ((oy + top)[..., None, None] + dy[:, None]) * Wp + (ox + left)[..., None, None] + dx
        return idx.flatten(-2), (top, bottom, left, right)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Each row's window of a per-input tensor t (B or 1, C, H, W), zero outside the node: (B, S, C, h, w)."""
        B, S, _, h, w = self.A.shape
        H, W = t.shape[-2:]
        idx, (top, bottom, left, right) = self._index(H, W)
        tp = F.pad(t, (left, right, top, bottom)).flatten(-2)                 # (B or 1, C, Hp*Wp)
        tp = tp.expand(B, -1, -1)
        C = tp.shape[1]
        out = tp.gather(2, idx.reshape(B, 1, S * h * w).expand(B, C, S * h * w))
        return out.view(B, C, S, h, w).transpose(1, 2)

    def dense(self, shape: tuple) -> torch.Tensor:
        """The rows as dense (B, S, C, H, W) coefficients of a node of per-sample ``shape`` (C, H, W)."""
        B, S, C, h, w = self.A.shape
        H, W = shape[-2:]
        idx, (top, bottom, left, right) = self._index(H, W)
        Hp, Wp = H + top + bottom, W + left + right
        out = torch.zeros((B, S, C, Hp * Wp), dtype=self.A.dtype, device=self.A.device)
        out.scatter_(3, idx[:, :, None, :].expand(B, S, C, h * w), self.A.reshape(B, S, C, h * w))
        return out.view(B, S, C, Hp, Wp)[..., top:top + H, left:left + W]


def _origin(pos: torch.Tensor, stride) -> torch.Tensor:
    """floor(pos * stride) for long positions and an int or Fraction stride, exactly."""
    f = Fraction(stride)
    return torch.div(pos * f.numerator, f.denominator, rounding_mode="floor")


def _integral(stride: tuple) -> bool:
    return all(Fraction(s).denominator == 1 for s in stride)


def _per_channel(t) -> bool:
    """True when a constant of an elementwise affine op is the same at every spatial position (None, a scalar, or
    shaped (..., C, 1, 1)); a constant that varies over H or W (e.g. shaped (W,)) needs the dense rule."""
    if t is None or not isinstance(t, torch.Tensor) or t.numel() == 1:
        return True
    return t.dim() >= 3 and t.shape[-1] == 1 and t.shape[-2] == 1


def _conv(win: Window, op: Conv2d, in_shape: tuple, cache: dict, key) -> tuple[Window, torch.Tensor | None]:
    """Backward through a convolution: a transposed convolution without padding on every window; for small windows
    one matmul with the window's transfer matrix (the transposed convolution of an identity, built once per call
    in ``cache``), several times faster than a convolution over a huge batch of tiny images."""
    m = op.module
    B, S, Cout, h, w = win.A.shape
    h2, w2 = ((s - 1) * m.stride[d] + m.dilation[d] * (m.kernel_size[d] - 1) + 1 for d, s in enumerate((h, w)))
    rows, cols = Cout * h * w, in_shape[0] * h2 * w2
    if rows * cols <= MATMUL_FLOATS:
        M = cache.get(key)
        if M is None:
            M = cache[key] = transfer_matrix(m, (Cout, h, w), 0, 0, win.A.dtype)
        A = (win.A.reshape(B * S, rows) @ M).view(B, S, in_shape[0], h2, w2)
    else:
        A = in_slices(lambda a: F.conv_transpose2d(a, m.weight, None, m.stride, 0, 0, m.groups, m.dilation),
                      win.A.reshape(B * S, Cout, h, w), cols * math.prod(m.kernel_size))
        A = A.view((B, S) + A.shape[1:])
    bias = None if m.bias is None else (win.A.sum((-2, -1)) * m.bias).sum(-1)
    stride = (win.stride[0] * m.stride[0], win.stride[1] * m.stride[1])
    pad = (win.pad[0] * m.stride[0] + m.padding[0], win.pad[1] * m.stride[1] + m.padding[1])
    out = Window(A, win.pos, stride, pad)
    ones = torch.ones((1, 1) + tuple(in_shape[-2:]), dtype=A.dtype, device=A.device)
    out.A = A * out.gather(ones)                                           # zero on the padding positions
    return out, bias


def _convt_geometry(geo: Geometry, m) -> Geometry:
    """The input-side geometry of a transposed convolution ``m`` (stride s, padding p, dilation d, kernel k per
    dimension). Output position o = i s - p + j d (j < k) comes from input i, so a window beginning at F - P (F =
    floor(pos * S)), of height h, needs the inputs i from ceil((F + q) / s) to floor((F + r) / s), q = p - d (k - 1)
    - P, r = h - 1 + p - P. With F = s m + rho: the new window begins at m - P' = floor(pos * S / s) - P' with
    P' = -ceil(q / s) and has height floor((rho_max + r) / s) + P' + 1, rho_max = 0 when s divides the integer
    stride S (every window at the same offset modulo s), else s - 1."""
    out = []
    for d in range(2):
        S, P, h, s = Fraction(geo.stride[d]), geo.pad[d], (geo.h, geo.w)[d], m.stride[d]
        q = m.padding[d] - m.dilation[d] * (m.kernel_size[d] - 1) - P
        r = h - 1 + m.padding[d] - P
        rho = 0 if S.denominator == 1 and S.numerator % s == 0 else s - 1
        P2 = (-q) // s
        S2 = S / s
        out.append((int(S2) if S2.denominator == 1 else S2, P2, (rho + r) // s + P2 + 1))
    return Geometry((out[0][0], out[1][0]), (out[0][1], out[1][1]), out[0][2], out[1][2])


def _conv_transpose(win: Window, op: ConvTranspose2d, in_shape: tuple, cache: dict, key
                    ) -> tuple[Window, torch.Tensor | None]:
    """Backward through a transposed convolution on windows: the adjoint is a strided convolution with the same
    weight; each row's window is shifted (zero-padded or cropped) so that the convolution's outputs are exactly the
    input window of :func:`_convt_geometry`; rows whose windows begin at different offsets modulo the stride (rho =
    floor(pos * stride) mod s) are shifted by different amounts, in one convolution per offset. Many rows on small
    windows take one matmul with a cached transfer matrix (the rule applied to an identity), as :func:`_conv`."""
    m = op.module
    B, S, Cout, h, w = win.A.shape
    geo = _convt_geometry(_geometry(win), m)
    k = [m.dilation[d] * (m.kernel_size[d] - 1) + 1 for d in range(2)]
    base = [win.pad[d] - m.padding[d] - geo.pad[d] * m.stride[d] for d in range(2)]      # window index of X[0], rho 0
    need = [((geo.h, geo.w)[d] - 1) * m.stride[d] + k[d] for d in range(2)]               # length of X
    rows, cols = Cout * h * w, in_shape[0] * geo.h * geo.w

    def adjoint(A: torch.Tensor, off: list) -> torch.Tensor:       # (N, Cout, h, w) -> (N, Cin, geo.h, geo.w)
        lo = [max(0, -o) for o in off]
        hi = [max(0, need[d] + off[d] - (h, w)[d]) for d, _ in enumerate(off)]
        X = F.pad(A, (lo[1], hi[1], lo[0], hi[0]))
        X = X[..., max(0, off[0]):max(0, off[0]) + need[0], max(0, off[1]):max(0, off[1]) + need[1]]
        return in_slices(lambda a: F.conv2d(a, m.weight, None, m.stride, 0, m.dilation, m.groups), X,
                         Cout * math.prod(m.kernel_size) * geo.h * geo.w)

    def rule(A: torch.Tensor, rho: tuple) -> torch.Tensor:         # (N, rows) -> (N, cols)
        off = [base[d] - rho[d] for d in range(2)]
        if rows * cols <= MATMUL_FLOATS and A.shape[0] >= 4 * rows:   # (building the matrix costs rows images)
            M = cache.get(key + rho)
            if M is None:
                eye = torch.eye(rows, dtype=A.dtype, device=A.device).view(rows, Cout, h, w)
                M = cache[key + rho] = adjoint(eye, off).reshape(rows, cols)
            return A @ M
        return adjoint(A.view(-1, Cout, h, w), off).reshape(-1, cols)

    flat = win.A.reshape(B * S, rows)
    rho = [(_origin(win.pos[..., d], win.stride[d]) % m.stride[d]).reshape(-1) for d in range(2)]
    code = rho[0] * m.stride[1] + rho[1]
    kinds = torch.unique(code).tolist()
    if len(kinds) == 1:
        A = rule(flat, (kinds[0] // m.stride[1], kinds[0] % m.stride[1]))
    else:
        A = flat.new_empty((B * S, cols))
        for c in kinds:
            sel = (code == c).nonzero().flatten()
            A[sel] = rule(flat[sel], (c // m.stride[1], c % m.stride[1]))
    A = A.view(B, S, in_shape[0], geo.h, geo.w)
    bias = None if m.bias is None else (win.A.sum((-2, -1)) * m.bias).sum(-1)
    out = Window(A, win.pos, geo.stride, geo.pad)
    ones = torch.ones((1, 1) + tuple(in_shape[-2:]), dtype=A.dtype, device=A.device)
    out.A = A * out.gather(ones)                                           # zero outside the input node
    return out, bias


def _maxpool(win: Window, op: MaxPool2d, in_shape: tuple, relaxation) -> tuple[Window, torch.Tensor]:
    """Backward through max pooling on windows: the op's relaxation (winner m, exact, upper constant U per output
    position) gathered onto each row's window; A >= 0, and A < 0 where the winner is decided, goes to the winner's
    cell of the grown input window, A < 0 elsewhere to the constant U (the dense rule of ops/maxpool.py)."""
    m, exact, U = relaxation
    B, S, C, h, w = win.A.shape
    Ho, Wo = op.out_shape[1:]
    kh, kw = op.k
    sh, sw = op.s
    A = win.A
    per_out = torch.cat([m.reshape(B, C, Ho, Wo).to(A.dtype), exact.reshape(B, C, Ho, Wo).to(A.dtype),
                         U.reshape(B, C, Ho, Wo).to(A.dtype)], 1)
    mw, ex, Uw = win.gather(per_out).split(C, 2)                       # zero outside the node, where A is zero
    Ap = torch.relu(A)
    An = A - Ap
    bias = (An * (1 - ex) * Uw).flatten(2).sum(-1)
    mi = mw.long()
    iy = (torch.arange(h, device=A.device) * sh)[:, None] + mi // kw     # (B, S, C, h, w) cell in the new window
    ix = torch.arange(w, device=A.device) * sw + mi % kw
    h2, w2 = (h - 1) * sh + kh, (w - 1) * sw + kw
    A_in = torch.zeros((B, S, C, h2 * w2), dtype=A.dtype, device=A.device)
    A_in.scatter_add_(3, (iy * w2 + ix).reshape(B, S, C, h * w), (Ap + An * ex).reshape(B, S, C, h * w))
    stride = (win.stride[0] * sh, win.stride[1] * sw)
    pad = (win.pad[0] * sh + op.p[0], win.pad[1] * sw + op.p[1])
    return Window(A_in.view(B, S, C, h2, w2), win.pos, stride, pad), bias


@dataclass(frozen=True)
class Geometry:
    """Where the windows of the rows sit in a node: each row's window begins at pos * stride - pad and is h x w."""

    stride: tuple
    pad: tuple
    h: int
    w: int

    def union(self, other: Geometry | None) -> Geometry | None:
        """The smallest geometry holding both windows (None when the strides differ: no common windows)."""
        if other is None or other.stride != self.stride:
            return None
        pad = (max(self.pad[0], other.pad[0]), max(self.pad[1], other.pad[1]))
        end = (max(self.h - self.pad[0], other.h - other.pad[0]), max(self.w - self.pad[1], other.w - other.pad[1]))
        return Geometry(self.stride, pad, pad[0] + end[0], pad[1] + end[1])


def _geometry(win: Window) -> Geometry:
    return Geometry(win.stride, win.pad, win.A.shape[-2], win.A.shape[-1])


def _embed(win: Window, geo: Geometry) -> Window:
    """The rows of ``win`` on the (larger or equal) windows of ``geo`` (zeros around)."""
    h, w = win.A.shape[-2:]
    top, left = geo.pad[0] - win.pad[0], geo.pad[1] - win.pad[1]
    if (top, left, h, w) == (0, 0, geo.h, geo.w):
        return win
    return Window(F.pad(win.A, (left, geo.w - w - left, top, geo.h - h - top)), win.pos, geo.stride, geo.pad)


def _grown(geo: Geometry, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple = (1, 1)) -> Geometry:
    """The input-side geometry of a convolution or pooling with these settings (as :func:`_conv` builds it)."""
    h, w = ((s - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1 for d, s in enumerate((geo.h, geo.w)))
    return Geometry((geo.stride[0] * stride[0], geo.stride[1] * stride[1]),
                    (geo.pad[0] * stride[0] + pad[0], geo.pad[1] * stride[1] + pad[1]), h, w)


def _step(g, i: int, geo: Geometry) -> tuple[str, list[tuple[int, Geometry]]] | None:
    """The rule for windowed rows at node i and the geometry they take at each input; None where rows turn dense."""
    n = g.nodes[i]
    op = n.op
    shapes = [g.nodes[j].shape for j in n.inputs]
    if not shapes or any(len(sh) != 3 for sh in shapes):
        return None
    if len(n.inputs) == 1:
        if isinstance(op, (Conv2d, MaxPool2d)) and not _integral(geo.stride):
            return None       # (a convolution after a transposed one: floor(pos * S) * s is not floor(pos * S * s))
        if isinstance(op, Conv2d):
            m = op.module
            return "conv", [(n.inputs[0], _grown(geo, m.kernel_size, m.stride, m.padding, m.dilation))]
        if isinstance(op, ConvTranspose2d):
            return "convt", [(n.inputs[0], _convt_geometry(geo, op.module))]
        if isinstance(op, MaxPool2d):
            return "maxpool", [(n.inputs[0], _grown(geo, op.k, op.s, op.p))]
        if isinstance(op, ops.ElementwiseAffine) and all(_per_channel(t) for t in op.params()):
            return "affine", [(n.inputs[0], geo)]
        if isinstance(op, ops.Activation):
            return "activation", [(n.inputs[0], geo)]
        return None
    if isinstance(op, Concat) and op.dim == 1 and not op.constants and all(sh[1:] == n.shape[1:] for sh in shapes):
        return "concat", [(j, geo) for j in n.inputs]
    if isinstance(op, (Add, Sub)) and all(tuple(sh) == tuple(n.shape) for sh in shapes):
        return "add" if isinstance(op, Add) else "sub", [(j, geo) for j in n.inputs]
    return None


def plan(g, start: int) -> tuple[list[tuple[int, str]], int, int]:
    """The walk of :func:`window_lower` from node ``start`` (shape (C, H, W)), over the graph's DAG in reverse
    topological order: [(node, rule)] with rule "conv", "maxpool", "affine", "activation", "concat" (channel
    concatenation: each input gets its channels' windows), "add" or "sub" (residual connections: both inputs get
    the windows; windows of several consumers are merged into their union); the node where the walk stops and every
    row still on its way turns dense (0 when all rows reach the input windowed); and the largest number of floats
    one row occupies on the way (for sizing row chunks to a memory budget)."""
    geos: dict[int, Geometry | None] = {start: Geometry((1, 1), (0, 0), 1, 1)}
    steps: list[tuple[int, str]] = []
    size, end = g.nodes[start].shape[0], 0
    for i in range(start, 0, -1):
        if i not in geos:
            continue
        geo = geos[i]
        C, H, W = g.nodes[i].shape
        step = None if geo is None or geo.h * geo.w >= H * W else _step(g, i, geo)
        if step is not None and any(gj.h * gj.w > math.prod(g.nodes[j].shape[1:]) for j, gj in step[1]):
            step = None       # a window larger than its node: the op costs less on the dense rows
        if step is None:
            end = i
            break
        rule, children = step
        steps.append((i, rule))
        for j, gj in children:
            merged = gj if j not in geos else gj.union(geos[j])
            geos[j] = merged
            if merged is not None:
                size = max(size, g.nodes[j].shape[0] * merged.h * merged.w)
    if end:
        size = max(size, max(torch.Size(nd.shape).numel() for nd in g.nodes[:end + 1]))
    return steps, end, size


def window_lower(bm, start: int, chan: torch.Tensor, sign: torch.Tensor, pert: Perturbation, bounds: list,
                 relax: dict, walk: tuple | None = None) -> torch.Tensor:
    """Lower bounds (B, k) of sign * x_n for the neurons n = chan (B, k) (flat indices into node ``start``, shape
    (C, H, W)) over ``pert``, with sign (B, k) +1 (lower bounds of x_n), -1 (minus upper bounds) or 0 (a padding row:
    zero); equal to the dense backward pass of the same rows. ``relax`` (node -> relaxation, as in
    ``BoundedModule.propagate``) also keeps the windows' convolution transfer matrices, under tuple keys, for the
    other row chunks of the same bounds. ``walk`` is :func:`plan` of ``start`` (computed here when None; callers
    bounding many chunks pass it once)."""
    g = bm.graph
    C, H, W = g.nodes[start].shape
    B, k = chan.shape
    c, hw = chan // (H * W), chan % (H * W)
    pos = torch.stack([hw // W, hw % W], -1)                               # (B, k, 2)
    A = torch.zeros((B, k, C, 1, 1), dtype=bounds[0][0].dtype, device=chan.device)
    A.view(B, k, C).scatter_(2, c[..., None], sign.to(A.dtype)[..., None])
    acc: dict[int, Window] = {start: Window(A, pos, (1, 1), (0, 0))}
    total = torch.zeros((B, k), dtype=A.dtype, device=A.device)
    steps, end, _ = plan(g, start) if walk is None else walk
    for i, rule in steps:
        bm.check_deadline()           # a chunk of rows through a large network can take seconds
        n = g.nodes[i]
        win = acc.pop(i)
        bias = None
        if rule == "conv":
            key = ("window conv", i) + tuple(win.A.shape[-2:])
            win, bias = _conv(win, n.op, g.nodes[n.inputs[0]].shape, relax, key)
            children = [win]
        elif rule == "convt":
            key = ("window convt", i) + tuple(win.A.shape[-2:]) + win.pad + win.stride   # (the geometry in)
            win, bias = _conv_transpose(win, n.op, g.nodes[n.inputs[0]].shape, relax, key)
            children = [win]
        elif rule == "maxpool":
            r = relax.get(i)
            if r is None:
                r = relax[i] = n.op.relaxation([bounds[n.inputs[0]]])
            win, bias = _maxpool(win, n.op, g.nodes[n.inputs[0]].shape, r)
            children = [win]
        elif rule == "affine":
            (win.A,), bias = n.op.backward(win.A)
            children = [win]
        elif rule == "activation":
            r = relax.get(i)
            if r is None:
                r = relax[i] = n.op.relaxation([bounds[n.inputs[0]]])
            full = (B,) + tuple(n.shape)
            r_win = win.gather(torch.cat([t.expand(full) for t in r], 1)).split(n.shape[0], 2)
            (win.A,), bias = n.op.backward(win.A, [bounds[n.inputs[0]]], r_win)
            children = [win]
        elif rule == "concat":
            parts = win.A.split([g.nodes[j].shape[0] for j in n.inputs], dim=2)
            children = [Window(p, win.pos, win.stride, win.pad) for p in parts]
        else:  # add / sub
            children = [win, Window(-win.A if rule == "sub" else win.A, win.pos, win.stride, win.pad)]
        if bias is not None:
            total = total + bias
        for j, child in zip(n.inputs, children):
            if j in acc:
                geo = _geometry(acc[j]).union(_geometry(child))
                assert geo is not None, "plan merges only windows of one stride"
                acc[j] = _embed(acc[j], geo)
                acc[j].A = acc[j].A + _embed(child, geo).A
            else:
                acc[j] = child
    if end == 0:
        win = acc.pop(0)
        if isinstance(pert, Box):
            x_L, x_U = pert.box()
            n_in = x_L.shape[1]
            cr = win.gather(torch.cat([(x_U + x_L) / 2, (x_U - x_L) / 2], 1))
            c, r = cr[:, :, :n_in], cr[:, :, n_in:]
            return total + (win.A * c).flatten(2).sum(-1) - (win.A.abs() * r).flatten(2).sum(-1)
        return total + pert.lower(win.dense(g.nodes[0].shape))
    # the rows still on their way turn dense; one backward pass takes them all (each added where it waits)
    seeds = {j: w.dense(g.nodes[j].shape) for j, w in acc.items()}
    at_input = seeds.pop(0, None)
    top = max(seeds)
    zero = torch.zeros_like(total)
    A_in, rest = bm.propagate(top, seeds.pop(top), bounds, relax, extra={j: (Aj, zero) for j, Aj in seeds.items()})
    if at_input is not None:
        A_in = at_input if A_in is None else A_in + at_input
    return total + rest + (0 if A_in is None else pert.lower(A_in))
