"""Bound-propagation ops: one class per op family with its IBP rule and backward (CROWN) rule."""
from certkit.verifiers.ops.activations import Activation, ReLU, Sigmoid, SShaped, Tanh
from certkit.verifiers.ops.affine import ElementwiseAffine, batchnorm_op, constant_op, track_batch_stats
from certkit.verifiers.ops.base import Interval, Op
from certkit.verifiers.ops.conv import AvgPool2d, Conv2d, ZeroPad2d
from certkit.verifiers.ops.linear import Linear
from certkit.verifiers.ops.shape import Add, Permute, Reshape, Sub

__all__ = ["Activation", "Add", "AvgPool2d", "Conv2d", "ElementwiseAffine", "Interval", "Linear", "Op", "Permute", "ReLU",
           "Reshape", "SShaped", "Sigmoid", "Sub", "Tanh", "ZeroPad2d", "batchnorm_op", "constant_op", "track_batch_stats"]
