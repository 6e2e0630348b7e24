"""ONNX -> torch importer (the one certkit uses for certification and bound propagation).

The ONNX graph is read with the ``onnx`` package's protobuf classes (onnx_proto.py: without importing ``onnx``
itself, which takes seconds) and rebuilt as a :class:`torch.fx.GraphModule` made of
standard modules (``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm1d/2d``, ``nn.AvgPool2d``, ``nn.ReLU``,
``nn.Sigmoid``, ``nn.Tanh``) and a few tensor functions (add/sub/mul/div, flatten, reshape), so the bound
engine can walk it like any fx-traced model.

Batch convention: certkit modules always take a batch dimension first. When the ONNX input has rank >= 2 its
first dimension is the batch (fixed 1 or symbolic) and the module accepts any batch size; when it has rank 1
(e.g. ``[1]`` in VNN-COMP's test networks) a batch dimension is added in front.

Supported operators: Gemm, MatMul (constant right operand), Add, Sub, Mul, Div, Conv (2-D), Flatten, Reshape,
BatchNormalization, AveragePool and MaxPool (2-D), Pad (constant zero, spatial dims), Transpose (keeping the batch
dimension first), the elementwise activations of :data:`ELEMENTWISE` (ONNX op type -> torch module), plus Constant,
Identity, Dropout (inference) and constant folding of shape arithmetic (Shape of a constant, Gather, Unsqueeze, Squeeze,
Concat, Cast, Mod). Anything else raises :class:`CertkitError` naming every unsupported node at once.

The importer only makes the network RUN in torch; which ops certkit can BOUND is the op registry's business
(``certkit.verifiers.bounds.ops``): an activation of ELEMENTWISE without a registered op imports fine (certify works on
it)
and is listed by ``certkit verify --mode check``.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from certkit.common.errors import CertkitError
from certkit.models.onnx_proto import attribute_value, parse_model, read_bytes, to_array

#: Elementwise ONNX activations: op type -> (attributes -> the torch module computing it), ONNX defaults applied.
ELEMENTWISE: dict = {
    "Relu": lambda a: nn.ReLU(),
    "LeakyRelu": lambda a: nn.LeakyReLU(float(a.get("alpha", 0.01))),
    "Sigmoid": lambda a: nn.Sigmoid(),
    "Tanh": lambda a: nn.Tanh(),
    "Softplus": lambda a: nn.Softplus(),
    "Softsign": lambda a: nn.Softsign(),
    "Elu": lambda a: nn.ELU(float(a.get("alpha", 1.0))),
    "Selu": lambda a: nn.SELU(),
    "HardSwish": lambda a: nn.Hardswish(),
    "Abs": lambda a: _Fn(torch.abs),
    "Neg": lambda a: _Fn(torch.neg),
    "Exp": lambda a: _Fn(torch.exp),
    "Sin": lambda a: _Fn(torch.sin),
    "Cos": lambda a: _Fn(torch.cos),
    "Log": lambda a: _Fn(torch.log),
    "Sqrt": lambda a: _Fn(torch.sqrt),
    "Reciprocal": lambda a: _Fn(torch.reciprocal),
    "Sign": lambda a: _Fn(torch.sign),
    "Floor": lambda a: _Fn(torch.floor),
    "Erf": lambda a: _Fn(torch.erf),
    "Gelu": lambda a: nn.GELU(approximate=_text(a.get("approximate", "none"))),
}
SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "Flatten", "Reshape", "BatchNormalization",
                 "AveragePool", "MaxPool", "Pad", "Transpose", "Constant", "Identity", "Dropout", "Shape", "Gather",
                 "Unsqueeze", "Squeeze", "Concat", "Cast", "Clip", "Slice", "Split", "ReduceMean", "ReduceSum",
                 "ReduceMax", "ReduceMin",
                 "GlobalAveragePool", "ConvTranspose", "Softmax", "LogSoftmax", "Resize", "Upsample",
                 "Pow", "ConstantOfShape", "Equal", "Where", "Expand", "Max", "Min", "Mod") + tuple(ELEMENTWISE)
_BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
_NP_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power,
              "Max": np.maximum, "Min": np.minimum}


class _Fn(nn.Module):
    """A module wrapping an elementwise torch function (for ONNX ops that have no torch module)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.fn.__name__


@dataclass
class OnnxModel:
    """Result of :func:`load_onnx`.

    Attributes:
        module: fx GraphModule mapping (B, *sample_shape) float32 to (B, *output sample shape).
        input_name: name of the ONNX graph input (for onnxruntime).
        onnx_input_shape: the declared ONNX input shape with the batch dim set to 1 (rank-1 inputs as declared).
        sample_shape: shape of one input, without batch dim.
        batch_added: True when the ONNX input has rank 1 and certkit added the batch dim.
        num_outputs: number of output values per input (logits, or Y_j of a VNN-LIB property).
        path: the file read.
        output_window: (offset, width) when ``module`` computes only the file's output columns offset ..
            offset + width - 1 (:func:`certkit.models.output_cone.restrict_outputs`); onnxruntime's outputs are then
            cut to the same columns. None: all of them.
    """

    module: fx.GraphModule
    input_name: str
    onnx_input_shape: tuple[int, ...]
    sample_shape: tuple[int, ...]
    batch_added: bool
    num_outputs: int
    path: str
    _session: Any = field(default=None, repr=False)  # onnxruntime.InferenceSession, created on first use
    output_window: tuple[int, int] | None = None

    def run_onnxruntime(self, x: torch.Tensor) -> np.ndarray:
        """Evaluate the ORIGINAL ONNX file with onnxruntime on a certkit batch (B, *sample_shape).

        Used as the independent check of converted networks and of counterexamples. Rows are run one at a
        time because VNN-COMP networks often fix the batch size to 1. Returns (B, num_outputs) float32 (the
        ``output_window`` columns when one is set).
        """
        import onnxruntime as ort

        if self._session is None:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            source = read_bytes(self.path) if self.path.endswith(".gz") else self.path
            self._session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        arr = x.detach().cpu().numpy().astype(np.float32)
        outs = [self._session.run(None, {self.input_name: row.reshape(self.onnx_input_shape)})[0].reshape(-1)
                for row in arr]
        if self.output_window is not None:
            offset, width = self.output_window
            outs = [o[offset:offset + width] for o in outs]
        return np.stack(outs)

    def check_against_onnxruntime(self, x: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-4) -> None:
        """Refuse a conversion that disagrees with onnxruntime on the points x (B, *sample_shape).

        Raises:
            CertkitError: some output differs by more than atol + rtol * |y_onnxruntime| + 1e-5 * the largest
                |output| of its row (float32 sums taken in another order differ by a few ulps of the largest terms:
                an output that cancels large values, as power-flow equations do, carries their rounding).
        """
        ours = self.module(x).detach().reshape(x.shape[0], -1).numpy()
        ref = self.run_onnxruntime(x)
        scale = np.abs(ref).max(axis=1, keepdims=True)
        if not (np.abs(ours - ref) <= atol + rtol * np.abs(ref) + 1e-5 * scale).all():
            raise CertkitError(f"{self.path}: certkit's converted network differs from onnxruntime by "
                               f"{np.abs(ours - ref).max():.3g}; refusing to verify")


def _text(v) -> str:
    """An ONNX string attribute (bytes) as str."""
    return v.decode() if isinstance(v, bytes) else str(v)


def _attrs(node) -> dict:
    return {a.name: attribute_value(a) for a in node.attribute}


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


@dataclass
class _Transposed:
    """A rank-2 data tensor (B, n) transposed to (n, B): the batch dimension moved, pending the Transpose back."""

    node: fx.Node


class _Builder:
    """Walks ONNX nodes in order and emits fx nodes; constants stay numpy arrays until used."""

    def __init__(self, model, path: str):
        self.path = path
        self.graph = model.graph
        self.opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
        self.dims = {vi.name: _dims(vi) for vi in list(self.graph.value_info) + list(self.graph.input)
                     + list(self.graph.output)}
        self.ranks = {name: len(d) for name, d in self.dims.items()}
        self.env: dict[str, object] = {i.name: to_array(i) for i in self.graph.initializer}
        self.consumers: dict[str, int] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        self.root = nn.Module()
        self.fx = fx.Graph()
        self.counter = 0
        self.linear_of: dict[str, str] = {}  # fx node name -> submodule name of a bias-less Linear

    # -- helpers ---------------------------------------------------------------------------------------
    def add_module(self, mod: nn.Module, stem: str) -> str:
        self.counter += 1
        name = f"{stem}_{self.counter}"
        self.root.add_module(name, mod)
        return name

    def const_node(self, arr: np.ndarray) -> fx.Node:
        """A buffer holding ``arr`` (float32; integer arrays, such as Gather indices, keep int64)."""
        self.counter += 1
        name = f"const_{self.counter}"
        dtype = np.int64 if np.issubdtype(np.asarray(arr).dtype, np.integer) else np.float32
        self.root.register_buffer(name, torch.as_tensor(np.array(arr, dtype=dtype)))
        return self.fx.get_attr(name)

    def err(self, node, msg: str) -> CertkitError:
        return CertkitError(f"{self.path}: ONNX node {node.name or node.op_type} ({node.op_type}): {msg}")

    # -- entry -----------------------------------------------------------------------------------------
    def build(self) -> OnnxModel:
        unsupported = [f"{n.op_type} (node {n.name or '?'})" for n in self.graph.node if n.op_type not in SUPPORTED_OPS]
        if unsupported:
            raise CertkitError(f"{self.path}: unsupported ONNX op(s): {', '.join(unsupported)}; certkit supports "
                               f"{', '.join(SUPPORTED_OPS)}")
        inputs = [i for i in self.graph.input if i.name not in self.env]
        if len(inputs) != 1:
            raise CertkitError(f"{self.path}: expected exactly one graph input, found {[i.name for i in inputs]}")
        if len(self.graph.output) < 1:
            raise CertkitError(f"{self.path}: the graph has no output")
        inp = inputs[0]
        dims = _dims(inp)
        if not dims:
            raise CertkitError(f"{self.path}: input {inp.name} has no declared shape")
        self.batch_added = len(dims) == 1
        if self.batch_added:
            if dims[0] is None:
                raise CertkitError(f"{self.path}: rank-1 input {inp.name} needs a fixed size")
            sample, onnx_shape = (dims[0],), (dims[0],)
        else:
            if any(d is None for d in dims[1:]):
                raise CertkitError(f"{self.path}: input {inp.name} has symbolic non-batch dims {dims}")
            if dims[0] not in (None, 1) and self._rebatched(inp.name, dims):
                # no batch dim: the whole input is one sample, and its only consumer reshapes it to (1, ...)
                sample, onnx_shape = tuple(dims), tuple(dims)
            elif dims[0] not in (None, 1):
                raise CertkitError(f"{self.path}: input batch dimension must be 1 or symbolic, got {dims[0]} (an "
                                   f"input without a batch dim is read when its only use is a Reshape to (1, ...))")
            else:
                sample, onnx_shape = tuple(dims[1:]), (1,) + tuple(dims[1:])
        self.sample = sample
        self.env[inp.name] = self.fx.placeholder("x")
        for node in self.graph.node:
            self.emit(node)
        out = self.env.get(self.graph.output[0].name)
        if isinstance(out, _Transposed):
            raise CertkitError(f"{self.path}: the graph output has its batch dimension moved (Transpose [1, 0])")
        if not isinstance(out, fx.Node):
            raise CertkitError(f"{self.path}: the graph output does not depend on the input")
        self.fx.output(out)
        gm = fx.GraphModule(self.root, self.fx)
        gm.eval()
        try:
            with torch.no_grad():
                y = gm(torch.zeros((2,) + tuple(sample)))
        except RuntimeError as e:
            raise CertkitError(f"{self.path}: converted network fails on an input of shape {sample}: "
                               f"{str(e).splitlines()[0]}") from None
        return OnnxModel(gm, inp.name, tuple(onnx_shape), tuple(sample), self.batch_added,
                         int(np.prod(y.shape[1:])) if y.dim() > 1 else 1, self.path)

    def emit(self, node) -> None:
        op, a = node.op_type, _attrs(node)
        ins = [self.env[i] if i else None for i in node.input]
        for name, v in zip(node.input, ins):
            if name and v is None and name not in self.env:
                raise self.err(node, f"input {name} is not produced by any earlier node")
        if op == "Constant":
            if "value" not in a:
                raise self.err(node, "only the 'value' form of Constant is supported")
            self.env[node.output[0]] = to_array(a["value"])
            return
        if op in ("Identity", "Dropout"):
            self.env[node.output[0]] = ins[0]
            if op == "Dropout" and len(node.output) > 1 and node.output[1]:
                raise self.err(node, "the Dropout mask output is not supported")
            return
        if op == "Split":
            for name, piece in zip(node.output, self._split(node, a, ins)):
                if name:
                    self.env[name] = piece
            return
        if all(isinstance(v, np.ndarray) or v is None for v in ins):
            self.env[node.output[0]] = np.asarray(self.fold(node, op, a, ins))  # numpy scalars too
            return
        if any(isinstance(v, _Transposed) for v in ins) and op not in ("MatMul", "Transpose"):
            raise self.err(node, "Transpose with perm [1, 0] moves the batch dimension; certkit supports it only "
                                 "around a MatMul with a constant left operand (Transpose, MatMul, Transpose)")
        x = ins[0]
        if not isinstance(x, (fx.Node, _Transposed)) and op not in _BINARY and op not in ("MatMul", "Concat", "Max",
                                                                                           "Min"):
            raise self.err(node, "the first input must be the data tensor")
        if op in ELEMENTWISE:
            if op == "Selu" and (abs(a.get("alpha", 1.67326) - 1.67326) > 1e-4
                                 or abs(a.get("gamma", 1.0507) - 1.0507) > 1e-4):
                raise self.err(node, "Selu with non-default alpha/gamma is not supported")
            module = ELEMENTWISE[op](a)
            args: tuple[Any, ...] = (x,)
            if isinstance(module, _Fn):  # a torch function (torch.abs, ...): bounded by its function entry
                self.env[node.output[0]] = self.fx.call_function(module.fn, args)
            else:
                self.env[node.output[0]] = self.fx.call_module(self.add_module(module, op.lower()), args)
            return
        out = getattr(self, f"op_{op}", None)
        if out is None:
            raise self.err(node, "this op is only supported on constant inputs")
        self.env[node.output[0]] = out(node, a, ins)

    # -- constant folding ------------------------------------------------------------------------------
    def fold(self, node, op, a, ins):
        v = ins[0]
        if op in _NP_BINARY:
            return _NP_BINARY[op](v, ins[1])
        if op == "Mod":   # shape arithmetic (torch exports unflatten with it): fmod=1 takes the dividend's sign
            return np.fmod(v, ins[1]) if a.get("fmod", 0) else np.mod(v, ins[1])
        if op == "Shape":
            return np.array(v.shape, dtype=np.int64)
        if op == "Gather":
            return np.take(v, ins[1].astype(np.int64), axis=a.get("axis", 0))
        if op == "Unsqueeze":
            axes = a.get("axes", ins[1].tolist() if len(ins) > 1 and ins[1] is not None else [])
            for ax in sorted(int(t) for t in axes):
                v = np.expand_dims(v, ax)
            return v
        if op == "Squeeze":
            axes = a.get("axes", ins[1].tolist() if len(ins) > 1 and ins[1] is not None else None)
            return np.squeeze(v, axis=tuple(int(t) for t in axes) if axes is not None else None)
        if op == "Concat":
            return np.concatenate([np.atleast_1d(t) for t in ins], axis=a.get("axis", 0))
        if op == "Cast":
            return v
        if op == "MatMul":
            return np.matmul(v, ins[1])
        if op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"):
            axes = a.get("axes", ins[1] if len(ins) > 1 and ins[1] is not None else None)
            axes = None if axes is None else tuple(int(t) for t in np.asarray(axes).reshape(-1))
            if axes == () and a.get("noop_with_empty_axes", 0):
                return v
            fn = {"ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceMax": np.max, "ReduceMin": np.min}[op]
            return fn(v, axis=axes or None, keepdims=bool(a.get("keepdims", 1)))
        if op == "Reshape":
            return v.reshape([d if d != 0 else v.shape[i] for i, d in enumerate(ins[1].astype(np.int64))])
        if op == "Flatten":
            ax = a.get("axis", 1)
            return v.reshape(int(np.prod(v.shape[:ax])), -1)
        if op in ELEMENTWISE:
            return ELEMENTWISE[op](a)(torch.as_tensor(v)).numpy()
        if op == "Transpose":
            return np.transpose(v, a.get("perm"))
        if op == "ConstantOfShape":
            fill = to_array(a["value"]).reshape(-1) if "value" in a else np.zeros(1, np.float32)
            return np.full(tuple(int(d) for d in np.asarray(v).reshape(-1)), fill[0], dtype=fill.dtype)
        if op == "Slice":
            starts, ends, axes, steps = self._slice_args(node, a, ins)
            index: list[Any] = [slice(None)] * v.ndim
            for st, en, ax, sp in zip(starts, ends, axes, steps):
                index[ax % v.ndim] = slice(int(st), int(en), int(sp))
            return v[tuple(index)]
        if op == "Equal":
            return np.equal(v, ins[1])
        if op == "Where":
            return np.where(v, ins[1], ins[2])
        if op == "Expand":
            shape = np.broadcast_shapes(np.shape(v), tuple(int(d) for d in np.asarray(ins[1]).reshape(-1)))
            return np.broadcast_to(v, shape).copy()
        raise self.err(node, "constant folding of this op is not supported")

    # -- ops on the data tensor ------------------------------------------------------------------------
    def _linear(self, node, x: fx.Node, weight_out_in: np.ndarray, bias) -> fx.Node:
        out_f, in_f = weight_out_in.shape
        lin = nn.Linear(in_f, out_f, bias=bias is not None)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(np.array(weight_out_in, dtype=np.float32)))
            if bias is not None:
                lin.bias.copy_(torch.as_tensor(np.broadcast_to(np.array(bias, dtype=np.float32), (out_f,)).copy()))
        name = self.add_module(lin, "linear")
        n = self.fx.call_module(name, (x,))
        if bias is None:
            self.linear_of[n.name] = name
        return n

    def op_Gemm(self, node, a, ins):
        x, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        if not isinstance(b, np.ndarray) or (c is not None and not isinstance(c, np.ndarray)):
            raise self.err(node, "Gemm needs constant B and C")
        if a.get("transA", 0):
            raise self.err(node, "transA=1 is not supported")
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        w = alpha * (b if a.get("transB", 0) else b.T)
        bias = None if c is None else beta * np.asarray(c).reshape(-1)
        if bias is not None and bias.size not in (1, w.shape[0]):
            raise self.err(node, f"bias of size {bias.size} does not broadcast to {w.shape[0]} outputs")
        return self._linear(node, x, w, bias)

    def op_MatMul(self, node, a, ins):
        x, w = ins
        if isinstance(w, _Transposed) and isinstance(x, np.ndarray) and x.ndim == 2:
            return _Transposed(self._linear(node, w.node, x, None))   # W @ x^T = (x W^T)^T
        if isinstance(x, fx.Node) and isinstance(w, np.ndarray):
            if w.ndim == 1:  # x @ v: a dot product over the last axis, which disappears
                shape = tuple(self._evaluate(x).shape)
                if self.batch_added or len(shape) < 3:
                    raise self.err(node, "MatMul of a (batch, n) tensor with a vector drops the sample dimension")
                y = self._linear(node, x, w.reshape(1, -1), None)
                return self.fx.call_function(reshape_batch, (y, shape[1:-1]))
            if w.ndim != 2:
                raise self.err(node, f"MatMul with a constant of rank {w.ndim} is not supported (need 1-D or 2-D)")
            return self._linear(node, x, w.T, None)
        if isinstance(x, fx.Node) and isinstance(w, fx.Node):
            return self.fx.call_function(torch.matmul, (x, w))
        if isinstance(w, fx.Node) and isinstance(x, np.ndarray) and x.ndim == 2 and self.batch_added:
            return self._linear(node, w, x, None)  # W @ v on a rank-1 sample v is Linear(weight=W)
        raise self.err(node, "MatMul with a constant left operand is only supported on rank-1 inputs")

    def op_Add(self, node, a, ins):
        return self._binary(node, "Add", ins)

    def op_Sub(self, node, a, ins):
        return self._binary(node, "Sub", ins)

    def op_Mul(self, node, a, ins):
        return self._binary(node, "Mul", ins)

    def op_Div(self, node, a, ins):
        return self._binary(node, "Div", ins)

    def _binary(self, node, op, ins):
        x, y = ins
        if op == "Add" and isinstance(x, np.ndarray) and isinstance(y, fx.Node):
            x, y = y, x  # addition commutes; put the data tensor first
        # MatMul + Add(bias) -> one Linear with bias, when the MatMul output feeds only this Add.
        if op == "Add" and isinstance(x, fx.Node) and isinstance(y, np.ndarray) and x.name in self.linear_of \
                and self.consumers.get(node.input[0 if isinstance(ins[0], fx.Node) else 1], 0) == 1:
            lin = getattr(self.root, self.linear_of[x.name])
            if y.size in (1, lin.out_features) and (y.ndim <= 1 or all(s == 1 for s in y.shape[:-1])):
                lin.bias = nn.Parameter(torch.as_tensor(np.broadcast_to(
                    np.array(y, dtype=np.float32).reshape(-1), (lin.out_features,)).copy()))
                del self.linear_of[x.name]
                return x
        args = tuple(self.const_node(v) if isinstance(v, np.ndarray) else v for v in (x, y))
        return self.fx.call_function(_BINARY[op], args)

    def _pads(self, node, a, nd=2):
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise self.err(node, "auto_pad SAME_* is not supported; export with explicit pads")
        pads = list(a.get("pads", [0] * 2 * nd))
        return pads[:nd], pads[nd:]

    def op_Conv(self, node, a, ins):
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        if not isinstance(w, np.ndarray) or (b is not None and not isinstance(b, np.ndarray)):
            raise self.err(node, "Conv needs constant weights")
        if w.ndim not in (3, 4):
            raise self.err(node, f"only 1-D and 2-D convolutions are supported (weight rank {w.ndim})")
        groups = int(a.get("group", 1))
        if w.ndim == 3:
            return self._conv1d(node, a, x, w, b, groups)
        begin, end = self._pads(node, a)
        conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]),
                         stride=tuple(a.get("strides", [1, 1])), dilation=tuple(a.get("dilations", [1, 1])),
                         groups=groups, bias=b is not None, padding=tuple(begin) if begin == end else 0)
        with torch.no_grad():
            conv.weight.copy_(torch.as_tensor(np.array(w, dtype=np.float32)))
            if b is not None:
                conv.bias.copy_(torch.as_tensor(np.array(b, dtype=np.float32)))
        if begin != end:  # asymmetric padding: explicit zero pad (left, right, top, bottom) first
            x = self.fx.call_function(torch.nn.functional.pad, (x, (begin[1], end[1], begin[0], end[0])))
        return self.fx.call_module(self.add_module(conv, "conv"), (x,))

    def _conv1d(self, node, a, x, w, b, groups):
        """Conv with rank-3 weights (C_out, C_in / groups, k) on (N, C, L) signals: nn.Conv1d."""
        begin, end = self._pads(node, a, nd=1)
        conv = nn.Conv1d(w.shape[1] * groups, w.shape[0], int(w.shape[2]), stride=int(a.get("strides", [1])[0]),
                         dilation=int(a.get("dilations", [1])[0]), groups=groups, bias=b is not None,
                         padding=int(begin[0]) if begin == end else 0)
        with torch.no_grad():
            conv.weight.copy_(torch.as_tensor(np.array(w, dtype=np.float32)))
            if b is not None:
                conv.bias.copy_(torch.as_tensor(np.array(b, dtype=np.float32)))
        if begin != end:  # asymmetric padding: explicit zero pad (left, right) first
            x = self.fx.call_function(torch.nn.functional.pad, (x, (begin[0], end[0])))
        return self.fx.call_module(self.add_module(conv, "conv"), (x,))

    def op_BatchNormalization(self, node, a, ins):
        x, scale, bias, mean, var = ins[:5]
        if not all(isinstance(v, np.ndarray) for v in (scale, bias, mean, var)):
            raise self.err(node, "BatchNormalization needs constant parameters")
        if len(node.output) > 1 and any(node.output[1:]):
            raise self.err(node, "training-mode BatchNormalization is not supported")
        rank = self.ranks.get(node.input[0]) or self._evaluate(x).dim()
        bn = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(scale.size, eps=float(a.get("epsilon", 1e-5)))
        with torch.no_grad():
            bn.weight.copy_(torch.as_tensor(np.array(scale, dtype=np.float32)))
            bn.bias.copy_(torch.as_tensor(np.array(bias, dtype=np.float32)))
            bn.running_mean.copy_(torch.as_tensor(np.array(mean, dtype=np.float32)))
            bn.running_var.copy_(torch.as_tensor(np.array(var, dtype=np.float32)))
        bn.eval()
        return self.fx.call_module(self.add_module(bn, "bn"), (x,))

    def op_AveragePool(self, node, a, ins):
        k = tuple(a["kernel_shape"])
        if len(k) != 2:
            raise self.err(node, "only 2-D average pooling is supported")
        begin, end = self._pads(node, a)
        if begin != end:
            raise self.err(node, "asymmetric pads are not supported for AveragePool")
        pool = nn.AvgPool2d(k, stride=tuple(a.get("strides", [1, 1])), padding=tuple(begin),
                            ceil_mode=bool(a.get("ceil_mode", 0)),
                            count_include_pad=bool(a.get("count_include_pad", 0)))
        return self.fx.call_module(self.add_module(pool, "avgpool"), (ins[0],))

    def op_MaxPool(self, node, a, ins):
        k = tuple(a["kernel_shape"])
        if len(k) != 2:
            raise self.err(node, "only 2-D max pooling is supported")
        if len(node.output) > 1 and node.output[1]:
            raise self.err(node, "MaxPool's Indices output is not supported")
        begin, end = self._pads(node, a)
        if begin != end:
            raise self.err(node, "asymmetric pads are not supported for MaxPool")
        if a.get("storage_order", 0):
            raise self.err(node, "MaxPool with storage_order 1 is not supported")
        pool = nn.MaxPool2d(k, stride=tuple(a.get("strides", [1, 1])), padding=tuple(begin),
                            dilation=tuple(a.get("dilations", [1, 1])), ceil_mode=bool(a.get("ceil_mode", 0)))
        return self.fx.call_module(self.add_module(pool, "maxpool"), (ins[0],))

    def op_Clip(self, node, a, ins):
        bounds = []
        for i, key in ((1, "min"), (2, "max")):       # opset >= 11: constant inputs; opset 6: attributes
            v = ins[i] if len(ins) > i else None
            if isinstance(v, fx.Node):
                raise self.err(node, f"Clip with a {key} computed from the input is not supported")
            bounds.append(float(np.asarray(v).reshape(-1)[0]) if v is not None else
                          (float(a[key]) if key in a else None))
        return self.fx.call_function(torch.clamp, (ins[0],), {"min": bounds[0], "max": bounds[1]})

    def _slice_args(self, node, a, ins):
        """(starts, ends, axes, steps) of a Slice node (inputs from opset 10, attributes before)."""
        if len(ins) > 1:                                  # opset >= 10: starts, ends, axes, steps as constant inputs
            if any(isinstance(v, fx.Node) for v in ins[1:]):
                raise self.err(node, "Slice with starts/ends computed from the input is not supported")
            starts, ends = (np.asarray(v).reshape(-1).tolist() for v in ins[1:3])
            axes = np.asarray(ins[3]).reshape(-1).tolist() if len(ins) > 3 and ins[3] is not None else None
            steps = np.asarray(ins[4]).reshape(-1).tolist() if len(ins) > 4 and ins[4] is not None else None
        else:                                             # opset 1-9: attributes
            starts, ends, axes, steps = list(a["starts"]), list(a["ends"]), a.get("axes"), None
        axes = [int(ax) for ax in (range(len(starts)) if axes is None else axes)]
        steps = [1] * len(starts) if steps is None else steps
        return starts, ends, axes, steps

    def _evaluate(self, x: fx.Node) -> torch.Tensor:
        """The value of data node ``x`` on one zero input (the graph built so far, cut at ``x``)."""
        g = fx.Graph()
        env: dict = {}
        for n in self.fx.nodes:
            env[n] = g.node_copy(n, lambda m: env[m])
            if n is x:
                break
        g.output(env[x])
        with torch.no_grad():
            return fx.GraphModule(self.root, g)(torch.zeros((1,) + tuple(self.sample)))

    def _rebatched(self, name: str, dims: list) -> bool:
        """Whether the graph input ``name`` (fixed shape ``dims``, first dim not 1) is used only by Reshapes to a
        constant (1, ...) or (-1, ...) of the same size: then the input is one sample without a batch dim."""
        users = [n for n in self.graph.node if name in n.input]
        consts = {i.name: i for i in self.graph.initializer}
        consts.update({n.output[0]: n.attribute[0].t for n in self.graph.node
                       if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
        if not users or any(n.op_type != "Reshape" or n.input[0] != name or n.input[1] not in consts for n in users):
            return False
        for n in users:
            t = [int(v) for v in to_array(consts[n.input[1]]).reshape(-1)]
            if not t or t[0] not in (1, -1) or any(v <= 0 for v in t[1:]) or math.prod(t[1:]) != math.prod(dims):
                return False
        return True

    def op_Slice(self, node, a, ins):
        if self.batch_added:
            raise self.err(node, "Slice on a rank-1 network input is not supported")
        starts, ends, axes, steps = self._slice_args(node, a, ins)
        if any(ax < 0 for ax in axes):
            rank = self._evaluate(ins[0]).dim()
            axes = [ax % rank for ax in axes]
        index: list[Any] = [slice(None)] * (max(axes) + 1)
        big = 2 ** 62                                     # ONNX writes "to the end" as INT64_MAX
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            index[ax] = slice(int(st), None if int(en) >= big else int(en), int(sp))
        return self.fx.call_function(operator.getitem, (ins[0], tuple(index)))

    def _split(self, node, a, ins) -> list:
        """The outputs of a Split node as slices of its input along ``axis``: sizes from the ``split`` input (opset
        13+), the ``split`` attribute (before 13), or equal parts for each output (``num_outputs`` from opset 18:
        the last part may be smaller)."""
        x = ins[0]
        if isinstance(x, fx.Node) and self.batch_added:
            raise self.err(node, "Split on a rank-1 network input is not supported")
        shape = tuple(np.shape(x)) if isinstance(x, np.ndarray) else tuple(self._evaluate(x).shape)
        axis = int(a.get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        if isinstance(x, fx.Node) and axis == 0:
            raise self.err(node, "Split along the batch dimension is not supported")
        sizes = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("split")
        if isinstance(sizes, fx.Node):
            raise self.err(node, "Split with sizes computed from the input is not supported")
        if sizes is None:
            parts = int(a.get("num_outputs", len(node.output)))
            step = -(-shape[axis] // parts)
            sizes = [min(step, shape[axis] - k * step) for k in range(parts)]
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if sum(sizes) != shape[axis] or len(sizes) != len(node.output) or min(sizes) < 0:
            raise self.err(node, f"split sizes {sizes} do not fit axis {axis} of length {shape[axis]} into "
                                 f"{len(node.output)} outputs")
        out, start = [], 0
        for size in sizes:
            index: list[Any] = [slice(None)] * (axis + 1)
            index[axis] = slice(start, start + size)
            start += size
            out.append(x[tuple(index)] if isinstance(x, np.ndarray) else
                       self.fx.call_function(operator.getitem, (x, tuple(index))))
        return out

    def _reduce(self, node, a, ins, fn):
        axes = a.get("axes", ins[1] if len(ins) > 1 else None)    # an attribute before opset 13 (18 for Mean)
        if isinstance(axes, fx.Node):
            raise self.err(node, f"{node.op_type} with axes computed from the input is not supported")
        if axes is None:
            if a.get("noop_with_empty_axes", 0):
                return ins[0]
            raise self.err(node, f"{node.op_type} over every axis (the batch included) is not supported")
        if self.batch_added:
            raise self.err(node, f"{node.op_type} on a rank-1 network input is not supported")
        dims = [int(v) for v in np.asarray(axes).reshape(-1)]
        return self.fx.call_function(fn, (ins[0], dims, bool(a.get("keepdims", 1))))

    def op_ReduceMean(self, node, a, ins):
        return self._reduce(node, a, ins, torch.mean)

    def op_ReduceSum(self, node, a, ins):
        return self._reduce(node, a, ins, torch.sum)

    def op_ReduceMax(self, node, a, ins):
        return self._reduce(node, a, ins, torch.amax)

    def op_ReduceMin(self, node, a, ins):
        return self._reduce(node, a, ins, torch.amin)

    def op_GlobalAveragePool(self, node, a, ins):
        return self.fx.call_function(torch.mean, (ins[0], [2, 3], True))

    def op_Gather(self, node, a, ins):
        idx = ins[1]
        if not isinstance(idx, np.ndarray) or idx.ndim > 1:
            raise self.err(node, "Gather on the data needs constant 0-D or 1-D indices")
        axis = int(a.get("axis", 0))
        if axis < 0:
            rank = self.ranks.get(node.input[0])
            axis += rank if rank is not None else self._evaluate(ins[0]).dim()
        if axis == 0:
            raise self.err(node, "Gather along the batch dimension is not supported")
        if idx.ndim == 0:  # one index: the axis is dropped, as x[:, ..., i]
            return self.fx.call_function(operator.getitem, (ins[0], (slice(None),) * axis + (int(idx),)))
        return self.fx.call_function(torch.index_select, (ins[0], axis, self.const_node(idx.astype(np.int64))))

    def _extreme(self, node, ins, fn, bound):
        if len(ins) != 2:
            raise self.err(node, "Max / Min of more than two inputs is not supported")
        x, y = ins if isinstance(ins[0], fx.Node) else (ins[1], ins[0])
        if isinstance(y, fx.Node):
            return self.fx.call_function(fn, (x, y))
        if np.asarray(y).size != 1:
            raise self.err(node, "Max / Min with a non-scalar constant is not supported")
        return self.fx.call_function(torch.clamp, (x,), {bound: float(np.asarray(y).reshape(-1)[0])})

    def op_Max(self, node, a, ins):
        return self._extreme(node, ins, torch.maximum, "min")

    def op_Min(self, node, a, ins):
        return self._extreme(node, ins, torch.minimum, "max")

    def op_Pow(self, node, a, ins):
        if not isinstance(ins[1], np.ndarray) or ins[1].size != 1:
            raise self.err(node, "Pow needs a constant scalar exponent")
        return self.fx.call_function(torch.pow, (ins[0], float(ins[1].reshape(-1)[0])))

    def op_ConvTranspose(self, node, a, ins):
        w = ins[1]
        b = ins[2] if len(ins) > 2 else None
        if not isinstance(w, np.ndarray) or (b is not None and not isinstance(b, np.ndarray)) or w.ndim != 4:
            raise self.err(node, "only 2-D ConvTranspose with constant weights is supported")
        if "output_shape" in a:
            raise self.err(node, "ConvTranspose with output_shape is not supported; export with pads")
        begin, end = self._pads(node, a)
        if begin != end:
            raise self.err(node, "asymmetric pads are not supported for ConvTranspose")
        groups = int(a.get("group", 1))
        conv = nn.ConvTranspose2d(w.shape[0], w.shape[1] * groups, tuple(w.shape[2:]),
                                  stride=tuple(a.get("strides", [1, 1])), padding=tuple(begin),
                                  output_padding=tuple(a.get("output_padding", [0, 0])), groups=groups,
                                  bias=b is not None, dilation=tuple(a.get("dilations", [1, 1])))
        with torch.no_grad():
            conv.weight.copy_(torch.as_tensor(np.array(w, dtype=np.float32)))
            if b is not None:
                conv.bias.copy_(torch.as_tensor(np.array(b, dtype=np.float32)))
        return self.fx.call_module(self.add_module(conv, "convtranspose"), (ins[0],))

    def _softmax(self, node, a, ins, fn):
        rank = self.ranks.get(node.input[0]) or self._evaluate(ins[0]).dim()
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
        if rank is not None and axis < 0:
            axis += rank
        if self.opset < 13 and (rank is None or axis != rank - 1):   # older opsets flatten the dims from axis on
            raise self.err(node, "Softmax before opset 13 is supported over the last axis only")
        return self.fx.call_function(fn, (ins[0], axis))

    def op_Softmax(self, node, a, ins):
        return self._softmax(node, a, ins, torch.softmax)

    def op_LogSoftmax(self, node, a, ins):
        return self._softmax(node, a, ins, torch.log_softmax)

    def _resize(self, node, mode, coord, nearest_mode, scales, sizes, x):
        mode = _text(mode)
        if mode == "nearest":
            if _text(coord) not in ("asymmetric", "half_pixel") or \
                    (_text(coord) == "asymmetric" and _text(nearest_mode) != "floor"):
                raise self.err(node, "nearest Resize is supported with asymmetric/floor or half_pixel coordinates")
            kw: dict = {"mode": "nearest"}
        elif mode in ("linear", "bilinear"):
            if _text(coord) not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
                raise self.err(node, f"linear Resize with coordinate_transformation_mode {_text(coord)} is not "
                                     f"supported")
            kw = {"mode": "bilinear", "align_corners": _text(coord) == "align_corners"}
        else:
            raise self.err(node, f"Resize mode {mode} is not supported (nearest and linear are)")
        if sizes is not None and np.asarray(sizes).size:
            kw["size"] = tuple(int(v) for v in np.asarray(sizes).reshape(-1)[2:])
        elif scales is not None and np.asarray(scales).size:
            sc = [float(v) for v in np.asarray(scales).reshape(-1)]
            if sc[:2] != [1.0, 1.0] or len(sc) != 4:
                raise self.err(node, "Resize must keep the batch and channel dims and scale two spatial dims")
            if mode == "nearest" and _text(coord) == "half_pixel" and any(v != int(v) for v in sc[2:]):
                raise self.err(node, "half_pixel nearest Resize needs integer scales")
            kw["scale_factor"] = tuple(sc[2:])
        else:
            raise self.err(node, "Resize needs constant scales or sizes")
        return self.fx.call_function(torch.nn.functional.interpolate, (x,), kw)

    def op_Resize(self, node, a, ins):
        if any(isinstance(v, fx.Node) for v in ins[1:]):
            raise self.err(node, "Resize with scales or sizes computed from the input is not supported")
        scales = ins[2] if len(ins) > 2 else None
        sizes = ins[3] if len(ins) > 3 else None
        if self.opset < 11:
            scales = ins[1] if len(ins) > 1 else None
        default_coord = "half_pixel" if self.opset >= 11 else "asymmetric"
        return self._resize(node, a.get("mode", "nearest"), a.get("coordinate_transformation_mode", default_coord),
                            a.get("nearest_mode", "round_prefer_floor" if self.opset >= 11 else "floor"),
                            scales, sizes, ins[0])

    def op_Upsample(self, node, a, ins):
        scales = ins[1] if len(ins) > 1 else np.asarray(a.get("scales", []))
        if isinstance(scales, fx.Node):
            raise self.err(node, "Upsample with scales computed from the input is not supported")
        return self._resize(node, a.get("mode", "nearest"), "asymmetric", "floor", scales, None, ins[0])

    def op_Concat(self, node, a, ins):
        if self.batch_added:
            raise self.err(node, "Concat on a rank-1 network input is not supported")
        axis = int(a.get("axis", 0))
        pieces = []
        for t in ins:
            if isinstance(t, np.ndarray):   # a constant piece: one sample's worth, the same for every sample
                if t.ndim == 0 or t.shape[0] != 1:
                    raise self.err(node, f"Concat of the data with a constant of shape {t.shape} (its first, batch "
                                         f"dimension must be 1)")
                t = self.const_node(t)
            pieces.append(t)
        return self.fx.call_function(cat_batch, (pieces, axis))

    def op_Shape(self, node, a, ins):
        """The shape of a data tensor, with batch size 1 (what VNN-COMP networks are run with; Reshape and
        ConstantOfShape read a leading 1 as the batch), from ONNX shape inference."""
        dims = self.dims.get(node.input[0])
        if not dims or any(d is None for d in dims[1:]):   # not inferred: run the graph built so far once
            dims = list(self._evaluate(ins[0]).shape)
        shape = np.array([1] + [int(d) for d in dims[1:]], dtype=np.int64)
        start, end = int(a.get("start", 0)), a.get("end")
        return shape[start:None if end is None else int(end)]

    def op_Flatten(self, node, a, ins):
        ax = int(a.get("axis", 1))
        if self.batch_added:
            raise self.err(node, "Flatten on a rank-1 network input is not supported")
        if ax not in (0, 1):
            raise self.err(node, f"Flatten with axis={ax} mixes the batch dimension")
        return self.fx.call_function(torch.flatten, (ins[0], 1))

    def op_Pad(self, node, a, ins):
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = a.get("pads") if "pads" in a else (ins[1] if len(ins) > 1 else None)
        value = a.get("value", 0.0) if len(ins) < 3 or ins[2] is None else float(np.asarray(ins[2]).reshape(-1)[0])
        if not isinstance(pads, (list, np.ndarray)) or mode != "constant" or value != 0.0:
            raise self.err(node, "only constant zero padding with constant pads is supported")
        pads = [int(v) for v in np.asarray(pads).reshape(-1)]
        rank = len(pads) // 2
        begin, end = pads[:rank], pads[rank:]
        if rank not in (3, 4) or any(begin[:2]) or any(end[:2]) or min(pads) < 0:
            raise self.err(node, f"only non-negative padding of the spatial dims of a 3-D or 4-D tensor is "
                                 f"supported, got pads={pads}")
        if not any(pads):
            return ins[0]
        spatial = [v for d in range(rank - 1, 1, -1) for v in (begin[d], end[d])]     # last dim first, as F.pad
        return self.fx.call_function(torch.nn.functional.pad, (ins[0], tuple(spatial)))

    def op_Transpose(self, node, a, ins):
        perm = [int(p) for p in a.get("perm", [])]
        if perm == [1, 0] and not self.batch_added:
            # (B, n) -> (n, B) and back: kept as a marker that only MatMul with a constant on the left and a
            # second Transpose may consume (W @ x^T = (x W^T)^T, a linear layer written with the batch moved)
            return ins[0].node if isinstance(ins[0], _Transposed) else _Transposed(ins[0])
        if self.batch_added or not perm or perm[0] != 0:
            raise self.err(node, f"Transpose must keep the batch dimension first, got perm={perm}")
        return self.fx.call_function(torch.permute, (ins[0], tuple(perm)))

    def _squeeze_unsqueeze(self, node, a, ins, add: bool):
        """Unsqueeze / Squeeze of a data tensor as a reshape of each sample (axes as attribute before opset 13,
        as constant input from 13; Squeeze without axes drops every size-1 non-batch axis)."""
        axes = a.get("axes", ins[1] if len(ins) > 1 and ins[1] is not None else None)
        if isinstance(axes, fx.Node):
            raise self.err(node, f"{node.op_type} with axes computed from the input is not supported")
        if self.batch_added:
            raise self.err(node, f"{node.op_type} on a rank-1 network input is not supported")
        shape = list(self._evaluate(ins[0]).shape)
        if axes is None and not add:
            out = [shape[0]] + [d for d in shape[1:] if d != 1]
        else:
            axes = [int(v) for v in np.asarray(axes).reshape(-1)]
            rank = len(shape) + (len(axes) if add else 0)
            axes = sorted(ax % rank for ax in axes)
            if 0 in axes:
                raise self.err(node, f"{node.op_type} of the batch dimension is not supported")
            out = list(shape)
            for ax in axes if add else reversed(axes):
                if add:
                    out.insert(ax, 1)
                elif out[ax] != 1:
                    raise self.err(node, f"Squeeze of axis {ax} of size {out[ax]}")
                else:
                    del out[ax]
        return self.fx.call_function(reshape_batch, (ins[0], tuple(out[1:])))

    def op_Expand(self, node, a, ins):
        """Expand of a data tensor: numpy-style broadcast against a constant shape that keeps the batch dimension."""
        if not isinstance(ins[1], np.ndarray):
            raise self.err(node, "Expand needs a constant target shape")
        if self.batch_added:
            raise self.err(node, "Expand on a rank-1 network input is not supported")
        shape = tuple(self._evaluate(ins[0]).shape)
        target = tuple(int(d) for d in np.asarray(ins[1]).reshape(-1))
        try:
            out = np.broadcast_shapes((1,) + shape[1:], target)
        except ValueError:
            raise self.err(node, f"Expand of shape {shape} to {target}") from None
        if len(out) != len(shape) or out[0] != 1:
            raise self.err(node, f"Expand of shape {shape} to {target} changes the batch dimension")
        return self.fx.call_function(expand_batch, (ins[0], tuple(int(d) for d in out[1:])))

    def op_Unsqueeze(self, node, a, ins):
        return self._squeeze_unsqueeze(node, a, ins, True)

    def op_Squeeze(self, node, a, ins):
        return self._squeeze_unsqueeze(node, a, ins, False)

    def op_Reshape(self, node, a, ins):
        x, shape = ins
        if not isinstance(shape, np.ndarray):
            raise self.err(node, "Reshape needs a constant target shape")
        t = [int(s) for s in shape.reshape(-1)]
        if self.batch_added:
            target = tuple(t)
        else:
            if not t or t[0] not in (0, -1, 1):
                raise self.err(node, f"Reshape to {t} changes the batch dimension")
            rest = t[1:]
            if 0 in rest:
                raise self.err(node, "Reshape with 0 (copy) in non-batch positions is not supported")
            if t[0] == -1 and -1 in rest:
                raise self.err(node, f"Reshape to {t} has two inferred (-1) dimensions")
            target = tuple(rest)
        return self.fx.call_function(reshape_batch, (x, target))


def reshape_batch(x: torch.Tensor, sample_shape: tuple) -> torch.Tensor:
    """Reshape each batch row to ``sample_shape`` (the batch dimension is kept)."""
    return x.reshape((x.shape[0],) + tuple(sample_shape))


fx.wrap("reshape_batch")


def expand_batch(x: torch.Tensor, sample_shape: tuple) -> torch.Tensor:
    """Broadcast each batch row to ``sample_shape`` (the batch dimension is kept; ONNX Expand of the data)."""
    return x.expand((x.shape[0],) + tuple(sample_shape))


fx.wrap("expand_batch")


def cat_batch(pieces: list, dim: int) -> torch.Tensor:
    """``torch.cat(pieces, dim)`` where pieces with batch size 1 (constants of an ONNX graph, e.g. a class token)
    are expanded to the batch of the others."""
    B = max(p.shape[0] for p in pieces)
    return torch.cat([p.expand((B,) + tuple(p.shape[1:])) if p.shape[0] == 1 else p for p in pieces], dim)


fx.wrap("cat_batch")


def load_onnx(path: str | Path) -> OnnxModel:
    """Read an ONNX classifier or VNN-COMP network into a torch fx GraphModule.

    Args:
        path: the ``.onnx`` file, or ``.onnx.gz`` as VNN-COMP benchmark repositories ship them.

    Returns:
        :class:`OnnxModel`; ``module`` takes (B, *sample_shape) float32 and matches onnxruntime to float32
        rounding.

    Raises:
        CertkitError: unreadable file, unsupported operator (all of them are listed), or a graph shape
            certkit cannot batch.
    """
    path = Path(path)
    if not path.is_file():
        raise CertkitError(f"ONNX file not found: {path}")
    try:
        model = parse_model(read_bytes(path))
    except CertkitError:
        raise
    except Exception as e:  # protobuf raises DecodeError and others for corrupt files (gzip: BadGzipFile, EOFError)
        raise CertkitError(f"cannot read {path} as ONNX: {type(e).__name__}: {str(e)[:200]}") from None
    try:
        return _Builder(model, str(path)).build()
    except CertkitError:
        raise
    except MemoryError:
        raise CertkitError(f"{path}: the network asks for more memory than there is") from None
    except Exception as e:  # a damaged or unusual file: the graph refers to names or shapes that do not fit
        msg = str(e).splitlines()[0][:160] if str(e) else ""
        raise CertkitError(f"cannot import {path}: malformed ONNX graph ({type(e).__name__}: {msg})") from None
