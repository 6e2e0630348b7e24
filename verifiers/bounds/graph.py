"""Bound graph construction from an nn.Module (torch.fx) or from certkit's ONNX importer (already fx).

The builder traces the model, runs it once on an example batch to learn every node's per-sample shape and the
value of every node that does not depend on the input (constants), and maps each data node to an op of
``certkit.verifiers.bounds.ops``. :func:`check_model` lists every unsupported op, node and shape problem at once.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from certkit.common.errors import CertkitError
from certkit.verifiers.bounds import decompose, ops


class _Tracer(fx.Tracer):
    """Stops at the module types certkit has bound rules for, and at torch's own leaf modules (so that an
    unsupported torch layer shows up by name); writes out the composite layers of decompose.py (LayerNorm,
    MultiheadAttention) in primitive ops."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, ops.registered_modules()) or super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward, args, kwargs):
        written_out: Any = decompose.MODULES.get(type(m))
        if written_out is not None:
            return written_out(m, *args, **kwargs)
        return super().call_module(m, forward, args, kwargs)


@dataclass
class GNode:
    """A data node: ``op`` applied to the outputs of ``inputs`` (indices of earlier nodes)."""

    name: str
    op: Any                    # an ops.Op; None for the input node only (node 0)
    inputs: list[int]
    shape: tuple               # per-sample output shape
    consumers: list[int] = field(default_factory=list)


class BoundGraph:
    """Topologically ordered data nodes; node 0 is the input, ``output`` the index of the output node."""

    def __init__(self, nodes: list[GNode], output: int, module: nn.Module):
        self.nodes, self.output, self.module = nodes, output, module
        for i, n in enumerate(nodes):
            for j in n.inputs:
                nodes[j].consumers.append(i)

    @property
    def input_shape(self) -> tuple:
        return self.nodes[0].shape

    @property
    def output_shape(self) -> tuple:
        return self.nodes[self.output].shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate the graph (equals the model's forward)."""
        vals = [x]
        for n in self.nodes[1:]:
            vals.append(n.op.forward(*[vals[i] for i in n.inputs]))
        return vals[self.output]

    def nonlinear(self) -> list[int]:
        """Indices of the non-affine nodes (activations), in topological order."""
        return [i for i, n in enumerate(self.nodes) if n.op is not None and not n.op.affine]


class _Recorder(fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.values: dict[str, object] = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def _trace(model: nn.Module) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return model
    try:
        with decompose.functions_written_out():
            graph = _Tracer().trace(model)
    except CertkitError:
        raise
    except Exception as e:  # fx raises many types for untraceable Python
        raise CertkitError(f"cannot trace the model with torch.fx ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]})") from None
    return fx.GraphModule(model, graph)


def _rewritten(gm: fx.GraphModule, fusing: bool = True) -> fx.GraphModule:
    """``gm`` with the ops' registered graph rewrites applied (ops.register_rewrite) to a copy of its graph; ``gm``
    itself when none matches. ``fusing=False`` leaves out the rewrites registered with ``fuses=True``."""
    pairs = [(m, r) for m, r, fuses in ops.rewrites() if fusing or not fuses]
    if not any(m(n) for n in gm.graph.nodes for m, _ in pairs):
        return gm
    graph = copy.deepcopy(gm.graph)
    graph.owning_module = gm   # rewrites may look up the modules their nodes call (their types, sizes)
    for n in list(graph.nodes):
        for matches, rewrite in pairs:
            if matches(n):
                rewrite(graph, n)
                break
    graph.lint()
    return fx.GraphModule(gm, graph)


def _analyse(model: nn.Module, input_shape: tuple, fusing: bool = True) -> tuple[BoundGraph | None, list[str]]:
    problems: list[str] = []
    gm = _rewritten(_trace(model), fusing)
    was_training = model.training
    model.eval()
    gm.eval()
    rec = _Recorder(gm)
    ref = next(iter(list(model.parameters()) + list(model.buffers())), torch.zeros(()))
    dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
    example = torch.rand((2,) + tuple(input_shape), device=ref.device, dtype=dtype)
    try:
        with torch.no_grad():
            rec.run(example)
            rewritten = decompose.splits_as_slices(gm, rec.values)
            if rewritten is not None:
                gm, rec = rewritten.eval(), _Recorder(rewritten)
                rec.run(example)
    except Exception as e:
        return None, [f"the model fails on an input of shape {tuple(input_shape)}: {str(e).splitlines()[0][:200]}"]
    finally:
        model.train(was_training)
    modules = dict(gm.named_modules())
    index: dict[str, int] = {}
    nodes: list[GNode] = []
    output = None

    def is_data(a) -> bool:
        return isinstance(a, fx.Node) and a.name in index

    for n in gm.graph.nodes:
        val = rec.values.get(n.name)
        if n.op == "placeholder":
            if index:
                problems.append(f"node {n.name}: the model takes more than one input")
                continue
            index[n.name] = 0
            nodes.append(GNode(n.name, None, [], tuple(input_shape)))
            continue
        if n.op == "output":
            arg = n.args[0]
            if isinstance(arg, (tuple, list)):
                arg = arg[0] if len(arg) == 1 else None
            if not is_data(arg):
                problems.append("the model output is not a single tensor computed from the input")
            elif index[arg.name] >= 0:
                output = index[arg.name]
            continue
        data_args = [a for a in _flat(list(n.args) + list(n.kwargs.values())) if is_data(a)]
        if not data_args:
            continue  # a constant (parameter, shape arithmetic): its value is in rec.values
        where = f"node {n.name} ({n.target if n.op != 'call_module' else type(modules[n.target]).__name__})"
        if not isinstance(val, torch.Tensor) or val.dim() == 0 or val.shape[0] != 2:
            if isinstance(val, torch.Tensor):
                problems.append(f"{where}: output shape {tuple(val.shape)} does not keep the batch dimension")
                continue
            if n.op == "call_method" and n.target == "size" or (n.op == "call_function" and n.target is getattr):
                continue  # x.size() / x.shape: shape arithmetic, handled by shape propagation
            problems.append(f"{where}: produces a non-tensor value from the data")
            continue
        shape = tuple(val.shape[1:])
        op, ins = None, [index[a.name] for a in data_args]
        if any(i < 0 for i in ins):  # fed by an unsupported node: check the op itself, shapes are unknown
            ins = [0] * len(ins)

        def const_of(a, val=val):
            v = rec.values[a.name] if isinstance(a, fx.Node) else a
            return torch.as_tensor(v, dtype=val.dtype, device=val.device) if not isinstance(v, torch.Tensor) else v

        kind = {"call_module": "module", "call_function": "function", "call_method": "method"}.get(n.op)
        if kind is None:
            problems.append(f"{where}: unsupported node kind {n.op}")
            entry = None
        elif kind == "module":
            entry = ops.entry_for_module(modules[n.target])
            if entry is None:
                problems.append(f"{where}: unsupported layer {type(modules[n.target]).__name__}")
        else:
            entry = ops.entry_for_function(n.target) if kind == "function" else ops.entry_for_method(n.target)
            if entry is None:
                t = n.target
                name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
                problems.append(f"{where}: unsupported {kind} {name}")
        if entry is not None and kind is not None:
            call = ops.Call(kind, modules[n.target] if kind == "module" else n.target, tuple(n.args), dict(n.kwargs),
                            is_data, lambda a: rec.values[a.name] if isinstance(a, fx.Node) else a, shape, where,
                            const_of, data_args)
            try:
                op = entry.factory(call)
            except ops.Unsupported as e:
                problems.append(f"{where}: {e}")
            else:
                ins = ins[:op.arity]
        if op is None:
            index[n.name] = -1  # still data, so the nodes that consume it are checked too
            continue
        op.in_shapes = [nodes[i].shape for i in ins]
        op.out_shape = shape
        index[n.name] = len(nodes)
        nodes.append(GNode(n.name, op, ins, shape))
    if problems or output is None:
        if output is None and not problems:
            problems.append("the model has no output computed from its input")
        return None, problems
    return BoundGraph(nodes, output, gm), []


def _flat(args):
    """The leaves of nested argument lists, tuples and dicts (torch.cat([x, y]) holds its data in a list)."""
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        elif isinstance(a, dict):
            yield from _flat(list(a.values()))
        else:
            yield a


def check_model(model: nn.Module, input_shape: tuple) -> list[str]:
    """Pre-flight check: every reason certkit cannot bound ``model`` on inputs of ``input_shape`` (empty if
    none). Lists all unsupported ops, nodes and shape problems at once."""
    try:
        _, problems = _analyse(model, input_shape)
    except CertkitError as e:
        return [str(e)]
    return problems


def build_graph(model: nn.Module, input_shape: tuple, fusing: bool = True) -> BoundGraph:
    """Build the bound graph of ``model`` (an nn.Module or fx GraphModule) for per-sample ``input_shape``;
    ``fusing=False``: without the rewrites that fuse several ops into one (the sound mode, which has rounding rules
    for the parts only).

    Raises:
        CertkitError: listing every unsupported op, node and shape problem.
    """
    graph, problems = _analyse(model, input_shape, fusing)
    if problems or graph is None:
        raise CertkitError("the model cannot be bounded: " + "; ".join(problems))
    return graph
