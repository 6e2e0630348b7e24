"""Cut a network down to the outputs a property reads: the output cone.

VNN-COMP properties often read a few of many outputs: ml4acopf's generation and voltage limits read the first 226
of the 118-bus network's 1,696 outputs, whose others are power-flow residuals computed by thousands of ReLUs that
approximate sines and cosines. Bounding those ReLUs is wasted work. :func:`restrict_outputs` follows the network's
final concatenations back to the narrowest tensor that holds the columns read, and drops everything else (fx dead
code elimination), so that bound propagation and branch and bound see only the cone of the outputs that matter.
"""
from __future__ import annotations

import copy
import itertools

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp

from certkit.models.onnx_import import cat_batch

_CATS = (torch.cat, torch.concat, cat_batch)
_SAME = ("reshape", "view", "flatten", "contiguous")


def _width(node) -> int | None:
    """n for a node whose traced value is (1, n) (rank 2), else None."""
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()
    return int(shape[1]) if len(shape) == 2 else None


def _passes_through(node) -> bool:
    """A reshape-like call (reshape, view, flatten, contiguous) with an input to follow."""
    return (isinstance(node, fx.Node) and node.op in ("call_method", "call_function") and bool(node.args)
            and str(getattr(node.target, "__name__", node.target)) in _SAME)


def _cat_parts(node: fx.Node):
    """(parts, dim) of a concatenation node, else None."""
    if node.op != "call_function" or node.target not in _CATS:
        return None
    parts = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return (list(parts), dim) if isinstance(parts, (list, tuple)) and isinstance(dim, int) else None


def _cut(gm: fx.GraphModule, out: fx.Node, node) -> fx.GraphModule:
    out.args = (node,)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def restrict_outputs(module: fx.GraphModule, sample_shape: tuple, lo: int, hi: int):
    """The part of ``module`` that computes output columns lo..hi-1, when it is smaller than the whole.

    Args:
        module: maps (B, *sample_shape) to (B, n) (rank-2 outputs only; others are left whole).
        sample_shape: shape of one input.
        lo, hi: the columns read, 0 <= lo < hi <= n.

    Returns:
        ``(sub, offset, width)``: a new GraphModule mapping (B, *sample_shape) to (B, width) whose column j is
        ``module``'s column offset + j, with offset <= lo and hi <= offset + width < n; or None when the output is
        not a concatenation (along the columns) that can be narrowed. ``module`` itself is not changed.

    Property: sub(x) equals module(x)[:, offset:offset + width] for every x (the same fx nodes compute it).
    """
    node = next(n for n in module.graph.nodes if n.op == "output").args[0]
    while _passes_through(node):
        node = node.args[0]
    if not (isinstance(node, fx.Node) and _cat_parts(node) is not None):
        return None   # (before copying and running the network: most outputs are not concatenations)
    gm = copy.deepcopy(module)
    try:
        ShapeProp(gm).propagate(torch.zeros((1,) + tuple(sample_shape)))
    except Exception:  # noqa: BLE001 - a graph shape propagation cannot follow is left whole
        return None
    out = next(n for n in gm.graph.nodes if n.op == "output")
    node, offset = out.args[0], 0
    n_total = _width(node)
    if not isinstance(node, fx.Node) or n_total is None:
        return None
    while True:
        width = _width(node)
        if _passes_through(node):
            src = node.args[0]
            if isinstance(src, fx.Node) and _width(src) == width:
                node = src
                continue
        cat = _cat_parts(node) if isinstance(node, fx.Node) else None
        if cat is None or cat[1] not in (1, -1):
            break
        parts, dim = cat
        widths = [_width(p) for p in parts]
        if any(w is None for w in widths):
            break
        sizes = [int(w) for w in widths if w is not None]
        starts = [0, *itertools.accumulate(sizes)][:-1]
        used = [k for k, (s, w) in enumerate(zip(starts, sizes)) if s < hi - offset and s + w > lo - offset]
        if len(used) == len(parts):
            break
        if len(used) == 1:
            node, offset = parts[used[0]], offset + starts[used[0]]
            continue
        target = node.target
        assert callable(target)
        with gm.graph.inserting_before(out):
            sub_cat = gm.graph.call_function(target, (parts[used[0]:used[-1] + 1], dim))
        return _cut(gm, out, sub_cat), offset + starts[used[0]], sum(sizes[used[0]:used[-1] + 1])
    width = _width(node)
    if width is None or width >= n_total:
        return None
    return _cut(gm, out, node), offset, width
