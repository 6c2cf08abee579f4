#!/usr/bin/env python3
"""Write small CIFAR-sized ONNX models of the mobile families with the standard `onnx.helper` API.

Usage: make_mobile_models.py OUT_DIR

* mobilenetv2_cifar_opset13.onnx: a MobileNetV2-class network (Sandler et al. 2018) for
  [N, 3, 32, 32]: Conv + BatchNormalization + Clip(0, 6) (ReLU6, bounds as inputs), inverted
  residuals (1x1 expansion, depthwise 3x3 Conv with group = channels, linear 1x1 projection,
  residual Add), a 1x1 head, GlobalAveragePool, Flatten, Gemm;
* shufflenet_cifar_opset11.onnx: a ShuffleNet-class network (Zhang et al. 2018, g = 2) for
  [N, 3, 32, 32]: grouped 1x1 Conv (group = 2), the channel shuffle as torch exports it
  (Reshape to [N, g, C/g, H, W], Transpose perm [0, 2, 1, 3, 4], Reshape back), depthwise 3x3,
  stride-2 units concatenating an AveragePool shortcut, stride-1 units adding the input;
* keras_nhwc_opset13.onnx: a channels-last model as tf2onnx writes it for [N, 32, 32, 3]:
  Transpose perm [0, 3, 1, 2] at the input, Conv, LeakyRelu (Keras' default slope 0.3),
  Transpose perm [0, 2, 3, 1] before the
  Reshape that flattens, MatMul + Add.

Weights and batch-norm statistics come from a seeded numpy generator; every model passes
onnx.checker. Prints the names of the files written, one per line.
Requires: pip install onnx numpy
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(20261203)


def tensor(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def io(name, *per_sample):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *per_sample])


def save(out_dir, file, graph, opset, ir_version):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="moat-mobile")
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(out_dir, file))
    print(file)


class Net:
    """Nodes and initializers of one graph under construction."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def conv_bn(self, x, out, cin, k, stride, group, name):
        """Conv (He-scaled weights, no bias) + BatchNormalization with random statistics."""
        fan_in = cin // group * k * k
        self.inits += [
            tensor(f"{name}.weight", RNG.standard_normal((out, cin // group, k, k)) * np.sqrt(2.0 / fan_in)),
            tensor(f"{name}.bn.scale", RNG.uniform(0.5, 1.5, out)),
            tensor(f"{name}.bn.bias", RNG.uniform(-0.2, 0.2, out)),
            tensor(f"{name}.bn.mean", RNG.uniform(-0.1, 0.1, out)),
            tensor(f"{name}.bn.var", RNG.uniform(0.5, 1.5, out)),
        ]
        pad = k // 2
        self.nodes += [
            helper.make_node("Conv", [x, f"{name}.weight"], [f"{name}.conv"], name=f"{name}/Conv",
                             kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group),
            helper.make_node("BatchNormalization", [f"{name}.conv"] + [f"{name}.bn.{p}" for p in ("scale", "bias", "mean", "var")],
                             [f"{name}.out"], name=f"{name}/BatchNormalization", epsilon=1e-5),
        ]
        return f"{name}.out"

    def relu6(self, x, name):
        if "zero" not in {t.name for t in self.inits}:
            self.inits += [tensor("zero", 0.0), tensor("six", 6.0)]
        self.nodes.append(helper.make_node("Clip", [x, "zero", "six"], [f"{name}.out"], name=f"{name}/Clip"))
        return f"{name}.out"

    def relu(self, x, name):
        self.nodes.append(helper.make_node("Relu", [x], [f"{name}.out"], name=f"{name}/Relu"))
        return f"{name}.out"

    def head(self, x, channels, classes, out):
        self.inits += [tensor("fc.weight", RNG.standard_normal((classes, channels)) * 0.3), tensor("fc.bias", RNG.uniform(-0.1, 0.1, classes))]
        self.nodes += [
            helper.make_node("GlobalAveragePool", [x], ["pooled"], name="/GlobalAveragePool"),
            helper.make_node("Flatten", ["pooled"], ["flat"], name="/Flatten", axis=1),
            helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], [out], name="/fc/Gemm", transB=1),
        ]


def mobilenetv2(out_dir):
    n = Net()
    x = n.relu6(n.conv_bn("x", 8, 3, 3, 1, 1, "stem"), "stem.relu6")
    c = 8
    for i, (t, out, stride) in enumerate([(1, 8, 1), (4, 12, 2), (4, 12, 1), (4, 16, 2)]):
        name, y, hidden = f"block{i}", x, c * t
        if t != 1:
            y = n.relu6(n.conv_bn(y, hidden, c, 1, 1, 1, f"{name}.expand"), f"{name}.expand.relu6")
        y = n.relu6(n.conv_bn(y, hidden, hidden, 3, stride, hidden, f"{name}.depthwise"), f"{name}.depthwise.relu6")
        y = n.conv_bn(y, out, hidden, 1, 1, 1, f"{name}.project")
        if stride == 1 and c == out:
            n.nodes.append(helper.make_node("Add", [y, x], [f"{name}.sum"], name=f"{name}/Add"))
            y = f"{name}.sum"
        x, c = y, out
    x = n.relu6(n.conv_bn(x, 32, c, 1, 1, 1, "head"), "head.relu6")
    n.head(x, 32, 10, "logits")
    graph = helper.make_graph(n.nodes, "mobilenetv2_cifar", [io("x", 3, 32, 32)], [io("logits", 10)], n.inits)
    save(out_dir, "mobilenetv2_cifar_opset13.onnx", graph, 13, 8)


def shufflenet(out_dir):
    g = 2
    n = Net()
    x = n.relu(n.conv_bn("x", 8, 3, 3, 1, 1, "stem"), "stem.relu")
    c, hw = 8, 32
    for i, (out, stride) in enumerate([(24, 2), (24, 1), (48, 2), (48, 1)]):
        name, mid = f"unit{i}", out // 4
        y = n.relu(n.conv_bn(x, mid, c, 1, 1, 1 if i == 0 else g, f"{name}.gconv1"), f"{name}.gconv1.relu")
        n.inits += [ints(f"{name}.split", [-1, g, mid // g, hw, hw]), ints(f"{name}.merge", [-1, mid, hw, hw])]
        n.nodes += [
            helper.make_node("Reshape", [y, f"{name}.split"], [f"{name}.split.out"], name=f"{name}/shuffle/Reshape"),
            helper.make_node("Transpose", [f"{name}.split.out"], [f"{name}.swapped"], name=f"{name}/shuffle/Transpose", perm=[0, 2, 1, 3, 4]),
            helper.make_node("Reshape", [f"{name}.swapped", f"{name}.merge"], [f"{name}.shuffled"], name=f"{name}/shuffle/Reshape_1"),
        ]
        y = n.conv_bn(f"{name}.shuffled", mid, mid, 3, stride, mid, f"{name}.depthwise")
        main = out - c if stride == 2 else out
        y = n.conv_bn(y, main, mid, 1, 1, g, f"{name}.gconv2")
        if stride == 2:
            n.nodes += [
                helper.make_node("AveragePool", [x], [f"{name}.pool"], name=f"{name}/AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
                helper.make_node("Concat", [y, f"{name}.pool"], [f"{name}.joined"], name=f"{name}/Concat", axis=1),
            ]
            hw //= 2
        else:
            n.nodes.append(helper.make_node("Add", [y, x], [f"{name}.joined"], name=f"{name}/Add"))
        x, c = n.relu(f"{name}.joined", f"{name}.out"), out
    n.head(x, c, 10, "logits")
    graph = helper.make_graph(n.nodes, "shufflenet_cifar", [io("x", 3, 32, 32)], [io("logits", 10)], n.inits)
    save(out_dir, "shufflenet_cifar_opset11.onnx", graph, 11, 6)


def keras_nhwc(out_dir):
    inits = [
        tensor("conv.weight", RNG.standard_normal((4, 3, 3, 3)) * 0.3),
        tensor("conv.bias", RNG.uniform(-0.1, 0.1, 4)),
        ints("flat_shape", [-1, 8 * 8 * 4]),
        tensor("dense.kernel", RNG.standard_normal((8 * 8 * 4, 5)) * 0.1),
        tensor("dense.bias", RNG.uniform(-0.1, 0.1, 5)),
    ]
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["nchw"], name="conv2d/Conv2D__6", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv.weight", "conv.bias"], ["conv"], name="conv2d/Conv2D", kernel_shape=[3, 3], strides=[4, 4], pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["conv"], ["relu"], name="leaky_re_lu/LeakyRelu", alpha=0.3),
        helper.make_node("Transpose", ["relu"], ["nhwc"], name="conv2d/Relu__8", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "flat_shape"], ["flat"], name="flatten/Reshape"),
        helper.make_node("MatMul", ["flat", "dense.kernel"], ["mm"], name="dense/MatMul"),
        helper.make_node("Add", ["mm", "dense.bias"], ["dense"], name="dense/BiasAdd"),
    ]
    graph = helper.make_graph(nodes, "keras_nhwc", [io("input_1", 32, 32, 3)], [io("dense", 5)], inits)
    save(out_dir, "keras_nhwc_opset13.onnx", graph, 13, 8)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    os.makedirs(argv[1], exist_ok=True)
    for build in (mobilenetv2, shufflenet, keras_nhwc):
        build(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
