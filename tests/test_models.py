"""Model loading: certkit checkpoints, reference checkpoints, ONNX import (vs onnxruntime), factories."""
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.models import NormalizeLayer, build_model, load_model, save_checkpoint
from certkit.models.zoo import CIFAR10_MEAN, CIFAR10_STD

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from certkit.models.onnx_import import load_onnx  # noqa: E402

from conftest import DATA, export_onnx  # noqa: E402


def test_certkit_checkpoint_roundtrip(tmp_path):
    net = build_model("cnn", (1, 8, 8), 10)
    norm = {"mean": [0.3], "std": [0.4]}
    save_checkpoint(tmp_path / "m.pt", net, "cnn", {}, (1, 8, 8), 10, norm, metadata={"sigma": 0.25})
    m = load_model(tmp_path / "m.pt")
    x = torch.rand(5, 1, 8, 8)
    ref = net.eval()((x - 0.3) / 0.4)
    torch.testing.assert_close(m.module(x), ref)
    assert m.train_sigma == 0.25 and m.input_shape == (1, 8, 8) and m.kind == "certkit"


def test_bundled_model_loads_and_is_accurate():
    from certkit.datasets import load_dataset

    m = load_model("bundled")
    d = load_dataset("digits")
    acc = (m.module(d.x).argmax(1) == d.y).float().mean().item()
    assert m.train_sigma == 0.25 and acc > 0.9


def _reference_checkpoint(path, arch, depth):
    """A checkpoint exactly as the Gaussian-smoothing reference saves it: Sequential(normalize, net)."""
    model = nn.Sequential(NormalizeLayer(CIFAR10_MEAN, CIFAR10_STD), build_model(arch, (3, 32, 32), 10))
    for mod in model.modules():  # non-trivial BN statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    torch.save({"epoch": 90, "arch": arch, "state_dict": model.state_dict(), "optimizer": {}}, path)
    return model.eval()


@pytest.mark.parametrize("arch,depth,blocks", [("cifar_resnet20", 20, 3), ("cifar_resnet110", 110, 18)])
def test_reference_format_checkpoint(tmp_path, arch, depth, blocks):
    model = _reference_checkpoint(tmp_path / "ref.pt", arch, depth)
    keys = set(model.state_dict())
    # the reference's key layout: Sequential index 1, conv1/bn1, layerK.i.{conv,bn}{1,2}, downsample.{0,1}, fc
    assert {"1.conv1.weight", "1.bn1.running_var", "1.layer2.0.downsample.0.weight",
            "1.layer3.0.downsample.1.bias", f"1.layer3.{blocks - 1}.conv2.weight", "1.fc.weight"} <= keys
    assert f"1.layer1.{blocks}.conv1.weight" not in keys and not any(k.startswith("0.") for k in keys)
    m = load_model(tmp_path / "ref.pt")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(m.module(x), model(x))
    assert m.kind == "reference" and m.arch == arch


def test_reference_unknown_arch_and_corrupt(tmp_path):
    torch.save({"arch": "resnet50", "state_dict": {}}, tmp_path / "r50.pt")
    with pytest.raises(CertkitError, match="'resnet50' is not one certkit builds .* --model package.module:factory"):
        load_model(tmp_path / "r50.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CertkitError, match="not a valid torch checkpoint"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(CertkitError, match="not found"):
        load_model(tmp_path / "missing.pt")
    torch.save({"format": "certkit-checkpoint", "arch": "transformer9000", "state_dict": {},
                "input_shape": [1, 8, 8], "num_classes": 10}, tmp_path / "unk.pt")
    with pytest.raises(CertkitError, match="unknown architecture"):
        load_model(tmp_path / "unk.pt")


def test_weights_mismatch_is_a_clear_error(tmp_path):
    net = build_model("mlp", (1, 8, 8), 10)
    save_checkpoint(tmp_path / "m.pt", net, "mlp", {"hidden": [32]}, (1, 8, 8), 10)
    with pytest.raises(CertkitError, match="do not match"):
        load_model(tmp_path / "m.pt")


def test_pickled_module_needs_opt_in(tmp_path):
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), tmp_path / "whole.pt")
    with pytest.raises(CertkitError, match="--allow-pickle"):
        load_model(tmp_path / "whole.pt")
    m = load_model(tmp_path / "whole.pt", allow_pickle=True)
    assert m.module(torch.zeros(1, 4)).shape == (1, 2)


def test_factory_with_weights(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def tiny():
            return nn.Sequential(nn.Flatten(), nn.Linear(5, 3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    net = nn.Sequential(nn.Flatten(), nn.Linear(5, 3))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    m = load_model("mynets:tiny", weights=tmp_path / "w.pt")
    x = torch.rand(2, 5)
    torch.testing.assert_close(m.module(x), net(x))
    with pytest.raises(CertkitError, match="cannot import"):
        load_model("mynets:nothere")


# ------------------------------------------------------------------ ONNX importer
def _onnx_file(path, nodes, inits, in_shape, out_shape, opset=13):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(np.asarray(v, dtype=np.float32 if np.asarray(v).dtype.kind == "f"
                                                                  else np.int64), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _assert_matches_onnxruntime(path, low=-1.0, high=1.0, rows=6, atol=1e-5):
    m = load_onnx(path)
    x = torch.rand((rows,) + m.sample_shape) * (high - low) + low
    ours = m.module(x).detach().numpy().reshape(rows, -1)
    ref = m.run_onnxruntime(x)
    np.testing.assert_allclose(ours, ref, atol=atol, rtol=1e-5)
    return m


def test_onnx_conv_bn_pool_activations(tmp_path):
    rng = np.random.default_rng(0)
    inits = {
        "W1": rng.normal(size=(4, 2, 3, 3)), "B1": rng.normal(size=4),
        "W2": rng.normal(size=(6, 2, 2, 2)),  # grouped conv: groups=2, 4 -> 6 channels
        "s": rng.uniform(0.5, 2, 6), "b": rng.normal(size=6), "mu": rng.normal(size=6), "var": rng.uniform(0.5, 2, 6),
        "mean": rng.uniform(0, 1, (1, 2, 1, 1)), "std": rng.uniform(0.5, 1, (1, 2, 1, 1)), "three": np.array(3.0),
        "shape": np.array([-1, 6 * 3 * 4], dtype=np.int64),
        "Wg": rng.normal(size=(5, 72)), "Cg": rng.normal(size=5), "Wm": rng.normal(size=(5, 4)),
        "bm": rng.normal(size=4),
    }
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["n0"]), helper.make_node("Div", ["n0", "std"], ["n1"]),
        helper.make_node("Conv", ["n1", "W1", "B1"], ["c1"], pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "s", "b", "mu", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Sigmoid", ["bn"], ["sg"]),
        helper.make_node("AveragePool", ["sg"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=0),
        helper.make_node("Mul", ["ap", "three"], ["m3"]),
        helper.make_node("Reshape", ["m3", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "Wg", "Cg"], ["g"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Tanh", ["g"], ["t"]),
        helper.make_node("MatMul", ["t", "Wm"], ["mm"]), helper.make_node("Add", ["mm", "bm"], ["y"]),
    ]
    path = _onnx_file(tmp_path / "net.onnx", nodes, inits, [1, 2, 9, 10], [1, 4])
    m = _assert_matches_onnxruntime(path, 0.0, 1.0)
    assert m.sample_shape == (2, 9, 10) and m.num_outputs == 4
    mods = dict(m.module.named_modules())
    assert any(isinstance(v, nn.BatchNorm2d) for v in mods.values())
    # MatMul + Add(bias) fused into one Linear with bias
    assert sum(isinstance(v, nn.Linear) and v.bias is not None for v in mods.values()) == 2


def test_onnx_flatten_and_gemm_without_bias(tmp_path):
    rng = np.random.default_rng(1)
    inits = {"W": rng.normal(size=(12, 3)), "two": np.array([2.0])}
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "W"], ["g"]),
             helper.make_node("Relu", ["g"], ["r"]), helper.make_node("Add", ["r", "two"], ["y"])]
    path = _onnx_file(tmp_path / "f.onnx", nodes, inits, ["batch", 3, 2, 2], ["batch", 3])
    _assert_matches_onnxruntime(path)


def test_onnx_batch_moved_around_a_constant_matmul_and_gather_on_data(tmp_path):
    """The layout of VNN-COMP's ml4acopf networks (batch 1): Transpose [1, 0], MatMul with a constant on the left,
    Transpose back (a linear layer with the batch moved), and Gather of integer indices on the data; any other use
    of the moved batch is refused by name."""
    rng = np.random.default_rng(2)
    inits = {"W": rng.normal(size=(5, 4)), "idx": np.array([3, 0, 0, 2])}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), helper.make_node("MatMul", ["W", "t"], ["m"]),
             helper.make_node("Transpose", ["m"], ["b"], perm=[1, 0]),
             helper.make_node("Gather", ["b", "idx"], ["y"], axis=1)]
    m = _assert_matches_onnxruntime(_onnx_file(tmp_path / "t.onnx", nodes, inits, [1, 4], [1, 4]))
    assert m.sample_shape == (4,)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0])]
    with pytest.raises(CertkitError, match="moves the batch"):
        load_onnx(_onnx_file(tmp_path / "bad.onnx", nodes, {}, [1, 4], [1, 4]))


def test_onnx_input_without_a_batch_dim_reshaped_to_one_sample(tmp_path):
    """The layout of VNN-COMP's nn4sys pensieve_*_parallel networks: a fixed (12, 8) input whose only use is a
    Reshape to (1, 12, 8); the whole input is one sample (and its bounds contain onnxruntime's outputs). Any other
    use of such an input is refused by name."""
    from certkit.verifiers import BoundedModule, linf_ball

    rng = np.random.default_rng(3)
    inits = {"shape": np.array([1, 12, 8]), "W": rng.normal(size=(8, 5)), "flat": np.array([1, 60])}
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("MatMul", ["r", "W"], ["m"]),
             helper.make_node("Relu", ["m"], ["h"]), helper.make_node("Reshape", ["h", "flat"], ["y"])]
    m = _assert_matches_onnxruntime(_onnx_file(tmp_path / "p.onnx", nodes, inits, [12, 8], [1, 60]))
    assert m.sample_shape == (12, 8) and m.num_outputs == 60
    x = torch.rand(2, 12, 8, dtype=torch.float64)
    lb, ub = BoundedModule(m.module.double(), (12, 8)).compute_bounds(linf_ball(x, 0.05, None), None, "CROWN")
    pts = (x[:, None] + 0.05 * (2 * torch.rand((2, 50, 12, 8), dtype=torch.float64) - 1)).reshape(-1, 12, 8)
    ref = torch.from_numpy(m.run_onnxruntime(pts)).double().reshape(2, 50, -1)
    assert (ref >= lb[:, None] - 1e-4).all() and (ref <= ub[:, None] + 1e-4).all()
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    with pytest.raises(CertkitError, match="batch dimension must be 1"):
        load_onnx(_onnx_file(tmp_path / "bad.onnx", nodes, {}, [12, 8], [12, 8]))


@pytest.mark.parametrize("name", ["ACASXU_run2a_1_1_batch_2000.onnx", "test_nano.onnx", "test_small.onnx",
                                  "test_tiny.onnx"])
def test_onnx_real_vnncomp_networks(name):
    m = _assert_matches_onnxruntime(str(DATA / "vnncomp2021" / name), atol=1e-6)
    assert m.num_outputs in (1, 5)


def test_onnx_gzipped_network_as_vnncomp_ships_it(tmp_path):
    import gzip

    src = DATA / "vnncomp2021" / "test_small.onnx"
    gz = tmp_path / "test_small.onnx.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    m = _assert_matches_onnxruntime(str(gz), atol=1e-6)  # onnxruntime reads the same gzipped file
    x = torch.rand((3,) + m.sample_shape)
    torch.testing.assert_close(load_model(gz).module(x), load_onnx(src).module(x))
    (tmp_path / "bad.onnx.gz").write_bytes(b"not gzip")
    with pytest.raises(CertkitError, match="cannot read"):
        load_onnx(tmp_path / "bad.onnx.gz")


@pytest.mark.parametrize("opset", [11, 13])
def test_onnx_squeeze_unsqueeze_of_data_and_folded_constant_matmul(tmp_path, opset):
    from certkit.verifiers import check_model

    rng = np.random.default_rng(0)
    inits = {"A": rng.normal(size=(4, 3)), "B": rng.normal(size=(3, 5))}
    ax = {"axes": [1, -1]} if opset == 11 else {}
    if opset == 13:
        inits.update(ax_u=np.array([1, -1]), ax_s=np.array([3, 1]))
    nodes = [helper.make_node("MatMul", ["A", "B"], ["W"]),                      # constant x constant: folded
             helper.make_node("MatMul", ["x", "W"], ["h"]),                      # (1, 5)
             helper.make_node("Unsqueeze", ["h"] + (["ax_u"] if opset == 13 else []), ["u"], **ax),   # (1, 1, 5, 1)
             helper.make_node("Relu", ["u"], ["r"]),
             helper.make_node("Squeeze", ["r"] + (["ax_s"] if opset == 13 else []), ["y"],
                              **({"axes": [3, 1]} if opset == 11 else {}))]
    path = _onnx_file(tmp_path / "sq.onnx", nodes, inits, [1, 4], [1, 5], opset=opset)
    m = _assert_matches_onnxruntime(path)
    assert check_model(m.module, m.sample_shape) == []


def test_onnx_matmul_with_a_constant_vector(tmp_path):
    from certkit.verifiers import check_model

    rng = np.random.default_rng(1)
    inits = {"v": rng.normal(size=4), "shape": np.array([1, 3, 4]), "W": rng.normal(size=(2, 3)), "ax": np.array([0])}
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Tanh", ["r"], ["t"]),
             helper.make_node("MatMul", ["t", "v"], ["p"]),                     # (1, 3, 4) @ (4,) -> (1, 3)
             helper.make_node("ReduceSum", ["W", "ax"], ["s"], keepdims=0),     # constants folded: sum over rows
             helper.make_node("Mul", ["p", "s"], ["y"])]
    m = _assert_matches_onnxruntime(_onnx_file(tmp_path / "mv.onnx", nodes, inits, [1, 12], [1, 3]))
    assert m.num_outputs == 3 and check_model(m.module, m.sample_shape) == []


def test_onnx_import_leaves_the_onnx_package_unimported():
    """Start-up: `import onnx` costs over a second (ml_dtypes); reading a network must not need it."""
    import subprocess
    import sys

    code = ("import sys; from certkit.models.onnx_import import load_onnx; "
            f"m = load_onnx({str(DATA / 'vnncomp2021' / 'test_small.onnx')!r}); "
            "print(m.num_outputs, 'onnx' in sys.modules, 'ml_dtypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "False", "False"]


def test_onnx_unsupported_ops_listed_together(tmp_path):
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Hardmax", ["f"], ["y"])]
    path = _onnx_file(tmp_path / "u.onnx", nodes, {}, [1, 1, 4, 4], [1, 4])
    with pytest.raises(CertkitError) as e:
        load_onnx(path)
    assert "MaxPool" in str(e.value) and "Hardmax" in str(e.value)


def test_onnx_corrupt_file(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(CertkitError, match="ONNX"):
        load_model(tmp_path / "bad.onnx")


def test_torch_exported_cnn_roundtrip(tmp_path):
    """A zoo CNN exported by torch.onnx imports back to the same function."""
    net = nn.Sequential(NormalizeLayer([0.5], [0.25]), build_model("cnn", (1, 8, 8), 10)).eval()
    path = tmp_path / "cnn.onnx"
    export_onnx(net, torch.rand(1, 1, 8, 8), path, output_names=["y"])
    m = _assert_matches_onnxruntime(str(path), 0.0, 1.0)
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(m.module(x), net(x), atol=1e-5, rtol=1e-5)


def test_dataparallel_reference_checkpoint_loads_for_certify_and_for_dual_training(tmp_path, cli):
    """One converter of reference checkpoints: a DataParallel one (keys ``1.module.*``) that certify loads must
    also start Dual RS training (``train --method dual --init-from``, which used its own converter and failed)."""
    import numpy as np

    model = nn.Sequential(NormalizeLayer(CIFAR10_MEAN, CIFAR10_STD), build_model("cifar_resnet20", (3, 32, 32), 10))
    state = {(k.replace("1.", "1.module.", 1) if k.startswith("1.") else k): v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "arch": "cifar_resnet20", "state_dict": state}, tmp_path / "dp.pt")
    m = load_model(tmp_path / "dp.pt")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(m.module(x), model.eval()(x))
    gen = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=gen.random((10, 3, 32, 32), dtype=np.float32), y=np.arange(10))
    r = cli("train", "--method", "dual", "--init-from", tmp_path / "dp.pt", "--dataset", "npz", tmp_path / "c.npz",
            "--epochs", 1, "--batch", 10, "--val-fraction", 0, "--out", tmp_path / "drs.pt", "--quiet")
    assert r.exit_code == 0, r.output
    drs = torch.load(tmp_path / "drs.pt", weights_only=True)
    assert drs["arch"] == "dual" and drs["normalization"]["mean"] == list(CIFAR10_MEAN)


@pytest.mark.parametrize("prefix", ["", "module.", "1.module.", "1."])
def test_factory_weights_saved_from_wrappers_load(tmp_path, monkeypatch, prefix):
    """The layouts people have: a bare state_dict, a DataParallel one (``module.``), and a locuslab-style
    ``{'arch': 'SmallCNN', 'state_dict': ...}`` of Sequential(normalize, DataParallel(net)) for a custom architecture:
    the factory route loads each into the factory's network."""
    import textwrap

    from certkit.models import load_model

    (tmp_path / "smallcnn.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def make():
            return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 10))
    state = {prefix + k: v for k, v in net.state_dict().items()}
    torch.save({"arch": "SmallCNN", "state_dict": state} if prefix.startswith("1.") else state, tmp_path / "w.pth.tar")
    loaded = load_model("smallcnn:make", tmp_path / "w.pth.tar")
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(loaded.module(x), net(x), rtol=0, atol=0)


def test_weights_that_do_not_fit_are_summarised(tmp_path, monkeypatch):
    import textwrap

    from certkit.common.errors import CertkitError
    from certkit.models import load_model

    (tmp_path / "wide.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def make():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 10))
    torch.save(other.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CertkitError) as e:
        load_model("wide:make", tmp_path / "w.pt")
    msg = str(e.value)
    assert "2 unexpected keys (5.bias, 5.weight)" in msg and "keys of another shape" in msg
    assert "(8, 64) for (16, 64)" in msg and "\n" not in msg
