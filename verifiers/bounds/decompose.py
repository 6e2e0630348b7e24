"""Composite torch layers written out in the primitive ops certkit bounds, for torch.fx tracing (graph.py).

``nn.LayerNorm`` / ``F.layer_norm`` and ``nn.MultiheadAttention`` have no bound rule of their own: while a model is
traced, their calls are replaced by the same computation spelled with ops that have one (mean, subtraction, square,
square root, quotient, constant affine maps, matrix products, softmax). ``torch.split`` / ``torch.chunk`` (and the
tensor methods), whose pieces' sizes are only known once shapes are, are rewritten after the first run of the
traced graph: each piece taken from the tuple becomes a slice of the input (:func:`splits_as_slices`). The traced
graph computes what the layer computes (in eval mode; up to float rounding), and each primitive gets its own
relaxation, as auto_LiRPA does for these layers.

    layer_norm(x) = (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * weight + bias   (over the normalized dims)
    attention(q, k, v) = concat_h softmax(Q_h K_h^T / sqrt(d_h)) V_h  W_o^T + b_o,  Q_h = (q W_q^T + b_q)_h, ...

References: Ba, Kiros, Hinton 2016 ("Layer normalization"); Vaswani et al. NeurIPS 2017 (multi-head attention, the
layout of torch's ``nn.MultiheadAttention``); Shi et al. ICLR 2020 ("Robustness verification for transformers")
bound transformers through the same primitives.
"""
from __future__ import annotations

import contextlib
import copy
import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from certkit.common.errors import CertkitError


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """``F.layer_norm`` in primitive ops: x (B, ..., *normalized_shape), normalized over its last
    len(normalized_shape) dims (biased variance, as torch)."""
    n = 1 if isinstance(normalized_shape, int) else len(tuple(normalized_shape))
    dims = tuple(range(-n, 0))
    c = x - x.mean(dims, keepdim=True)
    y = c / torch.sqrt((c ** 2).mean(dims, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _layer_norm_module(m: nn.LayerNorm, x):
    return layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)


def _attention_module(m: nn.MultiheadAttention, query, key, value, key_padding_mask=None, need_weights=True,
                      attn_mask=None, average_attn_weights=True, is_causal=False):
    """``nn.MultiheadAttention.forward`` (batch_first, eval mode) in primitive ops; returns (output (B, L, E),
    attention weights (B, L, S) averaged over heads, or (B, H, L, S), or None), as torch does.

    Raises:
        CertkitError: a configuration certkit does not write out (batch_first=False, masks, add_bias_kv,
            add_zero_attn, causal attention).
    """
    if not m.batch_first:
        raise CertkitError("nn.MultiheadAttention(batch_first=False) puts the sequence before the batch: build it "
                           "with batch_first=True to bound it")
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        raise CertkitError("nn.MultiheadAttention with a mask: certkit bounds unmasked attention")
    if m.bias_k is not None or m.add_zero_attn:
        raise CertkitError("nn.MultiheadAttention with add_bias_kv or add_zero_attn is not supported")
    E, H = m.embed_dim, m.num_heads
    hd = E // H
    if m._qkv_same_embed_dim:
        w_q, w_k, w_v = m.in_proj_weight[:E], m.in_proj_weight[E:2 * E], m.in_proj_weight[2 * E:]
    else:
        w_q, w_k, w_v = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
    b = m.in_proj_bias
    b_q, b_k, b_v = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])

    def heads(t, w, bias):                       # (B, L, E_in) -> (B, H, L, hd)
        return F.linear(t, w, bias).unflatten(-1, (H, hd)).transpose(1, 2)

    q = heads(query, w_q, b_q) * (1.0 / math.sqrt(hd))
    k, v = heads(key, w_k, b_k), heads(value, w_v, b_v)
    weights = torch.softmax(torch.matmul(q, k.transpose(-2, -1)), -1)     # (B, H, L, S)
    out = torch.matmul(weights, v).transpose(1, 2).flatten(2)              # (B, L, E)
    out = m.out_proj(out)
    if not need_weights:
        return out, None
    return out, (weights.mean(1) if average_attn_weights else weights)


#: module type -> its written-out forward (module, *args, **kwargs)
MODULES = {nn.LayerNorm: _layer_norm_module, nn.MultiheadAttention: _attention_module}


@contextlib.contextmanager
def functions_written_out():
    """While tracing: ``F.layer_norm`` (and ``torch.layer_norm``) calls run :func:`layer_norm` instead."""
    saved = F.layer_norm, torch.layer_norm
    F.layer_norm = layer_norm
    torch.layer_norm = layer_norm
    try:
        yield
    finally:
        F.layer_norm, torch.layer_norm = saved


_SPLITS = {("call_function", torch.split), ("call_function", torch.chunk), ("call_function", torch.tensor_split),
           ("call_method", "split"), ("call_method", "chunk"), ("call_method", "tensor_split")}


def splits_as_slices(gm: fx.GraphModule, values: dict) -> fx.GraphModule | None:
    """``gm`` with every ``torch.split`` / ``torch.chunk`` / ``tensor_split`` (function or method) whose pieces are only
    taken by index (``a, b = x.split(...)``) replaced by one basic slice of x per piece, the sizes read from the pieces
    in ``values`` (node name -> value of a run of gm). Returns a new GraphModule (gm is not changed), or None when
    there is nothing to rewrite."""
    todo = []
    for n in gm.graph.nodes:
        piece_vals = values.get(n.name)
        if (n.op, n.target) not in _SPLITS or not isinstance(piece_vals, (tuple, list)) or not n.args:
            continue
        if not all(u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int)
                   for u in n.users):
            continue
        x = n.args[0]
        rank = values[x.name].dim() if isinstance(x, fx.Node) and isinstance(values.get(x.name), torch.Tensor) else None
        if rank is None:
            continue
        dim = n.kwargs.get("dim", n.args[2] if len(n.args) > 2 else 0)
        if not isinstance(dim, int):
            continue
        todo.append((n.name, dim % rank, [int(p.shape[dim % rank]) for p in piece_vals]))
    if not todo:
        return None
    graph = copy.deepcopy(gm.graph)
    by_name = {n.name: n for n in graph.nodes}
    for name, dim, sizes in todo:
        n = by_name[name]
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        for u in list(n.users):
            k = u.args[1] % len(sizes)
            index = (slice(None),) * dim + (slice(starts[k], starts[k] + sizes[k]),)
            with graph.inserting_after(u):
                piece = graph.call_function(operator.getitem, (n.args[0], index))
            u.replace_all_uses_with(piece)
            graph.erase_node(u)
        graph.erase_node(n)
    return fx.GraphModule(gm, graph)
