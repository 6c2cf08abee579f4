#!/usr/bin/env python3
"""Write small reference ONNX models built with the standard `onnx.helper` API.

Usage: make_reference_models.py OUT_DIR

These files come from the official ONNX tooling rather than from moat's exporter, so importing
them tests moat against the format as other producers write it (opset-specific attribute vs
input forms, typed vs raw tensor fields, auto_pad, Pad/Clip/Dropout/Squeeze idioms, and the node
patterns torch.onnx.export writes: shape subgraphs, input normalisation, concatenated branches,
reproduced here node for node without needing torch itself). Weights are
drawn from a seeded numpy generator; every model is checked with onnx.checker. Prints the names
of the files written, one per line.
Requires: pip install onnx numpy
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(20240611)


def weights(name, *shape, scale=0.5):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def io(name, *per_sample):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *per_sample])


def save(out_dir, file, graph, opset, ir_version):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="moat-reference")
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(out_dir, file))
    print(file)


def cnn_opset9(out_dir):
    """Pad + Conv + Clip(min=0) as in old PyTorch exports, Reshape by a Constant, Dropout, Gemm."""
    conv_w = weights("conv.weight", 4, 1, 3, 3)
    # Typed float_data instead of raw_data for this one.
    conv_b = helper.make_tensor("conv.bias", TensorProto.FLOAT, [4], RNG.standard_normal(4).astype(np.float32).tolist())
    fc_w = weights("fc.weight", 10, 64, scale=0.2)
    fc_b = weights("fc.bias", 10)
    nodes = [
        helper.make_node("Pad", ["x"], ["padded"], name="pad", mode="constant", pads=[0, 0, 1, 1, 0, 0, 1, 1]),
        helper.make_node("Conv", ["padded", "conv.weight", "conv.bias"], ["conv"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Clip", ["conv"], ["relu"], name="relu6ish", min=0.0),
        helper.make_node("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Constant", [], ["shape"], name="shape", value=helper.make_tensor("s", TensorProto.INT64, [2], [0, -1])),
        helper.make_node("Reshape", ["pool", "shape"], ["flat"], name="reshape"),
        helper.make_node("Dropout", ["flat"], ["dropped"], name="dropout", ratio=0.25),
        helper.make_node("Gemm", ["dropped", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(nodes, "cnn_opset9", [io("x", 1, 8, 8)], [io("y", 10)], [conv_w, conv_b, fc_w, fc_b])
    save(out_dir, "cnn_opset9.onnx", graph, 9, 4)


def bn_matmul_opset17(out_dir):
    """Conv + BatchNormalization, AveragePool with count_include_pad=1, GlobalAveragePool,
    MatMul + Add heads."""
    c = 8
    inits = [
        weights("conv.weight", c, 3, 3, 3),
        numpy_helper.from_array(RNG.uniform(0.5, 1.5, c).astype(np.float32), "bn.scale"),
        numpy_helper.from_array(RNG.uniform(-0.5, 0.5, c).astype(np.float32), "bn.bias"),
        numpy_helper.from_array(RNG.uniform(-0.5, 0.5, c).astype(np.float32), "bn.mean"),
        numpy_helper.from_array(RNG.uniform(0.5, 2.0, c).astype(np.float32), "bn.var"),
        weights("fc1.weight", c, 16),
        weights("fc1.bias", 16),
        weights("fc2.weight", 16, 5),
        weights("fc2.bias", 5),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"], name="bn", epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["relu"], name="relu"),
        helper.make_node("AveragePool", ["relu"], ["avg"], name="avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["avg"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("MatMul", ["flat", "fc1.weight"], ["mm1"], name="fc1"),
        helper.make_node("Add", ["mm1", "fc1.bias"], ["fc1"], name="fc1.add"),
        helper.make_node("Relu", ["fc1"], ["h"]),  # unnamed
        helper.make_node("MatMul", ["h", "fc2.weight"], ["mm2"], name="fc2"),
        helper.make_node("Add", ["fc2.bias", "mm2"], ["y"], name="fc2.add"),
    ]
    graph = helper.make_graph(nodes, "bn_matmul_opset17", [io("x", 3, 6, 6)], [io("y", 5)], inits)
    save(out_dir, "bn_matmul_opset17.onnx", graph, 17, 8)


def gemm_opset13(out_dir):
    """Gemm with alpha/beta/transB=0, Clip bounds as inputs, Unsqueeze/Squeeze by axes inputs."""
    inits = [
        weights("fc1.weight", 12, 7),
        weights("fc1.bias", 7),
        weights("fc2.weight", 3, 7),
        weights("fc2.bias", 1, 3),
        ints("axes", [2]),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", alpha=0.5, beta=2.0, transB=0),
        helper.make_node("Constant", [], ["zero"], name="zero", value_float=0.0),
        helper.make_node("Clip", ["fc1", "zero", ""], ["relu"], name="clip"),
        helper.make_node("Unsqueeze", ["relu", "axes"], ["wide"], name="unsqueeze"),
        helper.make_node("Squeeze", ["wide", "axes"], ["narrow"], name="squeeze"),
        helper.make_node("Gemm", ["narrow", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax"),
    ]
    graph = helper.make_graph(nodes, "gemm_opset13", [io("x", 12)], [io("y", 3)], inits)
    save(out_dir, "gemm_opset13.onnx", graph, 13, 8)


def conv_opset21(out_dir):
    """auto_pad SAME_UPPER with stride 2, Pad with a pads input, AveragePool without own padding,
    MaxPool with a harmless ceil_mode, Identity."""
    inits = [
        weights("conv.weight", 3, 2, 3, 3),
        weights("conv.bias", 3),
        ints("pads", [0, 0, 1, 1, 0, 0, 0, 0]),
        weights("fc.weight", 5, 12),
        weights("fc.bias", 5),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["conv"], name="conv", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("Pad", ["relu", "pads"], ["padded"], name="pad", mode="constant"),
        helper.make_node("AveragePool", ["padded"], ["avg"], name="avg", kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("MaxPool", ["avg"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("Identity", ["pool"], ["same"], name="identity"),
        helper.make_node("Flatten", ["same"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "conv_opset21", [io("x", 2, 8, 8)], [io("y", 5)], inits)
    save(out_dir, "conv_opset21.onnx", graph, 21, 10)


def view_batch_minus_one(src, dst, prefix=""):
    """The nodes torch.onnx.export writes for `x.view(x.size(0), -1)` (opset 13+: Unsqueeze
    axes as an input), node names as PyTorch writes them."""
    return [
        helper.make_node("Shape", [src], [f"{prefix}shape"], name=f"/{prefix}Shape"),
        helper.make_node("Constant", [], [f"{prefix}c0"], name=f"/{prefix}Constant",
                         value=helper.make_tensor("c0", TensorProto.INT64, [], [0])),
        helper.make_node("Gather", [f"{prefix}shape", f"{prefix}c0"], [f"{prefix}batch"], name=f"/{prefix}Gather", axis=0),
        helper.make_node("Constant", [], [f"{prefix}axes"], name=f"/{prefix}Constant_1",
                         value=helper.make_tensor("axes", TensorProto.INT64, [1], [0])),
        helper.make_node("Unsqueeze", [f"{prefix}batch", f"{prefix}axes"], [f"{prefix}batch1"], name=f"/{prefix}Unsqueeze"),
        helper.make_node("Constant", [], [f"{prefix}m1"], name=f"/{prefix}Constant_2",
                         value=helper.make_tensor("m1", TensorProto.INT64, [1], [-1])),
        helper.make_node("Concat", [f"{prefix}batch1", f"{prefix}m1"], [f"{prefix}spec"], name=f"/{prefix}Concat", axis=0),
        helper.make_node("Reshape", [src, f"{prefix}spec"], [dst], name=f"/{prefix}Reshape"),
    ]


def fire(x, out, name, cin, squeeze, expand):
    """A SqueezeNet fire module as torchvision exports it: 1x1 squeeze + Relu, 1x1 and padded
    3x3 expands + Relu, Concat on the channel axis. Returns (nodes, initializers)."""
    inits = [
        weights(f"{name}.squeeze.weight", squeeze, cin, 1, 1),
        weights(f"{name}.squeeze.bias", squeeze),
        weights(f"{name}.expand1x1.weight", expand, squeeze, 1, 1),
        weights(f"{name}.expand1x1.bias", expand),
        weights(f"{name}.expand3x3.weight", expand, squeeze, 3, 3),
        weights(f"{name}.expand3x3.bias", expand),
    ]
    p = f"/{name}"
    nodes = [
        helper.make_node("Conv", [x, f"{name}.squeeze.weight", f"{name}.squeeze.bias"], [f"{name}.s"], name=f"{p}/squeeze/Conv", kernel_shape=[1, 1]),
        helper.make_node("Relu", [f"{name}.s"], [f"{name}.sr"], name=f"{p}/squeeze_activation/Relu"),
        helper.make_node("Conv", [f"{name}.sr", f"{name}.expand1x1.weight", f"{name}.expand1x1.bias"], [f"{name}.e1"], name=f"{p}/expand1x1/Conv", kernel_shape=[1, 1]),
        helper.make_node("Relu", [f"{name}.e1"], [f"{name}.e1r"], name=f"{p}/expand1x1_activation/Relu"),
        helper.make_node("Conv", [f"{name}.sr", f"{name}.expand3x3.weight", f"{name}.expand3x3.bias"], [f"{name}.e3"], name=f"{p}/expand3x3/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [f"{name}.e3"], [f"{name}.e3r"], name=f"{p}/expand3x3_activation/Relu"),
        helper.make_node("Concat", [f"{name}.e1r", f"{name}.e3r"], [out], name=f"{p}/Concat", axis=1),
    ]
    return nodes, inits


def torch_fire_opset17(out_dir):
    """What torch.onnx.export writes for a small SqueezeNet-style model with input normalisation
    `(x - mean) / std` in forward() and `x.view(x.size(0), -1)` before the classifier, exported
    with a dynamic batch axis and without constant folding of the shape computation."""
    inits = [
        numpy_helper.from_array(np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1), "mean"),
        numpy_helper.from_array(np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1), "std"),
        weights("features.0.weight", 8, 3, 3, 3, scale=0.3),
        weights("features.0.bias", 8),
        weights("classifier.weight", 10, 12 * 3 * 3, scale=0.1),
        weights("classifier.bias", 10),
    ]
    fire_nodes, fire_inits = fire("relu0", "fire", "fire2", 8, 4, 6)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"], name="/Sub"),
        helper.make_node("Div", ["centred", "std"], ["normalised"], name="/Div"),
        helper.make_node("Conv", ["normalised", "features.0.weight", "features.0.bias"], ["conv0"], name="/features/features.0/Conv", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["conv0"], ["relu0"], name="/features/features.1/Relu"),
        *fire_nodes,
        helper.make_node("MaxPool", ["fire"], ["pool"], name="/features/features.3/MaxPool", kernel_shape=[3, 3], strides=[2, 2]),
        *view_batch_minus_one("pool", "flat"),
        helper.make_node("Gemm", ["flat", "classifier.weight", "classifier.bias"], ["y"], name="/classifier/Gemm", alpha=1.0, beta=1.0, transB=1),
    ]
    graph = helper.make_graph(nodes, "torch_fire_opset17", [io("x", 3, 16, 16)], [io("y", 10)], inits + fire_inits)
    save(out_dir, "torch_fire_opset17.onnx", graph, 17, 8)


def torch_shape_opset9(out_dir):
    """Older exporter idioms at opset 9: scaling `x * 2` and `1 - x` before a padded Conv, an
    identity Transpose, the batch size taken by Shape + Slice (attributes) + Cast, and two heads
    concatenated on the last axis of [N, F] values."""
    inits = [
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        weights("conv.weight", 4, 3, 3, 3, scale=0.3),
        weights("conv.bias", 4),
        weights("head_a.weight", 5, 4 * 4 * 4, scale=0.1),
        weights("head_a.bias", 5),
        weights("head_b.weight", 3, 4 * 4 * 4, scale=0.1),
        weights("head_b.bias", 3),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["scaled"], name="/Mul"),
        helper.make_node("Sub", ["one", "scaled"], ["flipped"], name="/Sub"),
        helper.make_node("Conv", ["flipped", "conv.weight", "conv.bias"], ["conv"], name="/conv/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["relu"], name="/Relu"),
        helper.make_node("Transpose", ["relu"], ["same"], name="/Transpose", perm=[0, 1, 2, 3]),
        helper.make_node("Shape", ["same"], ["shape"], name="/Shape"),
        helper.make_node("Slice", ["shape"], ["n"], name="/Slice", starts=[0], ends=[1], axes=[0]),
        helper.make_node("Cast", ["n"], ["n64"], name="/Cast", to=TensorProto.INT64),
        helper.make_node("Constant", [], ["m1"], name="/Constant", value=helper.make_tensor("m1", TensorProto.INT64, [1], [-1])),
        helper.make_node("Concat", ["n64", "m1"], ["spec"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["same", "spec"], ["flat"], name="/Reshape"),
        helper.make_node("Gemm", ["flat", "head_a.weight", "head_a.bias"], ["a"], name="/head_a/Gemm", transB=1),
        helper.make_node("Gemm", ["flat", "head_b.weight", "head_b.bias"], ["b"], name="/head_b/Gemm", transB=1),
        helper.make_node("Concat", ["a", "b"], ["logits"], name="/Concat_1", axis=-1),
        helper.make_node("Softmax", ["logits"], ["y"], name="/Softmax", axis=1),
    ]
    graph = helper.make_graph(nodes, "torch_shape_opset9", [io("x", 3, 8, 8)], [io("y", 8)], inits)
    save(out_dir, "torch_shape_opset9.onnx", graph, 9, 4)


def cnn_opset7(out_dir):
    """Opset-7 attribute forms: BatchNormalization with `spatial = 1` and its optional
    statistics outputs unused, Dropout with `ratio`, Flatten and Gemm."""
    inits = [
        weights("conv.weight", 4, 2, 3, 3, scale=0.3),
        weights("conv.bias", 4),
        numpy_helper.from_array(RNG.uniform(0.5, 1.5, 4).astype(np.float32), "bn.scale"),
        weights("bn.bias", 4, scale=0.1),
        weights("bn.mean", 4, scale=0.1),
        numpy_helper.from_array(RNG.uniform(0.5, 1.5, 4).astype(np.float32), "bn.var"),
        weights("fc.weight", 6, 4 * 3 * 3, scale=0.2),
        weights("fc.bias", 6),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["conv"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"], name="bn", spatial=1, epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["relu"], name="relu"),
        helper.make_node("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Dropout", ["pool"], ["dropped"], name="dropout", ratio=0.5),
        helper.make_node("Flatten", ["dropped"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "cnn_opset7", [io("x", 2, 6, 6)], [io("y", 6)], inits)
    save(out_dir, "cnn_opset7.onnx", graph, 7, 4)


def relu6_opset8(out_dir):
    """Opset-8 attribute forms: Pad with `pads` and `mode`, Clip with `min`/`max` attributes
    (ReLU6), MaxPool with `storage_order`, Reshape by an initializer, Softmax over axis 1."""
    inits = [
        weights("conv.weight", 3, 1, 3, 3, scale=2.0),
        weights("conv.bias", 3),
        ints("shape", [0, -1]),
        weights("fc.weight", 27, 4, scale=0.3),
    ]
    nodes = [
        helper.make_node("Pad", ["x"], ["padded"], name="pad", mode="constant", pads=[0, 0, 1, 1, 0, 0, 1, 1]),
        helper.make_node("Conv", ["padded", "conv.weight", "conv.bias"], ["conv"], name="conv", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Clip", ["conv"], ["relu6"], name="relu6", min=0.0, max=6.0),
        helper.make_node("MaxPool", ["relu6"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[1, 1], storage_order=0),
        helper.make_node("Reshape", ["pool", "shape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "fc.weight"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(nodes, "relu6_opset8", [io("x", 1, 8, 8)], [io("y", 4)], inits)
    save(out_dir, "relu6_opset8.onnx", graph, 8, 4)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for build in (
        cnn_opset9,
        bn_matmul_opset17,
        gemm_opset13,
        conv_opset21,
        torch_fire_opset17,
        torch_shape_opset9,
        cnn_opset7,
        relu6_opset8,
    ):
        build(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
