"""Bound graph construction from an nn.Module (torch.fx) or from certkit's ONNX importer (already fx).

The builder traces the model, runs it once on an example batch to learn every node's per-sample shape and the
value of every node that does not depend on the input (constants), and maps each data node to an op of
``certkit.verifiers.ops``. :func:`check_model` lists every unsupported op, node and shape problem at once.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from certkit.common.errors import CertkitError
from certkit.models.zoo import NormalizeLayer
from certkit.verifiers import ops

_LEAF_TYPES = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten,
               nn.AvgPool2d, nn.Identity, nn.Dropout, NormalizeLayer)
_ADD = {operator.add, torch.add, operator.iadd}
_SUB = {operator.sub, torch.sub, operator.isub}
_MUL = {operator.mul, torch.mul, operator.imul}
_DIV = {operator.truediv, torch.div, operator.itruediv}
_RESHAPE_FNS = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous"}
_ACT_FNS = {torch.relu: ops.ReLU, F.relu: ops.ReLU, torch.sigmoid: ops.Sigmoid, F.sigmoid: ops.Sigmoid,
            torch.tanh: ops.Tanh, F.tanh: ops.Tanh}


class _Tracer(fx.Tracer):
    """Stops at the module types certkit has bound rules for, and at torch's own leaf modules (so that an
    unsupported torch layer such as MaxPool2d shows up by name)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAF_TYPES) or super().is_leaf_module(m, qualname)


@dataclass
class GNode:
    """A data node: ``op`` applied to the outputs of ``inputs`` (indices of earlier nodes)."""

    name: str
    op: ops.Op | None          # None for the input node
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

    def activations(self) -> list[int]:
        """Indices of the activation nodes (ReLU, Sigmoid, Tanh), in topological order."""
        return [i for i, n in enumerate(self.nodes) if isinstance(n.op, ops.Activation)]

    def describe(self) -> str:
        """One line per node: index, name, op with output shape, input indices."""
        return "\n".join(f"{i:3d} {n.name:<24} {n.op!r:<28} <- {n.inputs}" for i, n in enumerate(self.nodes))


class _Recorder(fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.values: dict[str, object] = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def _per_sample_const(c: torch.Tensor, shape: tuple, where: str, problems: list) -> torch.Tensor | None:
    """A constant operand shaped to broadcast over one sample of ``shape`` without changing it."""
    c = torch.as_tensor(c).detach()
    while c.dim() > len(shape):
        if c.shape[0] != 1:
            problems.append(f"{where}: constant of shape {tuple(c.shape)} varies over the batch dimension")
            return None
        c = c[0]
    try:
        if torch.broadcast_shapes(c.shape, shape) != torch.Size(shape):
            raise RuntimeError
    except RuntimeError:
        problems.append(f"{where}: constant of shape {tuple(c.shape)} would change the data shape {shape}")
        return None
    return c


def _trace(model: nn.Module) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return model
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many types for untraceable Python
        raise CertkitError(f"cannot trace the model with torch.fx ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]})") from None
    return fx.GraphModule(model, graph)


def _analyse(model: nn.Module, input_shape: tuple) -> tuple[BoundGraph | None, list[str]]:
    problems: list[str] = []
    gm = _trace(model)
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
        data_args = [a for a in list(n.args) + list(n.kwargs.values()) if is_data(a)]
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

        def const_of(a):
            v = rec.values[a.name] if isinstance(a, fx.Node) else a
            return torch.as_tensor(v, dtype=val.dtype, device=val.device) if not isinstance(v, torch.Tensor) else v

        if n.op == "call_module":
            m = modules[n.target]
            if isinstance(m, nn.Linear):
                op = ops.Linear(m)
            elif isinstance(m, nn.Conv2d):
                if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
                    problems.append(f"{where}: only zero padding given as numbers is supported")
                else:
                    op = ops.Conv2d(m)
            elif isinstance(m, nn.ReLU):
                op = ops.ReLU()
            elif isinstance(m, nn.Sigmoid):
                op = ops.Sigmoid()
            elif isinstance(m, nn.Tanh):
                op = ops.Tanh()
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if m.running_mean is None:
                    problems.append(f"{where}: BatchNorm without running statistics")
                else:
                    op = ops.batchnorm_op(m, shape)
            elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
                op = ops.Reshape()
            elif isinstance(m, nn.AvgPool2d):
                if m.ceil_mode:
                    problems.append(f"{where}: AvgPool2d with ceil_mode is not supported")
                else:
                    op = ops.AvgPool2d(m)
            elif isinstance(m, NormalizeLayer):
                op = ops.ElementwiseAffine(lambda m=m, s=shape: m.scale_shift(s), "Normalize")
            else:
                problems.append(f"{where}: unsupported layer {type(m).__name__}")
        elif n.op in ("call_function", "call_method"):
            t = n.target
            args = list(n.args)
            if n.op == "call_method" and t in _RESHAPE_METHODS or t in _RESHAPE_FNS or \
                    getattr(t, "__name__", "") == "_reshape_batch":
                op = ops.Reshape()
                ins = ins[:1]
            elif t is torch.permute or (n.op == "call_method" and t == "permute"):
                perm = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
                perm = [int(p) for p in perm]
                if perm[0] != 0:
                    problems.append(f"{where}: a permutation must keep the batch dimension first")
                else:
                    op = ops.Permute(tuple(p - 1 for p in perm[1:]))
                    ins = ins[:1]
            elif t in _ACT_FNS:
                op = _ACT_FNS[t]()
            elif t is F.pad:
                pad = args[1] if len(args) > 1 else n.kwargs.get("pad")
                mode = n.kwargs.get("mode", args[2] if len(args) > 2 else "constant")
                value = n.kwargs.get("value", args[3] if len(args) > 3 else 0)
                if mode != "constant" or (value or 0) != 0 or len(pad) != 4:
                    problems.append(f"{where}: only 2-D zero padding is supported")
                else:
                    op = ops.ZeroPad2d(tuple(pad))
            elif t in _ADD | _SUB | _MUL | _DIV or t in (operator.neg, torch.neg):
                if set(n.kwargs) - {"alpha"} or n.kwargs.get("alpha", 1) != 1:
                    problems.append(f"{where}: keyword arguments are not supported")
                elif t in (operator.neg, torch.neg):
                    op = ops.constant_op(-1.0, None, "Neg")
                elif len(data_args) == 2:
                    if t in _ADD | _SUB and rec.values[args[0].name].shape == rec.values[args[1].name].shape:
                        op = ops.Add() if t in _ADD else ops.Sub()
                    else:
                        problems.append(f"{where}: {'product' if t in _MUL | _DIV else 'broadcast sum'} of two "
                                        f"data tensors is not supported (only constants may multiply the data)")
                else:
                    first = is_data(args[0])
                    c = _per_sample_const(const_of(args[1] if first else args[0]), shape, where, problems)
                    if c is not None:
                        if t in _ADD:
                            op = ops.constant_op(None, c, "AddConst")
                        elif t in _SUB:
                            op = ops.constant_op(None, -c, "SubConst") if first else ops.constant_op(-1.0, c, "RSubConst")
                        elif t in _MUL:
                            op = ops.constant_op(c, None, "MulConst")
                        elif first:
                            op = ops.constant_op(1.0 / c, None, "DivConst")
                        else:
                            problems.append(f"{where}: division by a data tensor is not supported")
            else:
                name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
                problems.append(f"{where}: unsupported {'method' if n.op == 'call_method' else 'function'} {name}")
        else:
            problems.append(f"{where}: unsupported node kind {n.op}")
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


def check_model(model: nn.Module, input_shape: tuple) -> list[str]:
    """Pre-flight check: every reason certkit cannot bound ``model`` on inputs of ``input_shape`` (empty if
    none). Lists all unsupported ops, nodes and shape problems at once."""
    try:
        _, problems = _analyse(model, input_shape)
    except CertkitError as e:
        return [str(e)]
    return problems


def build_graph(model: nn.Module, input_shape: tuple) -> BoundGraph:
    """Build the bound graph of ``model`` (an nn.Module or fx GraphModule) for per-sample ``input_shape``.

    Raises:
        CertkitError: listing every unsupported op, node and shape problem.
    """
    graph, problems = _analyse(model, input_shape)
    if problems:
        raise CertkitError("the model cannot be bounded: " + "; ".join(problems))
    return graph
