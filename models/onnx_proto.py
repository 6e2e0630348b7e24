"""Reading ONNX files without importing the ``onnx`` package's top level.

``import onnx`` takes 1.4-1.6 s on a 2-core machine (its ``ml_dtypes`` dependency alone 1.3 s), more than a trivial
VNN-COMP instance should take in all. The file format is a protobuf message whose Python classes onnx generates in
``onnx/onnx_ml_pb2.py``, which needs only ``google.protobuf``; this module loads that file from the installed onnx
package (0.05 s) and converts tensors and attributes itself, following the ONNX IR specification (onnx/onnx.proto:
TensorProto.DataType, the typed data fields and ``raw_data`` in little-endian order, AttributeProto.AttributeType).
When ``onnx`` is already imported its own classes are used; the classes are the same either way (protobuf keeps one
descriptor pool per process).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from certkit.common.errors import CertkitError

_PB2: Any = None

# TensorProto.DataType -> numpy dtype of its elements, and the typed field that holds them when raw_data is empty
_DTYPES = {1: (np.float32, "float_data"), 2: (np.uint8, "int32_data"), 3: (np.int8, "int32_data"),
           4: (np.uint16, "int32_data"), 5: (np.int16, "int32_data"), 6: (np.int32, "int32_data"),
           7: (np.int64, "int64_data"), 9: (np.bool_, "int32_data"), 10: (np.float16, "int32_data"),
           11: (np.float64, "double_data"), 12: (np.uint32, "uint64_data"), 13: (np.uint64, "uint64_data")}


def pb2():
    """The generated protobuf module of ONNX (``onnx.onnx_ml_pb2``), loaded without ``onnx/__init__``.

    Raises:
        CertkitError: the onnx package is not installed.
    """
    global _PB2
    if _PB2 is None:
        if "onnx" in sys.modules:
            import onnx.onnx_ml_pb2 as mod
        else:
            spec = importlib.util.find_spec("onnx")
            if spec is None or not spec.submodule_search_locations:
                raise CertkitError("reading ONNX files needs the onnx package: pip install 'certkit[onnx]'")
            path = Path(list(spec.submodule_search_locations)[0]) / "onnx_ml_pb2.py"
            file_spec = importlib.util.spec_from_file_location("certkit_onnx_ml_pb2", path)
            if file_spec is None or file_spec.loader is None:
                raise CertkitError(f"the onnx package has no {path.name}")
            mod = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(mod)
        _PB2 = mod
    return _PB2


def read_bytes(path: str | Path) -> bytes:
    """The bytes of an ONNX file, unpacked when it is gzipped (``.onnx.gz``, as VNN-COMP repositories ship them).

    Raises:
        OSError (gzip.BadGzipFile among them) and EOFError for unreadable or truncated files.
    """
    path = Path(path)
    if path.suffix == ".gz":
        import gzip

        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def parse_model(data: bytes):
    """A ModelProto from the bytes of an ONNX file (external tensor data is not supported).

    Raises:
        google.protobuf.message.DecodeError (and others) for bytes that are not a model.
    """
    model = pb2().ModelProto()
    model.ParseFromString(data)
    return model


def to_array(t) -> np.ndarray:
    """A TensorProto's value as a numpy array of its dims.

    Raises:
        CertkitError: external data, strings, or an element type certkit does not read.
    """
    if t.data_location == 1:
        raise CertkitError(f"tensor {t.name!r} keeps its data in an external file, which certkit does not read")
    if t.data_type not in _DTYPES:
        raise CertkitError(f"tensor {t.name!r} has ONNX element type {t.data_type}, which certkit does not read")
    dtype, field = _DTYPES[t.data_type]
    dims = tuple(int(d) for d in t.dims)
    if t.raw_data:
        return np.frombuffer(t.raw_data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(dims)
    values = getattr(t, field)
    if t.data_type == 10:  # float16 bit patterns in int32_data
        return np.asarray(values, dtype=np.uint16).view(np.float16).reshape(dims)
    return np.asarray(values, dtype=dtype).reshape(dims)


def attribute_value(a) -> Any:
    """An AttributeProto's value (as onnx.helper.get_attribute_value: lists for the repeated kinds, bytes for
    strings, TensorProto / GraphProto objects for tensors and graphs)."""
    kinds = {1: "f", 2: "i", 3: "s", 4: "t", 5: "g", 11: "sparse_tensor", 13: "tp", 6: "floats", 7: "ints",
             8: "strings", 9: "tensors", 10: "graphs", 12: "sparse_tensors", 14: "type_protos"}
    name = kinds.get(a.type)
    if name is None:
        raise CertkitError(f"attribute {a.name!r} has an unknown type {a.type}")
    v = getattr(a, name)
    return list(v) if a.type in (6, 7, 8, 9, 10, 12, 14) else v
